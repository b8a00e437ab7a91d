"""pytest plugin for the run of channels_redis's own suite against towpath (``-p`` loads it).

tests/peers/channels_redis_suite.py starts the run with this plugin and a JSON file named by
``$TOWPATH_PEER_CONFIG``:

* ``redis_url``: the throwaway redis-server every ``redis://localhost:6379`` of the suite goes to,
  also the default of a layer made without ``hosts`` (towpath's ``DEFAULT_HOST``);
* ``sentinel``: ``[host, port]`` of the Sentinel the suite's ``("localhost", 26379)`` goes to;
* ``left_out``: ``{test id: reason}``; every parametrisation of a listed test is deselected;
* ``results``: where the outcome of every test is written (JSON) when the run ends.

It also provides :func:`drop_connections`, which adapted tests call instead of closing a layer's
connections through channels_redis's private attributes.

It refuses to run (a usage error, so nothing passes by accident) when ``channels_redis`` is
not the shim next to this file, when a test module's layer classes are not towpath's, when a
table entry names no test, or when a host constant still names port 6379 or 26379 after the
patch: the system Redis on 6379 must never be used.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

SHIM = Path(__file__).resolve().parent
CONFIG: dict[str, Any] = json.loads(Path(os.environ["TOWPATH_PEER_CONFIG"]).read_text())

DEFAULT_URL = "redis://localhost:6379"
DEFAULT_SENTINEL = ("localhost", 26379)
#: the classes a test module may import from channels_redis, and what they must be here
EXPECTED = {
    "RedisChannelLayer": "towpath.layers.redis.core.RedisChannelLayer",
    "RedisPubSubChannelLayer": "towpath.layers.redis.pubsub.RedisPubSubChannelLayer",
    "ChannelFull": "towpath.layers.base.ChannelFull",
}

_WARNING_LOCATION = re.compile(r"^.*?: (?=\w+Warning: )")

_proof: dict[str, str] = {}
_patched: list[str] = []
_matched: set[str] = set()


async def drop_connections() -> int:
    """Kill every client connection of the run's redis-server but Sentinel's own and this one
    (``CLIENT KILL ID``): what a layer sees when its server drops it. Returns how many."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(CONFIG["redis_url"])
    try:
        me = await client.client_id()
        victims = [
            entry["id"]
            for entry in await client.client_list()
            if int(entry["id"]) != me and not entry.get("name", "").startswith("sentinel-")
        ]
        killed = 0
        for victim in victims:
            killed += await client.execute_command("CLIENT", "KILL", "ID", victim)
        return killed
    finally:
        await client.aclose()


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def pytest_configure(config: pytest.Config) -> None:
    import channels_redis
    import channels_redis.core
    import channels_redis.pubsub

    import towpath.layers.redis.hosts as hosts

    origin = Path(channels_redis.__file__).resolve().parent
    if origin.parent != SHIM:
        raise pytest.UsageError(f"channels_redis came from {origin}, not from the shim in {SHIM}")
    _proof["channels_redis"] = str(origin)
    for module in (channels_redis.core, channels_redis.pubsub):
        for name in module.__all__:
            cls = getattr(module, name)
            if _qualname(cls) != EXPECTED[name]:
                raise pytest.UsageError(f"{module.__name__}.{name} is {_qualname(cls)}")
            _proof[f"{module.__name__}.{name}"] = _qualname(cls)
    # A layer made without hosts (RedisChannelLayer(), as several tests do) would use the
    # system Redis on 6379; it goes to the run's own server instead.
    if hosts.DEFAULT_HOST != DEFAULT_URL:
        raise pytest.UsageError(
            f"towpath's DEFAULT_HOST is {hosts.DEFAULT_HOST!r}, not the {DEFAULT_URL} expected"
        )
    hosts.DEFAULT_HOST = CONFIG["redis_url"]
    _patched.append(f"towpath.layers.redis.hosts.DEFAULT_HOST = {CONFIG['redis_url']!r}")


def _retarget(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(DEFAULT_URL):
        return CONFIG["redis_url"] + value[len(DEFAULT_URL) :]
    if isinstance(value, tuple) and value == DEFAULT_SENTINEL:
        if not CONFIG.get("sentinel"):
            raise pytest.UsageError("a test module names a Sentinel, but this run has none")
        return tuple(CONFIG["sentinel"])
    if isinstance(value, list):
        return [_retarget(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_retarget(item) for item in value)
    if isinstance(value, dict):
        return {key: _retarget(item) for key, item in value.items()}
    return value


def _names_default_port(value: Any) -> bool:
    if isinstance(value, str):
        return ":6379" in value or ":26379" in value
    if isinstance(value, int) and not isinstance(value, bool):
        return value in (6379, 26379)
    if isinstance(value, list | tuple):
        return any(_names_default_port(item) for item in value)
    if isinstance(value, dict):
        return any(_names_default_port(item) for item in value.values())
    return False


def _patch_module(module: Any) -> None:
    short = module.__name__.rpartition(".")[2]
    for name, value in list(vars(module).items()):
        if name in EXPECTED:
            if _qualname(value) != EXPECTED[name]:
                raise pytest.UsageError(f"{module.__name__}.{name} is {_qualname(value)}")
            _proof[f"{short}.{name}"] = _qualname(value)
        if not name.isupper() or not isinstance(value, str | list | tuple | dict):
            continue
        new = _retarget(value)
        if _names_default_port(new):
            raise pytest.UsageError(f"{module.__name__}.{name} still names port 6379: {new!r}")
        if new != value:
            setattr(module, name, new)
            _patched.append(f"{short}.{name}")


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    modules = {id(item.module): item.module for item in items if isinstance(item, pytest.Function)}
    for module in modules.values():
        _patch_module(module)
    left_out: dict[str, str] = CONFIG["left_out"]
    keep, drop = [], []
    for item in items:
        entry = item.nodeid.partition("[")[0]
        if entry in left_out:
            _matched.add(entry)
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    stats: dict[str, list[Any]] = terminalreporter.stats
    outcomes: dict[str, list[str]] = {}
    for key in ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "deselected"):
        ids: list[str] = []
        for report in stats.get(key, []):
            nodeid = getattr(report, "nodeid", None)
            if nodeid is not None and nodeid not in ids:
                ids.append(nodeid)
        outcomes[key] = ids
    warnings = []
    for report in stats.get("warnings", []):
        # "path:line: SomeWarning: text" -> "SomeWarning: text", first line only
        line = _WARNING_LOCATION.sub("", str(report.message).strip().splitlines()[0])
        warnings.append(f"{report.nodeid}: {line}")
    results = {
        "outcomes": outcomes,
        "warnings": warnings,
        "proof": _proof,
        "patched": _patched,
        "matched": sorted(_matched),
    }
    Path(CONFIG["results"]).write_text(json.dumps(results, indent=1))
