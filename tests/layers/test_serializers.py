"""Serializers: msgpack and JSON, encryption and key rotation, never pickle."""

from __future__ import annotations

import pickle

import pytest
from cryptography.fernet import InvalidToken

from towpath.layers.base import InvalidChannelLayerError
from towpath.layers.serializers import (
    EncryptedSerializer,
    JSONSerializer,
    MsgPackSerializer,
    build_serializer,
)

MESSAGE = {"type": "http.request", "body": b"\x00\xff", "path": "/é", "n": 1, "f": 0.5}


def test_msgpack_keeps_bytes_and_str_apart() -> None:
    serializer = MsgPackSerializer()
    decoded = serializer.deserialize(serializer.serialize(MESSAGE))
    assert decoded == MESSAGE
    assert isinstance(decoded["body"], bytes) and isinstance(decoded["path"], str)


def test_msgpack_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(TypeError, match="msgpack"):
        MsgPackSerializer().serialize({"type": "x", "obj": object()})


def test_pickled_data_is_not_executed() -> None:
    with pytest.raises(ValueError, match="extra data|not a dict"):  # never an unpickle
        MsgPackSerializer().deserialize(pickle.dumps({"type": "x"}))


def test_a_non_dict_payload_is_refused() -> None:
    serializer = MsgPackSerializer()
    with pytest.raises(ValueError, match="not a dict"):
        serializer.deserialize(b"\x93\x01\x02\x03")


def test_json_round_trip_and_bytes_refused() -> None:
    serializer = JSONSerializer()
    assert serializer.deserialize(serializer.serialize({"type": "x", "n": [1]})) == {
        "type": "x",
        "n": [1],
    }
    with pytest.raises(TypeError, match="JSON"):
        serializer.serialize({"type": "x", "body": b"raw"})


def test_encryption_hides_the_content() -> None:
    serializer = build_serializer(symmetric_encryption_keys=["k1"])
    data = serializer.serialize(MESSAGE)
    assert b"http.request" not in data
    assert serializer.deserialize(data) == MESSAGE


def test_rotation_first_key_encrypts_all_decrypt() -> None:
    old = build_serializer(symmetric_encryption_keys=["old"])
    rotated = build_serializer(symmetric_encryption_keys=["new", "old"])
    new_only = build_serializer(symmetric_encryption_keys=["new"])
    assert rotated.deserialize(old.serialize(MESSAGE)) == MESSAGE
    assert new_only.deserialize(rotated.serialize(MESSAGE)) == MESSAGE
    with pytest.raises(InvalidToken):
        old.deserialize(new_only.serialize(MESSAGE))


@pytest.mark.parametrize("keys", ["a-bare-string", b"bytes"])
def test_keys_must_be_a_list(keys: str | bytes) -> None:
    with pytest.raises(InvalidChannelLayerError, match="list of keys"):
        EncryptedSerializer(MsgPackSerializer(), keys)


def test_unknown_format_names_the_choices() -> None:
    with pytest.raises(InvalidChannelLayerError, match="json, msgpack"):
        build_serializer("pickle")
