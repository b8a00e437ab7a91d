"""Every channels_redis ``CONFIG`` form, against real redis-server processes: each is accepted
with the meaning it has in channels_redis, or refused with an error naming it and the fix.

* ``hosts`` in each form (URI with a db, ``(host, port)``, a list pair, a dict with
  ``address`` or ``host``/``port``/``db``, ``unix://``, a bare string), checked by where the
  keys land, not only by a message getting through;
* ``rediss://`` with a trustme CA (verified, ``ssl_cert_reqs=None`` as channels_redis's README
  writes it, client certificates), and the refusals when the certificate is not trusted;
* a password and an ACL user in the URI or in a dict, a Sentinel whose master and sentinels
  have passwords, and a wrong password refused at once rather than retried as an outage;
* ``socket_timeout`` in a hosts entry (redis-py 8 defaults it to 5 s): channels_redis's idle
  receive then raises; towpath's blocking reads never time out on it;
* the constructor's positional order and defaults against channels_redis's own signature.

docs/migrating.md (the API table) names these tests.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import trustme
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer
from channels_redis.pubsub import RedisPubSubLoopLayer as ChannelsRedisPubSubLoop
from redis.exceptions import NoPermissionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.support.waiting import WAIT
from towpath.layers.base import InvalidChannelLayerError, LayerConnectionError
from towpath.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from towpath.layers.serializers import (
    JSONSerializer,
    SerializerDoesNotExist,
    SerializersRegistry,
    registry,
)
from towpath.testing.services import RedisServer, RedisServerFactory, RedisTLS

pytestmark = pytest.mark.redis


async def _receive(layer: Any, channel: str) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        message: dict[str, Any] = await layer.receive(channel)
        return message


async def round_trip(**config: Any) -> None:
    """What a deployment does, between two instances built from ``config``: a direct send to
    a ``!`` channel, a group_send, and a normal channel. It goes through both kinds of
    connection the layer opens (the pipelined one and the blocking readers)."""
    owner, sender = RedisChannelLayer(**config), RedisChannelLayer(**config)
    try:
        channel = await owner.new_channel()
        await sender.send(channel, {"type": "direct"})
        await sender.group_add("room", channel)
        await sender.group_send("room", {"type": "group"})
        await sender.send("jobs", {"type": "job"})
        assert (await _receive(owner, channel))["type"] == "direct"
        assert (await _receive(owner, channel))["type"] == "group"
        assert (await _receive(owner, "jobs"))["type"] == "job"
        await owner.flush()
    finally:
        await owner.close()
        await sender.close()


async def pubsub_round_trip(**config: Any) -> None:
    """The same for the pub/sub layer: a group_send from one instance heard by another."""
    member, sender = RedisPubSubChannelLayer(**config), RedisPubSubChannelLayer(**config)
    try:
        channel = await member.new_channel()
        await member.group_add("room", channel)
        await sender.group_send("room", {"type": "group"})
        assert (await _receive(member, channel))["type"] == "group"
    finally:
        await member.close()
        await sender.close()


@asynccontextmanager
async def admin(url: str, db: int = 0) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(url, db=db)
    try:
        yield client
    finally:
        await client.aclose()


# -- hosts forms ---------------------------------------------------------------------------------


def _host_forms(server: RedisServer, unix_socket: Path) -> dict[str, tuple[Any, int]]:
    """``hosts`` values in every form channels_redis documents, with the db each names."""
    port = server.port
    return {
        "uri-with-db": ([f"redis://127.0.0.1:{port}/3"], 3),
        "tuple": ([("127.0.0.1", port)], 0),
        "list-pair": ([["127.0.0.1", port]], 0),
        "dict-address-and-db": ([{"address": f"redis://127.0.0.1:{port}", "db": 2}], 2),
        "dict-host-port-db": ([{"host": "127.0.0.1", "port": port, "db": 4}], 4),
        "unix-socket": ([f"unix://{unix_socket}?db=6"], 6),
        # channels_redis refuses a bare string ("You must pass a list"); towpath takes it as
        # the one host it obviously is
        "bare-string": (f"redis://127.0.0.1:{port}/5", 5),
    }


@pytest.mark.parametrize(
    "form",
    [
        "uri-with-db",
        "tuple",
        "list-pair",
        "dict-address-and-db",
        "dict-host-port-db",
        "unix-socket",
        "bare-string",
    ],
)
async def test_hosts_forms_reach_the_server_and_db_they_name(
    redis_server_factory: RedisServerFactory, tmp_path: Path, form: str
) -> None:
    unix_socket = tmp_path / "redis.sock"
    server = redis_server_factory("--unixsocket", str(unix_socket), "--unixsocketperm", "700")
    hosts, db = _host_forms(server, unix_socket)[form]
    layer = RedisChannelLayer(hosts=hosts, prefix="forms")
    try:
        await layer.send("probe", {"type": "probe"})
        async with admin(server.url, db) as client:
            assert await client.llen("forms:probe") == 1, f"the message is not in db {db}"
        assert (await _receive(layer, "probe"))["type"] == "probe"
    finally:
        await layer.close()
    await round_trip(hosts=hosts)


def test_channels_redis_refuses_a_bare_string_towpath_takes_it() -> None:
    """The one hosts form where towpath is more lenient (docs/migrating.md)."""
    with pytest.raises(ValueError, match="list of Redis hosts"):
        ChannelsRedisLayer(hosts="redis://127.0.0.1:6379")
    assert RedisChannelLayer(hosts="redis://127.0.0.1:6379").hosts == [
        {"address": "redis://127.0.0.1:6379"}
    ]


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ([{"adress": "redis://127.0.0.1:6379"}], r"unknown key 'adress' \(did you mean 'address'"),
        ([{"host": "127.0.0.1", "pasword": "x"}], r"unknown key 'pasword' \(did you mean 'pass"),
        (["rediss://127.0.0.1:6379?sll_cert_reqs=none"], r"URI option 'sll_cert_reqs'"),
        ([("127.0.0.1", "six-three-seven-nine")], r"port 'six-three-seven-nine' in hosts"),
        ([3.5], r"hosts entry 3\.5 is not a Redis URI"),
    ],
)
def test_a_misspelt_hosts_entry_is_refused_when_the_layer_is_built(
    hosts: Any, message: str
) -> None:
    # channels_redis (and redis-py) accept these and fail on every connection later.
    with pytest.raises(InvalidChannelLayerError, match=message):
        RedisChannelLayer(hosts=hosts)
    with pytest.raises(InvalidChannelLayerError, match=message):
        RedisPubSubChannelLayer(hosts=hosts)


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("towpath-test-client")
    files = {
        "ca": directory / "ca.pem",
        "server_cert": directory / "server.pem",
        "server_key": directory / "server.key",
        "client": directory / "client.pem",
        "other_ca": directory / "other-ca.pem",
    }
    ca.cert_pem.write_to_path(files["ca"])
    server.private_key_pem.write_to_path(files["server_key"])
    for blob in server.cert_chain_pems:
        blob.write_to_path(files["server_cert"], append=True)
    client.private_key_and_cert_chain_pem.write_to_path(files["client"])
    trustme.CA().cert_pem.write_to_path(files["other_ca"])
    return files


def _tls(files: dict[str, Path], *, auth_clients: bool = False) -> RedisTLS:
    return RedisTLS(
        cert_file=files["server_cert"],
        key_file=files["server_key"],
        ca_file=files["ca"],
        auth_clients=auth_clients,
        client_cert_file=files["client"] if auth_clients else None,
    )


@pytest.mark.parametrize("form", ["uri-ca-certs", "dict-cert-reqs-none", "uri-cert-reqs-none"])
async def test_rediss_hosts(
    redis_server_factory: RedisServerFactory, tls_files: dict[str, Path], form: str
) -> None:
    server = redis_server_factory(tls=_tls(tls_files))
    assert server.url.startswith("rediss://")
    host: Any = {
        # the certificate verified against the CA that signed it
        "uri-ca-certs": f"{server.url}?ssl_ca_certs={tls_files['ca']}",
        # channels_redis's README for self-signed certificates (Heroku)
        "dict-cert-reqs-none": {"address": server.url, "ssl_cert_reqs": None},
        "uri-cert-reqs-none": f"{server.url}?ssl_cert_reqs=none",
    }[form]
    await round_trip(hosts=[host])
    await pubsub_round_trip(hosts=[host])


async def test_rediss_with_a_client_certificate(
    redis_server_factory: RedisServerFactory, tls_files: dict[str, Path]
) -> None:
    server = redis_server_factory(tls=_tls(tls_files, auth_clients=True))
    host = {
        "address": server.url,
        "ssl_ca_certs": str(tls_files["ca"]),
        "ssl_certfile": str(tls_files["client"]),
    }
    await round_trip(hosts=[host])
    await pubsub_round_trip(hosts=[host])
    # without one, the server refuses the handshake: an error, never a hang
    bare = RedisChannelLayer(
        hosts=[{"address": server.url, "ssl_ca_certs": str(tls_files["ca"])}], retry_timeout=0.5
    )
    try:
        with pytest.raises(LayerConnectionError, match="Redis rediss://127.0.0.1"):
            await bare.send("probe", {"type": "probe"})
    finally:
        await bare.close()


async def test_rediss_refuses_a_certificate_it_cannot_verify(
    redis_server_factory: RedisServerFactory, tls_files: dict[str, Path]
) -> None:
    server = redis_server_factory(tls=_tls(tls_files))
    # redis-py verifies by default (ssl_cert_reqs="required"): the system CAs, then a CA
    # that did not sign the server's certificate
    for host in (server.url, f"{server.url}?ssl_ca_certs={tls_files['other_ca']}"):
        layer = RedisChannelLayer(hosts=[host], retry_timeout=0.5)
        try:
            with pytest.raises(LayerConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await layer.send("probe", {"type": "probe"})
        finally:
            await layer.close()


# -- passwords and ACL users ----------------------------------------------------------------------

PASSWORD = "p@ss:w/rd 1"  # characters a URI must percent-encode


async def test_password_in_the_uri_and_in_a_dict(redis_server_factory: RedisServerFactory) -> None:
    server = redis_server_factory(password=PASSWORD)
    assert server.url == f"redis://:p%40ss%3Aw%2Frd%201@127.0.0.1:{server.port}"
    await round_trip(hosts=[server.url])
    await round_trip(hosts=[{"host": "127.0.0.1", "port": server.port, "password": PASSWORD}])
    await round_trip(hosts=[{"address": f"redis://127.0.0.1:{server.port}", "password": PASSWORD}])
    await pubsub_round_trip(hosts=[server.url])
    assert PASSWORD not in repr(RedisChannelLayer(hosts=[server.url]))


async def test_acl_user_limited_to_the_prefix(redis_server_factory: RedisServerFactory) -> None:
    """An ACL user may touch only keys under ``asgi:`` and Pub/Sub channels under ``asgi__``:
    every key the layer uses (channels, inboxes, full sets, groups) is under its prefix, and
    every Redis channel the pub/sub layer uses, so that is all it needs (docs/redis.md)."""
    server = redis_server_factory(
        "--user", "alice", "on", ">alice-pw", "~asgi:*", "&asgi__*", "+@all", password="admin-pw"
    )
    uri = f"redis://alice:alice-pw@127.0.0.1:{server.port}/0"
    await round_trip(hosts=[uri])
    await round_trip(
        hosts=[
            {"host": "127.0.0.1", "port": server.port, "username": "alice", "password": "alice-pw"}
        ]
    )
    await pubsub_round_trip(hosts=[uri])
    # the same user under another prefix is refused by Redis, and the error says so
    other = RedisChannelLayer(hosts=[uri], prefix="other")
    try:
        with pytest.raises(NoPermissionError, match="no permissions to access one of the keys"):
            await other.send("probe", {"type": "probe"})
    finally:
        await other.close()


@pytest.mark.parametrize("credentials", ["wrong-password", "no-password", "unknown-user"])
async def test_wrong_credentials_fail_at_once_naming_the_fix(
    redis_server_factory: RedisServerFactory, credentials: str
) -> None:
    server = redis_server_factory(password=PASSWORD)
    auth = {"wrong-password": ":nope@", "no-password": "", "unknown-user": "bob:x@"}[credentials]
    layer = RedisChannelLayer(hosts=[f"redis://{auth}127.0.0.1:{server.port}"], retry_timeout=30)
    started = time.monotonic()
    try:
        with pytest.raises(LayerConnectionError, match="refused to authenticate") as caught:
            await layer.send("probe", {"type": "probe"})
    finally:
        await layer.close()
    # not retried as if Redis were down: a password does not fix itself in retry_timeout
    assert time.monotonic() - started < 5
    assert "redis://user:password@host:port/db" in str(caught.value)
    assert "nope" not in str(caught.value)


async def test_sentinel_with_passwords(redis_server_factory: RedisServerFactory) -> None:
    master = redis_server_factory(password="master-pw")
    sentinel = redis_server_factory.sentinel(master, "towpath-main", password="sentinel-pw")
    host = {
        "sentinels": [(sentinel.host, sentinel.port)],
        "master_name": "towpath-main",
        "password": "master-pw",
        "sentinel_kwargs": {"password": "sentinel-pw"},
    }
    await round_trip(hosts=[host])
    await pubsub_round_trip(hosts=[host])
    async with admin(master.url) as client:
        assert await client.dbsize() == 0  # flushed: the round trip did go to this master


# -- socket_timeout ------------------------------------------------------------------------------


def _socket_timeout_hosts(server: RedisServer, form: str) -> list[Any]:
    return {
        "uri": [f"{server.url}?socket_timeout=0.3"],
        "dict-address": [{"address": server.url, "socket_timeout": 0.3}],
        "dict-host-port": [{"host": "127.0.0.1", "port": server.port, "socket_timeout": 0.3}],
    }[form]


async def test_channels_redis_idle_receive_dies_of_socket_timeout(
    redis_server: RedisServer,
) -> None:
    """The pitfall itself: channels_redis blocks in BZPOPMIN for 5 s (``brpop_timeout``) on a
    connection whose reads time out after ``socket_timeout``: redis-py's default (5 s in
    redis-py 8, as long as the block) or the user's. An idle receive then raises."""
    theirs = ChannelsRedisLayer(hosts=_socket_timeout_hosts(redis_server, "dict-address"))
    try:
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(theirs.receive("idle"), WAIT)
    finally:
        await theirs.close_pools()


async def _blocked_readers(client: redis.asyncio.Redis, count: int) -> int:
    """Wait until ``count`` clients block in BLPOP; the connections received by then."""
    deadline = time.monotonic() + WAIT
    while True:
        info = await client.info()
        if int(info["blocked_clients"]) == count:
            return int(info["total_connections_received"])
        assert time.monotonic() < deadline, f"{info['blocked_clients']} clients blocked"


@pytest.mark.parametrize("form", ["uri", "dict-address", "dict-host-port"])
async def test_socket_timeout_in_hosts_does_not_cut_blocking_reads(
    redis_server: RedisServer, form: str, caplog: pytest.LogCaptureFixture
) -> None:
    hosts = _socket_timeout_hosts(redis_server, form)
    # block_seconds=1: the readers' BLPOP outlasts the 0.3 s socket_timeout and is re-issued
    owner = RedisChannelLayer(hosts=hosts, block_seconds=1)
    sender = RedisChannelLayer(hosts=hosts)
    try:
        async with admin(redis_server.url) as client:
            channel = await owner.new_channel()
            waiting = asyncio.ensure_future(owner.receive_many(["idle-normal", channel]))
            dialled = await _blocked_readers(client, 2)  # the inbox reader and the fetcher
            done, _ = await asyncio.wait([waiting], timeout=1.5)
            assert not done, waiting.exception() if done else None
            # a read cut by the socket timeout would be redialled (and logged) by the
            # readers, and a message popped by the abandoned BLPOP meanwhile would be lost
            assert await _blocked_readers(client, 2) == dialled
        assert not [r for r in caplog.records if r.name.startswith("towpath")]
        await sender.send(channel, {"type": "late"})
        await sender.send("idle-normal", {"type": "late-normal"})
        async with asyncio.timeout(WAIT):
            assert (await waiting)[1] == {"type": "late"}
        assert (await _receive(owner, "idle-normal"))["type"] == "late-normal"
    finally:
        await owner.close()
        await sender.close()


async def test_socket_timeout_in_hosts_does_not_cut_an_idle_subscription(
    redis_server: RedisServer,
) -> None:
    hosts = _socket_timeout_hosts(redis_server, "uri")
    member = RedisPubSubChannelLayer(hosts=hosts, ping_interval=None)
    sender = RedisPubSubChannelLayer(hosts=hosts)
    try:
        channel = await member.new_channel()
        waiting = asyncio.ensure_future(member.receive(channel))
        done, _ = await asyncio.wait([waiting], timeout=1.0)
        assert not done, waiting.exception() if done else None
        await sender.send(channel, {"type": "late"})
        async with asyncio.timeout(WAIT):
            assert (await waiting) == {"type": "late"}
        assert member.reconnects == 0
    finally:
        await member.close()
        await sender.close()


# -- the other options ----------------------------------------------------------------------------


def _parameters(function: Any) -> list[tuple[str, Any]]:
    return [
        (p.name, p.default)
        for p in inspect.signature(function).parameters.values()
        if p.name != "self" and p.kind is not p.VAR_KEYWORD
    ]


def test_constructor_takes_channels_redis_arguments_in_their_order_with_their_defaults() -> None:
    """A CONFIG, or a positional call written for channels_redis, means the same here."""
    theirs = _parameters(ChannelsRedisLayer.__init__)
    ours = _parameters(RedisChannelLayer.__init__)
    assert ours[: len(theirs)] == theirs
    # the pub/sub layer: (hosts, prefix, on_disconnect, on_reconnect) positionally, the
    # serializer options by keyword (channels_redis's proxy takes them as keywords)
    theirs_pubsub = [
        p for p in _parameters(ChannelsRedisPubSubLoop.__init__) if p[0] != "channel_layer"
    ]
    ours_pubsub = _parameters(RedisPubSubChannelLayer.__init__)
    assert ours_pubsub[: len(theirs_pubsub)] == theirs_pubsub
    keyword_only = {
        name
        for name, p in inspect.signature(RedisPubSubChannelLayer.__init__).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }
    assert {"symmetric_encryption_keys", "serializer_format"} <= keyword_only


async def test_random_prefix_length_is_accepted_and_changes_nothing(
    redis_server: RedisServer,
) -> None:
    # channels_redis prefixes each stored message with random bytes so that equal messages
    # stay distinct members of its sorted sets; towpath stores lists, which need none.
    stored = []
    for length in (0, 12, 32):
        layer = RedisChannelLayer(hosts=[redis_server.url], random_prefix_length=length)
        try:
            await layer.send("jobs", {"type": "job"})
            async with admin(redis_server.url) as client:
                stored.append((await client.lpop("asgi:jobs"))[13:])
        finally:
            await layer.close()
    assert stored[0] == stored[1] == stored[2] == RedisChannelLayer().serialize({"type": "job"})


async def test_serializer_format_json_stores_json(redis_server: RedisServer) -> None:
    layer = RedisChannelLayer(hosts=[redis_server.url], serializer_format="json")
    try:
        await layer.send("jobs", {"type": "job", "n": 1})
        async with admin(redis_server.url) as client:
            entry = await client.lindex("asgi:jobs", 0)
        assert entry[13:] == b'{"type":"job","n":1}'
        assert await _receive(layer, "jobs") == {"type": "job", "n": 1}
    finally:
        await layer.close()


class _ReversedJSON:
    """A custom format as a channels_redis user registers one: JSON, bytes reversed."""

    def serialize(self, message: dict[str, Any]) -> bytes:
        return json.dumps(message).encode()[::-1]

    def deserialize(self, data: bytes) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(data[::-1])
        return message


async def test_a_registered_serializer_format_is_used(redis_server: RedisServer) -> None:
    """channels_redis's registry API: register a class under a name, name it in CONFIG."""
    registry.register_serializer("reversed-json", _ReversedJSON)
    layer = RedisChannelLayer(hosts=[redis_server.url], serializer_format="reversed-json")
    encrypted = RedisChannelLayer(
        hosts=[redis_server.url],
        serializer_format="reversed-json",
        symmetric_encryption_keys=["a-key"],
    )
    try:
        await layer.send("jobs", {"type": "job", "n": 1})
        async with admin(redis_server.url) as client:
            entry = await client.lindex("asgi:jobs", 0)
        assert entry[13:] == b'{"type": "job", "n": 1}'[::-1]
        assert await _receive(layer, "jobs") == {"type": "job", "n": 1}
        # encryption is applied around a custom format too
        await encrypted.send("secret", {"type": "job", "n": 2})
        async with admin(redis_server.url) as client:
            entry = await client.lindex("asgi:secret", 0)
        assert b"job" not in entry
        assert await _receive(encrypted, "secret") == {"type": "job", "n": 2}
    finally:
        await layer.close()
        await encrypted.close()


def test_the_serializer_registry_refuses_what_cannot_serialize() -> None:
    class OnlySerialize:
        def serialize(self, message: Any) -> bytes:
            return b""

    fresh = SerializersRegistry()
    fresh.register_serializer("json", JSONSerializer)
    with pytest.raises(TypeError, match="lacks deserialize"):
        fresh.register_serializer("half", OnlySerialize)
    with pytest.raises(SerializerDoesNotExist, match=r"'half' is unknown; registered: json \("):
        fresh.get_serializer("half")


def test_serializer_and_encryption_misconfigurations_name_the_option() -> None:
    with pytest.raises(InvalidChannelLayerError, match=r"serializer_format 'myformat' is unknown"):
        RedisChannelLayer(serializer_format="myformat")
    # a lone key rather than a list (channels_redis: ValueError "must be a list")
    with pytest.raises(InvalidChannelLayerError, match="symmetric_encryption_keys must be a"):
        RedisChannelLayer(symmetric_encryption_keys="one-key")
    with pytest.raises(InvalidChannelLayerError, match=r"channel_capacity\['http.\*'\]"):
        RedisChannelLayer(channel_capacity={"http.*": 0})
    with pytest.raises(InvalidChannelLayerError, match="prefix must be a non-empty str"):
        RedisChannelLayer(prefix="asgi:")


async def test_channel_capacity_keeps_globs_and_compiled_regexes(redis_server: RedisServer) -> None:
    """channels_redis's README example, as written there."""
    layer = RedisChannelLayer(
        hosts=[redis_server.url],
        channel_capacity={
            "http.request": 200,
            "http.response!*": 10,
            re.compile(r"^websocket.send\!.+"): 20,
        },
    )
    try:
        assert layer.get_capacity("http.request") == 200
        assert layer.get_capacity("http.response!abc") == 10
        assert layer.get_capacity("websocket.send!abc") == 20
        assert layer.get_capacity("other") == 100
        assert [value for _, value in layer.channel_capacity] == [200, 10, 20]
    finally:
        await layer.close()
