"""The rest of the peers' layer API a user touches, item by item, against real redis-server
processes: the attributes and helpers of Channels' and fast-channels' ``BaseChannelLayer``
(compared with those classes themselves), channels_redis's extra methods and attributes, and
``ChannelFull``. tests/layers/test_dropin_peers.py has the peers' own machinery driving towpath's
layers; tests/layers/test_dropin_config.py the ``CONFIG`` forms.

``test_the_api_table_lists_every_peer_item`` keeps docs/migrating.md honest: its tables must
list every public name of channels_redis's and fast-channels' layers (read from the installed
packages, so a new release that adds one fails here), every row must name tests that exist,
and a row that says "same" or "different" must be there in towpath while "not supported" must
not be.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import channels.exceptions
import channels.layers
import channels.testing
import channels_redis.core
import channels_redis.pubsub
import fast_channels.exceptions
import fast_channels.layers
import fast_channels.layers.redis
import fast_channels.testing
import pytest
import redis.asyncio

from tests.support.waiting import WAIT
from towpath.layers import ChannelFull
from towpath.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from towpath.layers.redis.hosts import connection_options
from towpath.testing.services import RedisServer, RedisServerFactory

ROOT = Path(__file__).resolve().parents[2]
MIGRATING = ROOT / "docs" / "migrating.md"


async def _receive(layer: Any, channel: str) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        message: dict[str, Any] = await layer.receive(channel)
        return message


# -- what Channels' and fast-channels' BaseChannelLayer give a layer ------------------------------

NAMES = [
    "chat",
    "chat.room-1_x",
    "specific.abc!def",
    "specific.abc!",
    "a" * 99,
    "a" * 100,
    "",
    "bad name",
    "bad!name!twice",
    "ünïcode",
    "x!y z",
    5,
    None,
    b"bytes",
]


@pytest.fixture(params=["channels", "fast-channels"])
def peer_base(request: pytest.FixtureRequest) -> Any:
    """An instance of the peer's own BaseChannelLayer, the reference for each check."""
    if request.param == "channels":
        return channels.layers.BaseChannelLayer()
    return fast_channels.layers.BaseChannelLayer()


def _outcome(check: Any, *args: Any, **kwargs: Any) -> str:
    try:
        return repr(check(*args, **kwargs))
    except TypeError:
        return "TypeError"


def test_class_attributes_are_the_peers(peer_base: Any) -> None:
    for layer in (RedisChannelLayer(), RedisPubSubChannelLayer()):
        assert layer.MAX_NAME_LENGTH == peer_base.MAX_NAME_LENGTH == 100
        for regex in ("channel_name_regex", "group_name_regex"):  # equivalent patterns
            ours, theirs = getattr(layer, regex), getattr(peer_base, regex)
            strings = [name for name in NAMES if isinstance(name, str)]
            assert [bool(ours.match(n)) for n in strings] == [
                bool(theirs.match(n)) for n in strings
            ], regex
        assert layer.invalid_name_error == peer_base.invalid_name_error
        assert layer.invalid_name_error.format("Channel").startswith("Channel name must be")


def test_name_checks_accept_and_refuse_what_the_peers_do(peer_base: Any) -> None:
    layer = RedisChannelLayer()
    for name in NAMES:
        for check in ("require_valid_channel_name", "require_valid_group_name"):
            ours = _outcome(getattr(layer, check), name)
            assert ours == _outcome(getattr(peer_base, check), name), (check, name)
        assert layer.match_type_and_length(name) == peer_base.match_type_and_length(name)
        if isinstance(name, str):
            assert layer.non_local_name(name) == peer_base.non_local_name(name)
    # the one difference: receive=True also allows a full ``prefix!suffix`` name, which
    # towpath's receive takes (the peers' own receive does not pass receive=True either)
    assert _outcome(peer_base.require_valid_channel_name, "a.b!c", receive=True) == "TypeError"
    assert layer.require_valid_channel_name("a.b!c", receive=True) is True
    # towpath's own errors name the offending value
    with pytest.raises(TypeError, match="'bad name' is invalid"):
        layer.require_valid_channel_name("bad name")


def test_valid_channel_names_checks_each_and_refuses_an_empty_list() -> None:
    layer = RedisChannelLayer()
    assert layer.valid_channel_names(["a", "b.c!d"]) is True
    assert layer.valid_channel_names(("a", "b")) is True  # any collection, not only a list
    with pytest.raises(TypeError, match="'bad name'"):
        layer.valid_channel_names(["a", "bad name"])
    # Channels asserts (a no-op under python -O); towpath raises
    with pytest.raises(AssertionError):
        channels.layers.BaseChannelLayer().valid_channel_names([])
    for empty in ([], "abc"):
        with pytest.raises(TypeError, match="non-empty list"):
            layer.valid_channel_names(empty)


def test_deprecated_name_checks_warn_as_in_channels() -> None:
    layer = RedisChannelLayer()
    for ours, theirs in (
        (layer, channels.layers.BaseChannelLayer()),
        (RedisPubSubChannelLayer(), channels.layers.BaseChannelLayer()),
    ):
        for method, name in (("valid_channel_name", "a.b"), ("valid_group_name", "g")):
            for subject in (ours, theirs):
                with pytest.warns(DeprecationWarning, match=f"{method} is deprecated"):
                    assert getattr(subject, method)(name) is True
            with pytest.warns(DeprecationWarning, match="deprecated"), pytest.raises(TypeError):
                getattr(ours, method)("bad name")


def test_capacity_helpers_match_channels() -> None:
    config = {"http.request": 200, "http.response!*": 10, re.compile(r"^websocket.send\!.+"): 20}
    theirs = channels.layers.BaseChannelLayer(capacity=50, channel_capacity=None)
    theirs.channel_capacity = theirs.compile_capacities(config)
    layer = RedisChannelLayer(capacity=50)
    compiled = layer.compile_capacities(config)
    assert [(p.pattern, v) for p, v in compiled] == [
        (p.pattern, v) for p, v in theirs.channel_capacity
    ]
    layer = RedisChannelLayer(capacity=50, channel_capacity=config)
    for name in ("http.request", "http.response!x", "websocket.send!y", "other", "http.requests"):
        assert layer.get_capacity(name) == theirs.get_capacity(name), name


def test_attributes_hold_what_channels_redis_holds() -> None:
    config: dict[str, Any] = {
        "hosts": ["redis://127.0.0.1:6379/1", ("127.0.0.1", 6380)],
        "prefix": "myapp",
        "expiry": 30,
        "group_expiry": 600,
        "capacity": 7,
        "channel_capacity": {"jobs": 3},
    }
    ours, theirs = RedisChannelLayer(**config), channels_redis.core.RedisChannelLayer(**config)
    for name in ("hosts", "ring_size", "prefix", "expiry", "group_expiry", "capacity"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert [(p.pattern, v) for p, v in ours.channel_capacity] == [
        (p.pattern, v) for p, v in theirs.channel_capacity
    ]
    assert sorted(ours.extensions) == sorted(theirs.extensions) == ["flush", "groups"]
    assert isinstance(ours.client_prefix, str) and ours.client_prefix.isalnum()


@pytest.mark.redis
async def test_client_prefix_names_this_instances_channels(redis_server: RedisServer) -> None:
    layer = RedisChannelLayer(hosts=[redis_server.url])
    try:
        channel = await layer.new_channel("websocket")
        assert channel.startswith(f"websocket.{layer.client_prefix}!")
        assert layer.non_local_name(channel) == f"websocket.{layer.client_prefix}!"
        assert (await layer.new_channel()).startswith(f"specific.{layer.client_prefix}!")
    finally:
        await layer.close()


# -- what channels_redis's RedisChannelLayer adds ------------------------------------------------


@pytest.mark.redis
async def test_create_pool_of_a_subclass_makes_every_connection(redis_server: RedisServer) -> None:
    """channels_redis users customise connections by overriding ``create_pool(index)``."""

    class Named(RedisChannelLayer):
        def create_pool(self, index: int) -> redis.asyncio.ConnectionPool:
            pool = super().create_pool(index)
            pool.connection_kwargs["client_name"] = f"named-{index}"
            return pool

    owner, sender = Named(hosts=[redis_server.url]), Named(hosts=[redis_server.url])
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        channel = await owner.new_channel()
        await sender.send(channel, {"type": "x"})
        await sender.send("jobs", {"type": "x"})
        await _receive(owner, channel)
        await _receive(owner, "jobs")
        clients = await admin.client_list()
        # every connection but the admin's: both instances' command connections and the
        # owner's inbox reader at least
        names = [client["name"] for client in clients]
        assert sorted(names) == [""] + ["named-0"] * (len(names) - 1), clients
        assert len(names) >= 4, clients
        with pytest.raises(ValueError, match="only 1 hosts - you asked for 1"):
            owner.create_pool(1)
    finally:
        await owner.close()
        await sender.close()
        await admin.aclose()


async def _clients_settle(url: str, count: int) -> None:
    """Wait until the server counts ``count`` clients (itself asking included): a client's
    close reaches the server a moment after the client returns."""
    admin = redis.asyncio.Redis.from_url(url)
    try:
        async with asyncio.timeout(WAIT):
            while len(await admin.client_list()) != count:
                pass
    finally:
        await admin.aclose()


@pytest.mark.redis
async def test_connection_and_consistent_hash_find_a_names_shard(
    redis_server_factory: RedisServerFactory,
) -> None:
    servers = [redis_server_factory() for _ in range(3)]
    admins = [redis.asyncio.Redis.from_url(server.url) for server in servers]
    layer = RedisChannelLayer(hosts=[server.url for server in servers], prefix="find")
    try:
        names = [f"jobs-{n}" for n in range(12)]
        for name in names:
            await layer.send(name, {"type": "job"})
        assert {layer.consistent_hash(name) for name in names} == {0, 1, 2}
        for name in names:
            index = layer.consistent_hash(name)
            assert layer.consistent_hash(name.encode()) == index
            assert await layer.connection(index).llen(f"find:{name}") == 1
            assert await admins[index].llen(f"find:{name}") == 1  # the server it named
        channel = await layer.new_channel()
        assert await layer.connection(layer.consistent_hash(layer.non_local_name(channel))).ping()
        with pytest.raises(ValueError, match="only 3 hosts - you asked for 3"):
            layer.connection(3)
        await layer.flush()
    finally:
        await layer.close()
        for admin in admins:
            await admin.aclose()
    # the layer's close() closed the connections connection() handed out
    for server in servers:
        await _clients_settle(server.url, 1)


@pytest.mark.redis
async def test_serialize_and_deserialize_are_the_layers_encoding(redis_server: RedisServer) -> None:
    message = {"type": "x", "bytes": b"\x00\xff", "n": [1, 2.5, None, True]}
    plain = RedisChannelLayer(hosts=[redis_server.url])
    secret = RedisChannelLayer(hosts=[redis_server.url], symmetric_encryption_keys=["k1"])
    rotated = RedisChannelLayer(hosts=[redis_server.url], symmetric_encryption_keys=["k2", "k1"])
    try:
        assert plain.deserialize(plain.serialize(message)) == message
        assert secret.serialize(message) != secret.serialize(message)  # Fernet: random IV
        assert rotated.deserialize(secret.serialize(message)) == message
        await secret.send("jobs", message)
        admin = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            stored = await admin.lindex("asgi:jobs", 0)
        finally:
            await admin.aclose()
        assert secret.deserialize(stored[13:]) == message  # after the 13-digit expiry header
        assert await _receive(rotated, "jobs") == message
    finally:
        for layer in (plain, secret, rotated):
            await layer.close()


@pytest.mark.redis
async def test_wait_received_returns_at_once(redis_server: RedisServer) -> None:
    layer = RedisChannelLayer(hosts=[redis_server.url])
    try:
        receiving = asyncio.ensure_future(layer.receive("jobs"))
        await asyncio.sleep(0)
        receiving.cancel()
        async with asyncio.timeout(1):
            await layer.wait_received()
        await layer.send("jobs", {"type": "after"})
        assert (await _receive(layer, "jobs"))["type"] == "after"  # nothing lost to the cancel
    finally:
        await layer.close()


@pytest.mark.redis
async def test_close_pools_closes_connections_and_the_layer_stays_usable(
    redis_server: RedisServer,
) -> None:
    layer = RedisChannelLayer(hosts=[redis_server.url])
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await layer.send("jobs", {"type": "x"})
        await layer.close_pools()  # type: ignore[attr-defined]
        assert len(await admin.client_list()) == 1
        assert (await _receive(layer, "jobs"))["type"] == "x"
    finally:
        await layer.close()
        await admin.aclose()


def test_pubsub_keeps_its_callbacks_and_prefix() -> None:
    def reconnected() -> None:
        return None

    layer = RedisPubSubChannelLayer(None, "ps", "redis.disconnect", reconnected)
    assert (layer.prefix, layer.on_disconnect, layer.on_reconnect) == (
        "ps",
        "redis.disconnect",
        reconnected,
    )
    theirs = channels_redis.pubsub.RedisPubSubLoopLayer(
        None, "ps", "redis.disconnect", reconnected, channel_layer=object()
    )
    assert (theirs.prefix, theirs.on_disconnect, theirs.on_reconnect) == (
        layer.prefix,
        layer.on_disconnect,
        layer.on_reconnect,
    )
    assert sorted(layer.extensions) == ["flush", "groups"]


def test_channel_full_is_each_peers_channel_full() -> None:
    error = ChannelFull("jobs")
    assert isinstance(error, channels.exceptions.ChannelFull)
    assert isinstance(error, fast_channels.exceptions.ChannelFull)
    with pytest.raises(fast_channels.exceptions.ChannelFull):
        raise error


# -- docs/migrating.md: the table of every item --------------------------------------------------

STATUSES = {"same", "different", "not supported"}


def _table(marker: str) -> dict[str, tuple[str, str, list[str]]]:
    """Rows under ``<!-- api-table: marker -->``: name -> (status, towpath, test references)."""
    lines = MIGRATING.read_text().splitlines()
    start = lines.index(f"<!-- api-table: {marker} -->")
    rows: dict[str, tuple[str, str, list[str]]] = {}
    body = lines[start + 1 :]
    assert body[0].startswith("| ") and body[1].startswith("|---"), f"{marker}: no table"
    for line in body[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        assert len(cells) == 4, f"{marker}: a row needs 4 cells: {line}"
        name, status, towpath, tests = cells
        key = name.strip("`")
        assert key not in rows, f"{marker}: {key} twice"
        rows[key] = (status, towpath, re.findall(r"`([\w.]+\.py::[\w:]+)`", tests))
    return rows


def _public(obj: Any) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def _peer_layer_names() -> dict[str, set[str]]:
    """Every public name of the peers' layers (instances too: attributes set in __init__),
    with which towpath class stands in for each peer: ``queue`` or ``pubsub``."""
    peers: dict[str, tuple[str, list[Any]]] = {}
    cr_proxy = channels_redis.pubsub.RedisPubSubChannelLayer()
    fc_proxy = fast_channels.layers.redis.RedisPubSubChannelLayer()
    peers["channels_redis core"] = ("queue", [channels_redis.core.RedisChannelLayer()])
    peers["channels_redis pubsub"] = (
        "pubsub",
        [
            channels_redis.pubsub.RedisPubSubChannelLayer,
            channels_redis.pubsub.RedisPubSubLoopLayer(channel_layer=cr_proxy),
        ],
    )
    peers["fast-channels core"] = ("queue", [fast_channels.layers.redis.RedisChannelLayer()])
    peers["fast-channels pubsub"] = (
        "pubsub",
        [
            fast_channels.layers.redis.RedisPubSubChannelLayer,
            importlib.import_module("fast_channels.layers.redis.pubsub").RedisPubSubLoopLayer(
                channel_layer=fc_proxy
            ),
        ],
    )
    peers["Channels base"] = ("queue", [channels.layers.BaseChannelLayer()])
    peers["fast-channels base"] = ("queue", [fast_channels.layers.BaseChannelLayer()])
    names: dict[str, set[str]] = {}
    for kind, objects in peers.values():
        for obj in objects:
            for name in _public(obj):
                names.setdefault(name, set()).add(kind)
    return names


def _peer_config_names() -> set[str]:
    def parameters(function: Any) -> set[str]:
        return {
            p.name
            for p in inspect.signature(function).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }

    fc_pubsub = importlib.import_module("fast_channels.layers.redis.pubsub")
    return (
        parameters(channels_redis.core.RedisChannelLayer.__init__)
        | parameters(channels_redis.pubsub.RedisPubSubChannelLayer.__init__)
        | parameters(channels_redis.pubsub.RedisPubSubLoopLayer.__init__)
        | parameters(fast_channels.layers.redis.RedisChannelLayer.__init__)
        | parameters(fc_pubsub.RedisPubSubChannelLayer.__init__)
        | parameters(fc_pubsub.RedisPubSubLoopLayer.__init__)
    )


def _peer_integration_names() -> set[str]:
    return (
        {f"fast_channels.layers.{name}" for name in fast_channels.layers.__all__}
        | {f"fast_channels.testing.{name}" for name in fast_channels.testing.__all__}
        | {f"channels.testing.{name}" for name in channels.testing.__all__}
        | {
            "channels.layers.get_channel_layer",
            "channels.layers.channel_layers.make_test_backend",
            "channels.exceptions.ChannelFull",
            "fast_channels.exceptions.ChannelFull",
        }
    )


def _resolve(reference: str) -> bool:
    """``file.py::name`` or ``file.py::Class::name`` (inherited methods count); ``file.py`` is
    the name of one test module, in whichever directory of tests/ it is."""
    file, *path = reference.split("::")
    found = list((ROOT / "tests").rglob(file))
    if len(found) != 1:
        return False
    obj: Any = importlib.import_module(".".join(found[0].relative_to(ROOT).with_suffix("").parts))
    for part in path:
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return callable(obj)


def test_the_api_table_lists_every_peer_item() -> None:
    layer_rows, config_rows, integration_rows = (
        _table("layer"),
        _table("config"),
        _table("integration"),
    )
    peer_names = _peer_layer_names()
    assert set(layer_rows) == set(peer_names), (
        f"missing: {sorted(set(peer_names) - set(layer_rows))}, "
        f"not a peer name: {sorted(set(layer_rows) - set(peer_names))}"
    )
    missing = _peer_config_names() - set(config_rows)
    assert not missing, f"CONFIG options without a row: {sorted(missing)}"
    missing = _peer_integration_names() - set(integration_rows)
    assert not missing, f"integration items without a row: {sorted(missing)}"

    towpath = {"queue": RedisChannelLayer(), "pubsub": RedisPubSubChannelLayer()}
    for name, (status, _, _) in layer_rows.items():
        assert status in STATUSES, f"{name}: status {status!r}"
        present = {kind: hasattr(towpath[kind], name) for kind in peer_names[name]}
        if status == "not supported":
            assert not any(present.values()), f"{name} exists in towpath: update its row"
        else:
            assert all(present.values()), f"{name} is {status} but missing in towpath: {present}"
    accepted = (
        set(inspect.signature(RedisChannelLayer).parameters)
        | set(inspect.signature(RedisPubSubChannelLayer).parameters)
        | connection_options()
    )
    for name, (status, _, _) in config_rows.items():
        assert status in STATUSES, f"{name}: status {status!r}"
        if not name.isidentifier():  # a hosts form or a property of several options
            continue
        assert (name in accepted) == (status != "not supported"), f"{name}: {status}"

    for table in (layer_rows, config_rows, integration_rows):
        for name, (_, towpath_text, references) in table.items():
            assert towpath_text, f"{name}: say what towpath does"
            assert references, f"{name}: name at least one test"
            for reference in references:
                assert _resolve(reference), f"{name}: no test {reference}"
