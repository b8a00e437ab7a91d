"""How messages become bytes: msgpack (the default) or JSON, optionally Fernet-encrypted.

Never pickle: interface servers and workers may run different Python versions and must not
execute what they read. msgpack keeps ``bytes`` and ``str`` apart (``use_bin_type``), so an ASGI
body stays bytes and a header name stays bytes on the far side.

With ``symmetric_encryption_keys`` every message is encrypted with the first key and decrypted
with whichever key fits, so keys rotate without downtime: add the new key first, deploy, then
drop the old one. Keys are arbitrary strings; each is stretched to a Fernet key with SHA-256, as
channels_redis does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import msgpack

from towpath.layers.base import InvalidChannelLayerError, Message

__all__ = [
    "EncryptedSerializer",
    "JSONSerializer",
    "MsgPackSerializer",
    "Serializer",
    "SerializerDoesNotExist",
    "SerializersRegistry",
    "build_serializer",
    "registry",
]


class Serializer(Protocol):
    """Turns a message dict into bytes and back."""

    def serialize(self, message: Message) -> bytes: ...

    def deserialize(self, data: bytes) -> Message: ...


_unpackb = msgpack.unpackb


def _checked(message: object) -> Message:
    if not isinstance(message, dict):
        raise ValueError(f"decoded message is a {type(message).__name__}, not a dict")
    return message


class MsgPackSerializer:
    """msgpack with str and bytes kept apart; tuples arrive as lists, as JSON would have it."""

    format = "msgpack"

    def __init__(self) -> None:
        # A Packer is reusable but not thread-safe; sync code may call a layer from threads.
        self._local = threading.local()

    def serialize(self, message: Message) -> bytes:
        try:
            packer = self._local.packer
        except AttributeError:
            packer = self._local.packer = msgpack.Packer(use_bin_type=True)
        try:
            data: bytes = packer.pack(message)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(
                f"Message cannot be serialised with msgpack ({exc}): {message!r:.200}"
            ) from exc
        return data

    def deserialize(self, data: bytes) -> Message:
        message = _unpackb(data, raw=False, strict_map_key=False)
        if message.__class__ is dict:
            return message
        return _checked(message)


class JSONSerializer:
    """JSON, for interoperating with tools that read the layer's keys. No bytes values."""

    format = "json"

    def serialize(self, message: Message) -> bytes:
        try:
            return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"Message cannot be serialised as JSON ({exc}): {message!r:.200}"
            ) from exc

    def deserialize(self, data: bytes) -> Message:
        return _checked(json.loads(data))


class EncryptedSerializer:
    """Wraps another serializer with Fernet: the first key encrypts, every key decrypts."""

    def __init__(self, inner: Serializer, keys: Sequence[str | bytes]) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError as exc:
            raise InvalidChannelLayerError(
                "symmetric_encryption_keys needs the cryptography package: "
                "pip install 'towpath[crypto]'"
            ) from exc
        if isinstance(keys, str | bytes) or not keys:
            raise InvalidChannelLayerError(
                "symmetric_encryption_keys must be a non-empty list of keys, "
                f"not {keys!r:.40}; the first encrypts, all decrypt"
            )
        fernets = []
        for key in keys:
            raw = key.encode() if isinstance(key, str) else key
            fernets.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest())))
        self.inner = inner
        self._fernet = MultiFernet(fernets)

    def serialize(self, message: Message) -> bytes:
        return self._fernet.encrypt(self.inner.serialize(message))

    def deserialize(self, data: bytes) -> Message:
        return self.inner.deserialize(self._fernet.decrypt(data))


class SerializerDoesNotExist(InvalidChannelLayerError):
    """``serializer_format`` names no registered serializer."""


class SerializersRegistry:
    """The serializer formats a layer's ``serializer_format`` may name: ``"msgpack"`` and
    ``"json"``, and what :meth:`register_serializer` adds (channels_redis's registry API).

    A serializer class is made with no arguments; its ``serialize(message) -> bytes`` and
    ``deserialize(bytes) -> message`` see only the message: encryption
    (``symmetric_encryption_keys``) is applied around it by the layer."""

    def __init__(self) -> None:
        self._registry: dict[str, Callable[[], Serializer]] = {}

    def register_serializer(self, format: str, serializer_class: Callable[[], Serializer]) -> None:
        """Make ``serializer_format=format`` use ``serializer_class``. A class without both
        ``serialize`` and ``deserialize`` is refused (``TypeError`` naming it)."""
        if not isinstance(format, str) or not format:
            raise TypeError(f"a serializer format is a non-empty str, not {format!r}")
        missing = [
            name
            for name in ("serialize", "deserialize")
            if not callable(getattr(serializer_class, name, None))
        ]
        if missing or not callable(serializer_class):
            raise TypeError(
                f"serializer {serializer_class!r} for format {format!r} must be a class with "
                f"serialize(message) and deserialize(data) methods; it lacks {', '.join(missing)}"
            )
        self._registry[format] = serializer_class

    def get_serializer(self, format: str) -> Serializer:
        """A new serializer of ``format``; :class:`SerializerDoesNotExist` naming the formats
        there are when none is registered."""
        try:
            factory = self._registry[format]
        except (KeyError, TypeError):
            raise SerializerDoesNotExist(
                f"serializer_format {format!r} is unknown; registered: "
                + ", ".join(sorted(self._registry))
                + " (add one with towpath.layers.serializers.registry.register_serializer)"
            ) from None
        return factory()

    @property
    def formats(self) -> list[str]:
        return sorted(self._registry)


#: The registry layers build their serializer from (``serializer_format``).
registry = SerializersRegistry()
registry.register_serializer("msgpack", MsgPackSerializer)
registry.register_serializer("json", JSONSerializer)


def build_serializer(
    serializer_format: str = "msgpack",
    symmetric_encryption_keys: Sequence[str | bytes] | None = None,
) -> Serializer:
    """The serializer a layer's ``serializer_format`` (from :data:`registry`) and
    ``symmetric_encryption_keys`` name."""
    serializer = registry.get_serializer(serializer_format)
    if symmetric_encryption_keys:
        return EncryptedSerializer(serializer, symmetric_encryption_keys)
    return serializer
