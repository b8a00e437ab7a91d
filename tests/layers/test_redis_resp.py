"""The RESP encoder used for every command agrees with redis-py's (and hiredis's, when used)."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest
from redis.asyncio.connection import Connection

from towpath.layers.redis.connection import _pack_command, pack_command

COMMANDS: list[tuple[Any, ...]] = [
    ("PING",),
    ("EVALSHA", "a" * 40, 2, "asgi:x!", "asgi:x!:full", b"0001\x00\xff", 100, 60000, ""),
    ("ZADD", "asgi:group:g", 1732288000.123456, "specific.ab!cd"),
    ("SET", "é", -5),
    ("RPUSH", "k", b""),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_encoders_agree_with_redis_py(command: tuple[Any, ...]) -> None:
    reference = b"".join(Connection().pack_command(*command))
    assert _pack_command(command) == reference
    assert pack_command(command) == reference
    assert hiredis.pack_command(command) == reference


def test_unsupported_argument_is_named() -> None:
    with pytest.raises(TypeError, match="NoneType"):
        _pack_command(("SET", "k", None))
