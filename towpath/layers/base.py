"""The channel layer contract, the rules for names, and the layer exceptions.

A channel layer carries messages (dicts of msgpack-serialisable values) between processes on
named channels. The contract is the one Django Channels 2+ defines, so a towpath layer plugs in
as a Channels or fast-channels backend, plus two calls a worker needs: ``receive_many`` (one wait
on several channels, fair between them) and ``send_many`` (bulk send).

Exception tree::

    ChannelLayerError                 every error a layer raises on its own account
     +-- ChannelFull                  send() to a channel already holding ``capacity`` messages
     +-- MessageTooLarge              a message over a layer's size limit (IPC); also ValueError
     +-- LayerConnectionError         the server behind a networked layer could not be reached
     +-- InvalidChannelLayerError     a misconfiguration; also ValueError. Names the setting.
          +-- ChannelLayerNotRegistered   get_channel_layer() for an unknown alias; also LookupError
          +-- LayerOptionError        a bad standard option (``LayerOptions``); also
                                      ``towpath.errors.ConfigError``, whose ``field`` names it

    TypeError                         a bad channel or group name, or a message that is not a
                                      dict (never ``assert``: asserts vanish under ``python -O``)

``ChannelFull`` also subclasses ``channels.exceptions.ChannelFull`` and
``fast_channels.exceptions.ChannelFull`` when Django Channels or fast-channels is installed, so
code that catches either library's exception catches ours.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import fnmatch
import json
import logging
import os
import re
import secrets
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from towpath.errors import ConfigError

__all__ = [
    "INBOX_CAPACITY_FACTOR",
    "LAYER_SPECIFIC_COUNTERS",
    "MAX_NAME_LENGTH",
    "BaseChannelLayer",
    "Capacities",
    "ChannelCapacity",
    "ChannelFull",
    "ChannelLayerError",
    "ChannelLayerNotRegistered",
    "InvalidChannelLayerError",
    "LayerConnectionError",
    "LayerOptionError",
    "LayerOptions",
    "LayerStats",
    "Message",
    "MessageTooLarge",
    "is_process_specific",
    "log_group_full",
    "non_local_name",
    "require_valid_channel_name",
    "require_valid_group_name",
    "stats_report",
    "validate_message",
]

Message: TypeAlias = dict[str, Any]
ChannelCapacity: TypeAlias = Mapping["str | re.Pattern[str]", int]
Capacities: TypeAlias = list[tuple["re.Pattern[str]", int]]

#: Channel and group names must be shorter than this (as in Channels).
MAX_NAME_LENGTH = 100
#: a process's inbox (the one queue all its ``!`` channels share) holds at most this many times
#: ``capacity`` unread by default: a guard against a process that stopped reading for good,
#: far above what its live channels fill (each ``!`` channel is bounded by its own capacity),
#: so one slow client or one stalled second never fills it for the others (issue 18)
INBOX_CAPACITY_FACTOR = 10_000

_CHANNEL_NAME = re.compile(r"^[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?$")
_GROUP_NAME = re.compile(r"^[a-zA-Z\d\-_.]+$")


if TYPE_CHECKING:

    class _ChannelsFull(Exception): ...

    class _FastChannelsFull(Exception): ...

else:
    # Channels code catches channels.exceptions.ChannelFull, fast-channels code its own
    # fast_channels.exceptions.ChannelFull: make ours one of each that is installed.
    try:
        from channels.exceptions import ChannelFull as _ChannelsFull
    except ImportError:  # pragma: no cover - depends on what is installed

        class _ChannelsFull(Exception):
            pass

    try:
        from fast_channels.exceptions import ChannelFull as _FastChannelsFull
    except ImportError:  # pragma: no cover - depends on what is installed

        class _FastChannelsFull(Exception):
            pass


class ChannelLayerError(Exception):
    """Base class of every error a channel layer raises on its own account."""


class ChannelFull(ChannelLayerError, _ChannelsFull, _FastChannelsFull):
    """The channel already holds its capacity of messages; the message was not sent."""


class MessageTooLarge(ChannelLayerError, ValueError):
    """The serialised message is larger than the layer accepts; nothing was sent."""


class LayerConnectionError(ChannelLayerError, ConnectionError):
    """The server behind a networked layer could not be reached (after retrying)."""


class InvalidChannelLayerError(ChannelLayerError, ValueError):
    """A channel layer is misconfigured. The message names the setting and the fix."""


class LayerOptionError(InvalidChannelLayerError, ConfigError):
    """A standard layer option (``LayerOptions``) is invalid; ``field`` names it."""


class ChannelLayerNotRegistered(InvalidChannelLayerError, LookupError):
    """No channel layer is registered under the alias asked for."""


# Names already checked: most traffic reuses a handful, and a set lookup is 25x cheaper than
# the regular expression. Bounded, so a stream of unique names cannot grow it without limit.
_CHECKED_CHANNELS: set[str] = set()
_CHECKED_LIMIT = 65536


def require_valid_channel_name(name: object, *, receive: bool = False) -> str:
    """Return ``name`` if it is a valid channel name, else raise ``TypeError`` naming it.

    Valid: ``^[a-zA-Z\\d\\-_.]+(![\\d\\w\\-_.]*)?$`` and shorter than 100 characters. With
    ``receive=True`` a process-specific name must be the whole ``prefix!`` reader name or a full
    ``prefix!suffix`` name; both are allowed, as in Channels.
    """
    if name.__class__ is str and name in _CHECKED_CHANNELS:
        return name
    if not isinstance(name, str):
        raise TypeError(f"Channel name must be a str, not {type(name).__name__}: {name!r}")
    if len(name) >= MAX_NAME_LENGTH or not _CHANNEL_NAME.match(name):
        raise TypeError(
            f"Channel name {name!r} is invalid: it must be shorter than {MAX_NAME_LENGTH} "
            "characters and contain only ASCII letters, digits, '-', '_' and '.', "
            "optionally followed by one '!' and a process-specific suffix"
        )
    if len(_CHECKED_CHANNELS) >= _CHECKED_LIMIT:
        _CHECKED_CHANNELS.clear()
    _CHECKED_CHANNELS.add(name)
    return name


def require_valid_group_name(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise ``TypeError`` naming it."""
    if not isinstance(name, str):
        raise TypeError(f"Group name must be a str, not {type(name).__name__}: {name!r}")
    if len(name) >= MAX_NAME_LENGTH or not _GROUP_NAME.match(name):
        raise TypeError(
            f"Group name {name!r} is invalid: it must be shorter than {MAX_NAME_LENGTH} "
            "characters and contain only ASCII letters, digits, '-', '_' and '.'"
        )
    return name


def validate_message(message: object) -> Message:
    """Return ``message`` if it is a dict, else raise ``TypeError`` naming what it is."""
    if not isinstance(message, dict):
        raise TypeError(f"Message must be a dict, not {type(message).__name__}: {message!r:.200}")
    return message


def is_process_specific(channel: str) -> bool:
    """True for a ``prefix!suffix`` channel, which only the process that made it reads."""
    return "!" in channel


def non_local_name(channel: str) -> str:
    """The part of a channel name every process agrees on: up to and including the ``!``."""
    bang = channel.find("!")
    return channel if bang < 0 else channel[: bang + 1]


def compile_capacities(channel_capacity: ChannelCapacity | None) -> Capacities:
    """Turn ``{glob or compiled regex: capacity}`` into an ordered list of (regex, capacity)."""
    compiled: Capacities = []
    for pattern, value in (channel_capacity or {}).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LayerOptionError(
                f"channel_capacity[{pattern!r}] must be a positive int, not {value!r}",
                field="channel_capacity",
            )
        if isinstance(pattern, re.Pattern):
            compiled.append((pattern, value))
        elif isinstance(pattern, str):
            compiled.append((re.compile(fnmatch.translate(pattern)), value))
        else:
            raise LayerOptionError(
                f"channel_capacity keys must be glob strings or compiled regexes, not {pattern!r}",
                field="channel_capacity",
            )
    return compiled


#: the counters only some layers keep (each layer names its own in ``LayerStats.kept``): the
#: IPC layer's ``dead``; RabbitMQ's ``unroutable``, ``publish_failed``, ``given_back``,
#: ``reconnects``
LAYER_SPECIFIC_COUNTERS = ("dead", "unroutable", "publish_failed", "given_back", "reconnects")


@dataclasses.dataclass(slots=True)
class LayerStats:
    """Counts of what a layer dropped, so "at most once" can be measured, not guessed.

    One type for every layer: a counter a layer does not keep stays 0, and :meth:`as_dict`
    (what the ``stats`` log line shows) leaves it out."""

    #: send() calls refused with ChannelFull.
    full: int = 0
    #: group_send() deliveries skipped because the member channel was full: still full when
    #: ``group_send_timeout`` ran out, or given up on by an earlier group_send and still full.
    group_full: int = 0
    #: group_send() members found full and waited for (each once per group_send), whether they
    #: then took the message, left the group or were given up.
    group_send_delayed: int = 0
    #: messages dropped because they outlived ``expiry`` before anyone received them.
    expired: int = 0
    #: entries dropped because they could not be read: their framing was wrong, or the
    #: serializer or the decryption refused them (see ``towpath/layers/_readers.py``).
    undecodable: int = 0
    #: reader tasks started again after they died of an unexpected exception.
    reader_restarts: int = 0
    #: (IPC) messages dropped because the process reading their ``!`` channel is gone
    dead: int = 0
    #: (RabbitMQ) sends to a ``!`` channel whose process inbox did not exist (that process is
    #: gone, or was reconnecting): dropped, as at-most-once allows
    unroutable: int = 0
    #: (RabbitMQ) sends and group sends that raised ``LayerConnectionError``: the broker was
    #: unreachable for ``retry_timeout``, or the connection broke before it confirmed
    publish_failed: int = 0
    #: (RabbitMQ) normal-channel messages fetched here and handed back unreceived (idle,
    #: stop_receiving, close, a lost connection): requeued by the broker, not lost
    given_back: int = 0
    #: (RabbitMQ) connections re-established after they were lost
    reconnects: int = 0
    #: which of :data:`LAYER_SPECIFIC_COUNTERS` this layer keeps
    kept: tuple[str, ...] = dataclasses.field(default=(), repr=False, compare=False)

    def as_dict(self) -> dict[str, int]:
        """The counters this layer keeps, by name: the shared ones and its own ``kept``."""
        kept = self.kept
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name != "kept"
            and (field.name not in LAYER_SPECIFIC_COUNTERS or field.name in kept)
        }


def log_group_full(logger: logging.Logger, group: str, full: int, members: int) -> None:
    """The INFO line of a ``group_send`` that skipped ``full`` of its ``members`` channels as
    full, worded as channels_redis words it (log filters and tests written for it match)."""
    logger.info("%s of %s channels over capacity in group %s", full, members, group)


def stats_report(**parts: object) -> str:
    """One JSON line of counters (dataclass instances or dicts), for the ``stats`` log line a
    ``towpath serve``/``runworker`` process writes on SIGUSR1 and when it stops."""
    report = {
        name: (
            part.as_dict()
            if isinstance(part, LayerStats)
            else dataclasses.asdict(part)
            if dataclasses.is_dataclass(part) and not isinstance(part, type)
            else part
        )
        for name, part in parts.items()
        if part is not None
    }
    return json.dumps(report, sort_keys=True, default=str)


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise LayerOptionError(f"{name} must be a positive number, not {value!r}", field=name)
    return float(value)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LayerOptions:
    """The options every towpath layer takes, checked here once: a bad value raises
    :class:`LayerOptionError` (an ``InvalidChannelLayerError``) naming the option. Each layer's
    constructor keeps its own explicit keywords (they are drop-in signatures) and builds one of
    these."""

    #: seconds a message may wait unreceived before it is dropped
    expiry: float = 60
    #: seconds a group membership lives unless renewed by another ``group_add``
    group_expiry: float = 86400
    #: messages a channel holds unreceived before ``send`` raises ``ChannelFull``
    capacity: int = 100
    #: per-channel capacities (glob or compiled regex → int), first match wins
    channel_capacity: ChannelCapacity | None = None
    #: keys for message encryption (the first encrypts; all decrypt); None: plain
    symmetric_encryption_keys: Sequence[str | bytes] | None = None
    #: "msgpack" or "json" (checked by ``serializers.build_serializer``)
    serializer_format: str = "msgpack"
    #: messages a process's inbox may hold unread; None: ``INBOX_CAPACITY_FACTOR * capacity``
    inbox_capacity: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "expiry", _positive("expiry", self.expiry))
        object.__setattr__(self, "group_expiry", _positive("group_expiry", self.group_expiry))
        capacity = self.capacity
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise LayerOptionError(
                f"capacity must be a positive int, not {capacity!r}", field="capacity"
            )
        compile_capacities(self.channel_capacity)  # raises for a bad entry
        inbox = self.inbox_capacity
        if inbox is not None and (
            isinstance(inbox, bool) or not isinstance(inbox, int) or inbox < 1
        ):
            raise LayerOptionError(
                f"inbox_capacity must be a positive int (or None for {INBOX_CAPACITY_FACTOR:,} "
                f"times capacity), not {inbox!r}",
                field="inbox_capacity",
            )

    @classmethod
    def pick(cls, arguments: Mapping[str, Any]) -> LayerOptions:
        """The options among a layer constructor's ``arguments`` (its ``locals()``): each
        layer keeps its explicit, drop-in signature, and the standard options are named here
        once. An option the constructor does not take keeps its default."""
        return cls(
            **{f.name: arguments[f.name] for f in dataclasses.fields(cls) if f.name in arguments}
        )

    @property
    def inbox_limit(self) -> int:
        """``inbox_capacity``, or its default: ``INBOX_CAPACITY_FACTOR * capacity``."""
        inbox = self.inbox_capacity
        return INBOX_CAPACITY_FACTOR * self.capacity if inbox is None else inbox


class BaseChannelLayer(abc.ABC):
    """What every towpath channel layer provides.

    Subclasses implement ``send``, ``_receive``, ``new_channel`` and, for the ``groups``
    and ``flush`` extensions, the group calls and ``flush``. ``receive`` and ``send_many`` have
    working defaults built on those; layers override them when they can do better.

    Delivery is at most once and FIFO per channel. ``expiry`` (seconds) drops messages older
    than that; ``capacity`` (per channel, with ``channel_capacity`` overrides matched in order,
    first match wins) makes ``send`` raise ``ChannelFull``; ``group_expiry`` (seconds) drops
    memberships that were not renewed by another ``group_add``.
    """

    extensions: ClassVar[list[str]] = ["groups", "flush"]
    #: ``send_many`` issues every send at once (networked layers: the sends share round trips;
    #: order per channel still holds) rather than one after another
    concurrent_sends: ClassVar[bool] = False

    def __init__(
        self,
        options: LayerOptions | None = None,
        *,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: ChannelCapacity | None = None,
    ) -> None:
        """``options`` (towpath's layers), or the four contract keywords (a layer of one's
        own: they build the :class:`LayerOptions`, which are then ``self.options``)."""
        if options is None:
            options = LayerOptions(
                expiry=expiry,
                group_expiry=group_expiry,
                capacity=capacity,
                channel_capacity=channel_capacity,
            )
        self.options = options
        self.expiry = options.expiry
        self.group_expiry = options.group_expiry
        self.capacity = options.capacity
        self.channel_capacity = compile_capacities(options.channel_capacity)
        self._capacity_cache: dict[str, int] = {}
        #: Identifies this process (and this layer instance) in process-specific names.
        self.client_prefix = secrets.token_hex(6)
        self.stats = LayerStats()

    # -- capacity ------------------------------------------------------------------------------

    def get_capacity(self, channel: str) -> int:
        """The capacity of ``channel``: the first ``channel_capacity`` match, else ``capacity``."""
        cached = self._capacity_cache.get(channel)
        if cached is not None:
            return cached
        capacity = self.capacity
        for pattern, value in self.channel_capacity:
            if pattern.match(channel):
                capacity = value
                break
        if len(self._capacity_cache) > 10_000:
            self._capacity_cache.clear()
        self._capacity_cache[channel] = capacity
        return capacity

    # -- names ---------------------------------------------------------------------------------

    def _random_channel_name(self, prefix: str) -> str:
        """``prefix.<client-id>!<random>``; never drawn from the ``random`` module's state."""
        return f"{prefix}.{self.client_prefix}!{os.urandom(8).hex()}"

    # -- the contract --------------------------------------------------------------------------

    @abc.abstractmethod
    async def send(self, channel: str, message: Message) -> None:
        """Send ``message`` to ``channel``. Raises ``ChannelFull``, or ``TypeError`` for a bad
        name or a message that is not a dict."""

    async def receive(self, channel: str) -> Message:
        """Wait for and return the next message on ``channel``.

        Cancelling the wait loses no message: a message is only taken off the channel by the
        call that returns it.
        """
        require_valid_channel_name(channel, receive=True)
        if "!" in channel:
            self.require_own_channel(channel)
        return (await self._receive((channel,)))[1]

    async def receive_many(self, channels: Iterable[str]) -> tuple[str, Message]:
        """Wait on several channels at once; return ``(channel, message)`` for the first
        message available. Successive calls rotate between channels that all have messages,
        so none is starved. Cancellation loses nothing, as for ``receive``."""
        names = tuple(channels)
        if not names:
            raise TypeError("receive_many() needs at least one channel name")
        for name in names:
            require_valid_channel_name(name, receive=True)
            if "!" in name:
                self.require_own_channel(name)
        return await self._receive(names)

    def owns_inbox(self, inbox: str) -> bool:
        """Whether the ``!`` channels named ``inbox`` (see :func:`non_local_name`) are ones
        this layer instance's ``new_channel()`` makes: ``prefix.<client-id>!``, or
        ``prefix.<client-id>-<n>!`` for a layer whose event loops each read an inbox of
        their own."""
        at = inbox.rfind("." + self.client_prefix)
        if at < 0 or not inbox.endswith("!"):
            return False
        tag = inbox[at + 1 + len(self.client_prefix) : -1]
        return not tag or (tag[0] == "-" and tag[1:].isdigit())

    def require_own_channel(self, channel: str) -> None:
        """Refuse to receive on a ``!`` channel this layer instance did not make: only the
        instance whose ``new_channel()`` made it is ever sent its messages, so a receive
        anywhere else would wait forever. Raises :class:`ChannelLayerError` naming it."""
        if not self.owns_inbox(non_local_name(channel)):
            raise ChannelLayerError(
                f"cannot receive on {channel!r}: it was not made by this layer instance "
                "(new_channel() of another process?); a '!' channel is received only by the "
                "layer instance whose new_channel() made it"
            )

    async def _receive(self, names: tuple[str, ...]) -> tuple[str, Message]:
        """``receive_many`` for names already checked: what a layer implements (or it
        overrides ``receive`` and ``receive_many`` themselves)."""
        raise NotImplementedError(f"{type(self).__name__} implements no receive")

    async def send_many(self, messages: Iterable[tuple[str, Message]]) -> list[str]:
        """Send each ``(channel, message)`` pair, in order per channel (all at once when
        ``concurrent_sends``). A full channel does not stop the others: the names of the
        channels whose message was dropped as full are returned."""
        full: list[str] = []
        if not self.concurrent_sends:
            for channel, message in messages:
                try:
                    await self.send(channel, message)
                except ChannelFull:
                    full.append(channel)
            return full
        pairs = list(messages)
        results = await asyncio.gather(
            *(self.send(channel, message) for channel, message in pairs), return_exceptions=True
        )
        for (channel, _), result in zip(pairs, results, strict=True):
            if isinstance(result, ChannelFull):
                full.append(channel)
            elif isinstance(result, BaseException):
                raise result
        return full

    @abc.abstractmethod
    async def new_channel(self, prefix: str = "specific") -> str:
        """Return a new process-specific channel name, ``prefix.<client-id>!<random>``, that
        only this process reads."""

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (or renew its membership)."""
        raise NotImplementedError(f"{type(self).__name__} does not support groups")

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; a channel that is not a member is ignored."""
        raise NotImplementedError(f"{type(self).__name__} does not support groups")

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every current member of ``group``. A full member is waited for
        (up to the layer's ``group_send_timeout``, where it has one) and then skipped, counted
        and logged, never raised."""
        raise NotImplementedError(f"{type(self).__name__} does not support groups")

    async def flush(self) -> None:
        """Drop every message and membership this layer holds (under its prefix)."""
        raise NotImplementedError(f"{type(self).__name__} does not support flush")

    async def close(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release connections and background tasks. The layer is unusable afterwards."""

    async def close_pools(self) -> None:  # noqa: B027 - no-op for layers without connections
        """channels_redis's name, for code written for it: release what this layer holds for
        the running event loop (connections, readers; fetched-but-unreceived messages go back
        to the server). Unlike ``close()`` on some layers, the layer stays usable: the next
        call, from this or any other event loop, opens what it needs again. A no-op for layers
        that hold nothing per event loop."""

    async def stop_receiving(self, channels: Iterable[str]) -> None:  # noqa: B027 - no-op
        """This process will not receive the normal ``channels`` again (a stopping worker):
        what it fetched ahead for them and nobody received goes back to the layer, first in
        line, for other processes. A no-op for layers that never fetch ahead."""

    # -- reachability --------------------------------------------------------------------------

    @property
    def unreachable_since(self) -> float | None:
        """When (``time.monotonic()``) this layer found a server it uses unreachable, while
        one still is (with several servers: the earliest such outage); ``None`` while it
        reaches them all, and always for a layer without a server (in-memory, IPC).

        A process that cannot reach its layer cannot tell whether another process is gone:
        ``towpath serve`` and ``towpath runworker`` judge nobody by missing heartbeats while
        this is set (``towpath.layers.outages``, ``docs/affinity.md``)."""
        return None

    @property
    def outages(self) -> int:
        """How many outages this layer has seen begin (``unreachable_since`` going from
        ``None`` to a time): one that began and ended between two looks at
        ``unreachable_since`` shows here. 0 for a layer without a server."""
        return 0

    # -- what Channels' and fast-channels' BaseChannelLayer give their subclasses ---------------
    # Kept for drop-in use (a subclass, a helper or a test written against those bases); the
    # layers themselves use the module functions above. docs/migrating.md lists each one.

    MAX_NAME_LENGTH: ClassVar[int] = MAX_NAME_LENGTH
    channel_name_regex: ClassVar[re.Pattern[str]] = _CHANNEL_NAME
    group_name_regex: ClassVar[re.Pattern[str]] = _GROUP_NAME
    invalid_name_error: ClassVar[str] = (
        "{} name must be a valid unicode string with length < "
        + str(MAX_NAME_LENGTH)
        + " containing only ASCII alphanumerics, hyphens, underscores, or periods."
    )

    def compile_capacities(self, channel_capacity: ChannelCapacity) -> Capacities:
        """``{glob or compiled regex: capacity}`` as the ordered ``(regex, capacity)`` list
        ``channel_capacity`` holds; refuses a non-positive capacity or a key of another type."""
        return compile_capacities(channel_capacity)

    def match_type_and_length(self, name: object) -> bool:
        """True for a str shorter than ``MAX_NAME_LENGTH``."""
        return isinstance(name, str) and len(name) < MAX_NAME_LENGTH

    def require_valid_channel_name(self, name: object, receive: bool = False) -> bool:
        """True, or ``TypeError`` naming ``name``. With ``receive=True`` a full ``prefix!suffix``
        name is allowed too (Channels allows only ``prefix!`` there): towpath's ``receive``
        takes both."""
        require_valid_channel_name(name, receive=receive)
        return True

    def require_valid_group_name(self, name: object) -> bool:
        """True, or ``TypeError`` naming ``name``."""
        require_valid_group_name(name)
        return True

    def valid_channel_names(self, names: Iterable[object], receive: bool = False) -> bool:
        """True when ``names`` is a non-empty collection of valid channel names; else
        ``TypeError`` (Channels asserts, which ``python -O`` skips)."""
        if isinstance(names, str) or not isinstance(names, Iterable):
            raise TypeError(f"names must be a non-empty list of channel names, not {names!r:.60}")
        checked = 0
        for name in names:
            require_valid_channel_name(name, receive=receive)
            checked += 1
        if not checked:
            raise TypeError("names must be a non-empty list of channel names, not an empty one")
        return True

    def valid_channel_name(self, channel_name: object, receive: bool = False) -> bool:
        """Deprecated in Channels 4.2 (and warned about here the same way): use
        ``require_valid_channel_name``."""
        warnings.warn(
            "valid_channel_name is deprecated, use require_valid_channel_name instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_channel_name(channel_name, receive=receive)

    def valid_group_name(self, group_name: object) -> bool:
        """Deprecated in Channels 4.2 (and warned about here the same way): use
        ``require_valid_group_name``."""
        warnings.warn(
            "valid_group_name is deprecated, use require_valid_group_name instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_group_name(group_name)

    def non_local_name(self, name: str) -> str:
        """The part of ``name`` every process agrees on: up to and including the ``!``."""
        return non_local_name(name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} expiry={self.expiry:g}s capacity={self.capacity}>"
