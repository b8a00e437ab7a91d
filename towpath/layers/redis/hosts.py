"""Redis hosts: the ``hosts`` forms channels_redis accepts, connection pools, and sharding.

Each ``hosts`` entry is one shard:

* a URI: ``"redis://[:password@]host:port/db"``, ``"rediss://..."`` (TLS), ``"unix:///path"``;
* a ``(host, port)`` tuple or list;
* a dict of redis-py connection keyword arguments, optionally with ``"address": URI``;
* a Sentinel dict: ``{"sentinels": [(host, port), ...], "master_name": "mymaster",
  "sentinel_kwargs": {...}, **connection_kwargs}``.

A dict's keys and a URI's query options must be arguments redis-py's connections take (read
from their signatures): a misspelt one is refused when the layer is built, naming it, instead
of failing every connection later.

Shards are chosen with jump consistent hashing (Lamping and Veach, 2014) over a 64-bit BLAKE2b
digest of the name, so every process agrees where a name lives and adding a shard moves only
about 1/n of the names.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from towpath.layers.base import InvalidChannelLayerError

__all__ = [
    "DEFAULT_HOST",
    "HostConfig",
    "connection_options",
    "create_pool",
    "decode_hosts",
    "shard_for",
]

DEFAULT_HOST = "redis://localhost:6379"

HostConfig = dict[str, Any]


def decode_hosts(
    hosts: object,
    *,
    sentinels: Sequence[Any] | None = None,
    service_name: str | None = None,
    sentinel_kwargs: Mapping[str, Any] | None = None,
    connection_kwargs: Mapping[str, Any] | None = None,
) -> list[HostConfig]:
    """Normalise ``hosts`` (and the fast-channels Sentinel keywords) to one dict per shard."""
    if sentinels is not None or service_name is not None:
        if hosts:
            raise InvalidChannelLayerError(
                "hosts and sentinels/service_name were both given; use one of them"
            )
        if not sentinels or not service_name:
            raise InvalidChannelLayerError(
                "Sentinel needs both sentinels=[(host, port), ...] and service_name='mymaster'"
            )
        _check_options(dict(connection_kwargs or {}), 0)
        return [
            {
                "sentinels": [_address(s) for s in sentinels],
                "master_name": service_name,
                "sentinel_kwargs": dict(sentinel_kwargs or {}),
                **dict(connection_kwargs or {}),
            }
        ]
    if connection_kwargs is not None or sentinel_kwargs is not None:
        raise InvalidChannelLayerError(
            "sentinel_kwargs/connection_kwargs only apply with sentinels= and service_name="
        )
    if not hosts:
        return [{"address": DEFAULT_HOST}]
    if isinstance(hosts, str | bytes):
        hosts = [hosts]
    if not isinstance(hosts, Sequence):
        raise InvalidChannelLayerError(
            f"hosts must be a list of Redis URIs, (host, port) pairs or dicts, not {hosts!r:.60}"
        )
    decoded: list[HostConfig] = []
    for entry in hosts:
        if isinstance(entry, bytes):
            entry = entry.decode()
        if isinstance(entry, str):
            _check_options({"address": entry}, len(decoded))
            decoded.append({"address": entry})
        elif isinstance(entry, tuple | list) and len(entry) == 2:
            decoded.append({"host": entry[0], "port": _port(entry[1])})
        elif isinstance(entry, Mapping):
            config = dict(entry)
            _check_options(config, len(decoded))
            if "sentinels" in config:
                if not config.get("master_name"):
                    raise InvalidChannelLayerError(
                        f"Sentinel hosts entry {entry!r:.80} needs a 'master_name'"
                    )
                config["sentinels"] = [_address(s) for s in config["sentinels"]]
            decoded.append(config)
        else:
            raise InvalidChannelLayerError(
                f"hosts entry {entry!r:.60} is not a Redis URI, a (host, port) pair or a dict"
            )
    return decoded


#: keys of a hosts dict that are not connection arguments
_HOST_KEYS = frozenset({"address", "sentinels", "master_name", "sentinel_kwargs"})


@functools.cache
def connection_options() -> frozenset[str]:
    """Every argument redis-py's asyncio connections and pools take (TCP, TLS, unix socket),
    read from their signatures so that it follows the installed redis-py."""
    names: set[str] = set()
    for cls in (AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection):
        names.update(_keywords(cls))
    names.update(_keywords(ConnectionPool))
    return frozenset(names)


def _keywords(cls: type) -> set[str]:
    parameters = inspect.signature(cls).parameters.values()
    return {
        p.name
        for p in parameters
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _check_options(config: Mapping[str, Any], index: int) -> None:
    """Refuse a hosts entry's key or URI query option redis-py's connections do not take.
    An entry with its own ``connection_class`` is left alone: that class decides."""
    if "connection_class" in config:
        return
    known = connection_options()
    address = config.get("address")
    query = urlsplit(address).query if isinstance(address, str) else ""
    for key, where in [
        *((key, "key") for key in config),
        *((key, "URI option") for key, _ in parse_qsl(query, keep_blank_values=True)),
    ]:
        if key in known or (where == "key" and key in _HOST_KEYS):
            continue
        close = difflib.get_close_matches(key, sorted(known | _HOST_KEYS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidChannelLayerError(
            f"hosts[{index}]: unknown {where} {key!r}{hint}. A hosts entry takes 'address' "
            "(a redis://, rediss:// or unix:// URI), Sentinel keys ('sentinels', "
            "'master_name', 'sentinel_kwargs') and redis-py connection arguments (host, port, "
            "db, username, password, ssl_*, socket_*, ...)"
        )


def _port(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise InvalidChannelLayerError(f"port {value!r} in hosts is not a number") from None


def _address(value: object) -> tuple[str, int]:
    if isinstance(value, tuple | list) and len(value) == 2:
        return str(value[0]), _port(value[1])
    if isinstance(value, str) and ":" in value:
        host, _, port = value.rpartition(":")
        return host, _port(port)
    raise InvalidChannelLayerError(f"Sentinel address {value!r} must be (host, port)")


def create_pool(host: HostConfig, **overrides: Any) -> ConnectionPool:
    """A redis-py asyncio connection pool for one shard; ``overrides`` win over ``host``."""
    config = dict(host)
    config.update(overrides)
    address = config.pop("address", None)
    if address is not None:
        return ConnectionPool.from_url(address, **config)
    master_name = config.pop("master_name", None)
    if master_name is not None:
        sentinels = config.pop("sentinels")
        sentinel_kwargs = config.pop("sentinel_kwargs", None) or {}
        sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
        return SentinelConnectionPool(master_name, sentinel, **config)  # type: ignore[no-untyped-call]
    return ConnectionPool(**config)


def describe(host: HostConfig) -> str:
    """A short, password-free description of a shard for logs and errors."""
    if "address" in host:
        address = str(host["address"])
        scheme, sep, rest = address.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else address
    if "master_name" in host:
        return f"sentinel:{host['master_name']}"
    return f"{host.get('host', 'localhost')}:{host.get('port', 6379)}"


@functools.lru_cache(maxsize=65536)
def shard_for(name: str, shards: int) -> int:
    """The shard index of ``name``: jump consistent hash of a 64-bit BLAKE2b digest."""
    if shards == 1:
        return 0
    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")
    bucket, jump = -1, 0
    while jump < shards:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        jump = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket
