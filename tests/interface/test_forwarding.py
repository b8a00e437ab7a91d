"""The forwarding app (decoupled mode), driven as an ASGI 3 app over real channel layers.

A small driver plays the server (it gives the app ``receive``/``send``, as the ASGI contract
says); the "worker" is test code receiving from ``http.request`` / ``websocket.*`` and replying on
the reply channel, as a worker in another process would. Every behaviour test runs on the
in-memory layer and on a real Redis (the ``layer`` fixture); docs/protocol.md is what they check.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.forwarding import Client, Message, http_scope, receive, ws_scope
from tests.support.waiting import WAIT
from towpath.interface.forwarding import ForwardingApp, forwarding_app_from_settings
from towpath.layers.base import BaseChannelLayer, InvalidChannelLayerError
from towpath.layers.memory import InMemoryChannelLayer
from towpath.wire import REQUEST_BODY_PREFIX

LayerFactory = Callable[..., Awaitable[BaseChannelLayer]]


async def nothing_on(layer: BaseChannelLayer, channel: str) -> None:
    """Assert ``channel`` holds nothing now (a sentinel sent behind is what comes out first)."""
    await layer.send(channel, {"type": "sentinel"})
    assert (await receive(layer, channel))["type"] == "sentinel"


@pytest.fixture(params=["memory", "redis"])
async def layer_factory(request: pytest.FixtureRequest) -> AsyncIterator[LayerFactory]:
    made: list[BaseChannelLayer] = []

    async def make(**options: Any) -> BaseChannelLayer:
        layer: BaseChannelLayer
        if request.param == "memory":
            layer = InMemoryChannelLayer(**options)
        else:
            from towpath.layers.redis import RedisChannelLayer

            server = request.getfixturevalue("redis_server")
            layer = RedisChannelLayer(hosts=[server.url], **options)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


@pytest.fixture
async def layer(layer_factory: LayerFactory) -> BaseChannelLayer:
    return await layer_factory()


# -- HTTP ------------------------------------------------------------------------------------


async def test_request_and_response(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer)
    client = Client(app, http_scope("/hello"))
    client.feed({"type": "http.request", "body": b"hi", "more_body": False})

    request = await receive(layer, "http.request")
    assert request["type"] == "http.request"
    assert request["body"] == b"hi" and request["more_body"] is False
    assert request["reply_channel"].startswith("interface.") and "!" in request["reply_channel"]
    assert request["request_channel"].startswith(REQUEST_BODY_PREFIX)
    assert "!" not in request["request_channel"]  # any worker may read it
    scope = request["scope"]
    assert scope["path"] == "/hello" and scope["query_string"] == b"a=1"
    assert scope["headers"] == [[b"host", b"example.com"]]  # msgpack arrays
    assert scope["client"] == ["127.0.0.1", 50000] and scope["server"] == ["127.0.0.1", 8000]
    assert "state" not in scope
    assert scope["extensions"] == {"http.response.trailers": {}}  # pathsend stays here

    await layer.send(
        request["reply_channel"],
        {"type": "http.response.start", "status": 201, "headers": [[b"x-a", b"1"]]},
    )
    await layer.send(request["reply_channel"], {"type": "http.response.body", "body": b"ok"})
    start, body = await client.sent_count(2)
    assert start["status"] == 201 and start["headers"] == [[b"x-a", b"1"]]
    assert body["body"] == b"ok"
    await client.finished()
    assert app.stats.http_requests == 1 and app.stats.http_disconnects == 0


async def test_streamed_request_body_goes_to_the_request_channel_in_order(
    layer: BaseChannelLayer,
) -> None:
    app = ForwardingApp(layer, body_chunk_bytes=4)
    client = Client(app, http_scope(method="POST"))
    # Client reads come in odd sizes; the wire carries chunks of at most 4 bytes, in order.
    client.feed({"type": "http.request", "body": b"aa", "more_body": True})
    client.feed({"type": "http.request", "body": b"aabbbbc", "more_body": True})
    request = await receive(layer, "http.request")
    assert (request["body"], request["more_body"]) == (b"aaaa", True)
    client.feed({"type": "http.request", "body": b"c", "more_body": False})
    chunks = [await receive(layer, request["request_channel"]) for _ in range(2)]
    assert [(c["type"], c["body"], c["more_body"]) for c in chunks] == [
        ("http.request", b"bbbb", True),
        ("http.request", b"cc", False),
    ]
    await layer.send(request["reply_channel"], {"type": "http.response.start", "status": 200})
    await layer.send(request["reply_channel"], {"type": "http.response.body"})
    await client.finished()
    assert app.stats.http_body_chunks == 2


async def test_one_large_read_is_split_into_chunks(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer, body_chunk_bytes=4)
    client = Client(app, http_scope(method="POST"))
    client.feed({"type": "http.request", "body": b"0123456789", "more_body": False})
    request = await receive(layer, "http.request")
    assert (request["body"], request["more_body"]) == (b"0123", True)
    rest = [await receive(layer, request["request_channel"]) for _ in range(2)]
    assert [(c["body"], c["more_body"]) for c in rest] == [(b"4567", True), (b"89", False)]
    await layer.send(request["reply_channel"], {"type": "http.response.start", "status": 204})
    await layer.send(request["reply_channel"], {"type": "http.response.body"})
    await client.finished()


async def test_declared_body_over_the_limit_is_413_without_forwarding(
    layer: BaseChannelLayer,
) -> None:
    app = ForwardingApp(layer, max_body_bytes=5)
    headers = [(b"host", b"x"), (b"Content-Length", b"6")]
    client = Client(app, http_scope(method="POST", headers=headers))
    start, body = await client.sent_count(2)
    await client.finished()
    assert start["status"] == 413 and body["body"]
    assert app.stats.http_413 == 1 and app.stats.http_requests == 0
    await nothing_on(layer, "http.request")


async def test_streamed_body_over_the_limit_is_413_and_the_worker_told(
    layer: BaseChannelLayer,
) -> None:
    app = ForwardingApp(layer, body_chunk_bytes=4, max_body_bytes=6)
    client = Client(app, http_scope(method="POST"))
    client.feed({"type": "http.request", "body": b"abcd", "more_body": True})
    request = await receive(layer, "http.request")
    client.feed({"type": "http.request", "body": b"efgh", "more_body": True})
    start, _ = await client.sent_count(2)
    assert start["status"] == 413
    await client.finished()
    assert (await receive(layer, request["request_channel"]))["type"] == "http.disconnect"
    assert app.stats.http_413 == 1 and app.stats.http_disconnects == 1


async def test_client_gone_before_the_response_sends_http_disconnect(
    layer: BaseChannelLayer,
) -> None:
    app = ForwardingApp(layer)
    client = Client(app, http_scope())
    client.feed({"type": "http.request", "body": b"", "more_body": False})
    request = await receive(layer, "http.request")
    client.feed({"type": "http.disconnect"})
    await client.finished()
    assert (await receive(layer, request["request_channel"])) == {"type": "http.disconnect"}
    assert client.sent == []
    assert app.stats.http_disconnects == 1


async def test_client_gone_after_the_response_started(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer)
    client = Client(app, http_scope())
    client.feed({"type": "http.request"})
    request = await receive(layer, "http.request")
    await layer.send(request["reply_channel"], {"type": "http.response.start", "status": 200})
    await client.sent_count(1)
    client.feed({"type": "http.disconnect"})
    await client.finished()
    assert (await receive(layer, request["request_channel"]))["type"] == "http.disconnect"


async def test_abort_from_the_worker_leaves_the_response_unfinished(
    layer: BaseChannelLayer,
) -> None:
    app = ForwardingApp(layer)
    client = Client(app, http_scope())
    client.feed({"type": "http.request"})
    reply = (await receive(layer, "http.request"))["reply_channel"]
    await layer.send(reply, {"type": "http.response.start", "status": 200})
    await layer.send(reply, {"type": "http.response.body", "body": b"half", "more_body": True})
    await layer.send(reply, {"type": "towpath.abort"})
    await client.finished()  # the app returned mid-body: the server resets the connection
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]
    assert client.sent[-1]["more_body"] is True
    assert app.stats.http_aborts == 1


async def test_streaming_response_outlives_the_http_timeout(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer, http_timeout_seconds=0.05)
    client = Client(app, http_scope("/events"))
    client.feed({"type": "http.request"})
    request = await receive(layer, "http.request")
    reply = request["reply_channel"]
    await layer.send(reply, {"type": "http.response.start", "status": 200})
    for n in range(3):
        await layer.send(
            reply, {"type": "http.response.body", "body": b"%d" % n, "more_body": True}
        )
    await client.sent_count(4)
    # The timeout is what is tested: after the start it must no longer apply.
    await asyncio.sleep(0.1)
    await layer.send(reply, {"type": "http.response.body", "body": b"end"})
    sent = await client.sent_count(5)
    await client.finished()
    assert [m.get("body") for m in sent[1:]] == [b"0", b"1", b"2", b"end"]
    assert app.stats.http_503_timeout == 0


async def test_trailers_end_the_response(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer)
    client = Client(app, http_scope())
    client.feed({"type": "http.request"})
    reply = (await receive(layer, "http.request"))["reply_channel"]
    await layer.send(reply, {"type": "http.response.start", "status": 200, "trailers": True})
    await layer.send(reply, {"type": "http.response.body", "body": b"x"})
    await client.sent_count(2)
    assert not client.task.done()
    await layer.send(reply, {"type": "http.response.trailers", "headers": [[b"x-t", b"1"]]})
    await client.finished()
    assert client.sent[-1]["type"] == "http.response.trailers"


async def test_full_http_request_channel_is_503(layer_factory: LayerFactory) -> None:
    layer = await layer_factory(capacity=1)
    await layer.send("http.request", {"type": "http.request", "filler": True})
    app = ForwardingApp(layer)
    client = Client(app, http_scope())
    client.feed({"type": "http.request"})
    start, body = await client.sent_count(2)
    await client.finished()
    assert start["status"] == 503 and b"overloaded" in body["body"]
    assert app.stats.http_503_full == 1 and app.stats.http_requests == 0


async def test_full_request_channel_is_back_pressure(layer_factory: LayerFactory) -> None:
    layer = await layer_factory(channel_capacity={"http.request.body.*": 1})
    app = ForwardingApp(layer, body_chunk_bytes=2)
    client = Client(app, http_scope(method="POST"))
    client.feed({"type": "http.request", "body": b"aabbccdd", "more_body": False})
    request = await receive(layer, "http.request")
    # Three chunks for a channel that holds one: each waits until the worker took the last.
    chunks = [await receive(layer, request["request_channel"]) for _ in range(3)]
    assert [c["body"] for c in chunks] == [b"bb", b"cc", b"dd"]
    await layer.send(request["reply_channel"], {"type": "http.response.start", "status": 200})
    await layer.send(request["reply_channel"], {"type": "http.response.body"})
    await client.finished()
    assert app.stats.http_body_chunks == 3


async def test_unreachable_layer_is_503() -> None:
    from towpath.layers.base import LayerConnectionError

    class DownLayer(InMemoryChannelLayer):
        async def send(self, channel: str, message: Message) -> None:
            raise LayerConnectionError("redis is down")

    app = ForwardingApp(DownLayer())
    client = Client(app, http_scope())
    client.feed({"type": "http.request"})
    start, body = await client.sent_count(2)
    await client.finished()
    assert start["status"] == 503 and b"unreachable" in body["body"]
    ws = Client(app, ws_scope())
    ws.feed({"type": "websocket.connect"})
    start, _ = await ws.sent_count(2)
    await ws.finished()
    assert start["type"] == "websocket.http.response.start" and start["status"] == 503
    assert app.stats.http_503_layer == 1 and app.stats.websocket_503_layer == 1


async def test_no_response_in_time_is_503(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer, http_timeout_seconds=0.05)  # the timeout is the thing tested
    client = Client(app, http_scope())
    client.feed({"type": "http.request"})
    request = await receive(layer, "http.request")
    start, _ = await client.sent_count(2)
    await client.finished()
    assert start["status"] == 503
    assert app.stats.http_503_timeout == 1
    assert (await receive(layer, request["request_channel"]))["type"] == "http.disconnect"


async def test_invalid_reply_is_502(layer: BaseChannelLayer) -> None:
    from towpath.interface.protocol.base import ASGIProtocolError

    app = ForwardingApp(layer)
    client = Client(app, http_scope())

    async def strict_send(message: Message) -> None:
        if message["type"] == "http.response.body" and not client.sent:
            raise ASGIProtocolError("body before start")
        await Client._send(client, message)

    client.task.cancel()
    client.task = asyncio.get_running_loop().create_task(
        app(http_scope(), client._receive, strict_send)
    )
    client.feed({"type": "http.request"})
    reply = (await receive(layer, "http.request"))["reply_channel"]
    await layer.send(reply, {"type": "http.response.body", "body": b"?"})
    start, _ = await client.sent_count(2)
    await client.finished()
    assert start["status"] == 502 and app.stats.http_502 == 1


async def test_long_poll_answered_by_group_send_without_a_worker(
    layer: BaseChannelLayer,
) -> None:
    app = ForwardingApp(layer)
    clients = [Client(app, http_scope("/poll")) for _ in range(3)]
    for client in clients:
        client.feed({"type": "http.request"})
    # The "worker" only parks each request's reply channel in a group and answers nothing.
    for _ in clients:
        request = await receive(layer, "http.request")
        await layer.group_add("pollers", request["reply_channel"])
    # Any process, later: one group_send per event answers every waiting client.
    await layer.group_send("pollers", {"type": "http.response.start", "status": 200})
    await layer.group_send("pollers", {"type": "http.response.body", "body": b"news"})
    for client in clients:
        start, body = await client.sent_count(2)
        assert start["status"] == 200 and body["body"] == b"news"
        await client.finished()


# -- WebSocket -------------------------------------------------------------------------------


async def ws_connect(layer: BaseChannelLayer, app: ForwardingApp) -> tuple[Client, Message]:
    client = Client(app, ws_scope())
    client.feed({"type": "websocket.connect"})
    connect = await receive(layer, "websocket.connect")
    return client, connect


async def test_websocket_accept_echo_and_worker_close(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer)
    client, connect = await ws_connect(layer, app)
    assert connect["type"] == "websocket.connect" and connect["order"] == 0
    assert connect["scope"]["subprotocols"] == ["chat", "superchat"]
    assert connect["scope"]["extensions"] == {"websocket.http.response": {}}
    reply = connect["reply_channel"]
    await layer.send(reply, {"type": "websocket.accept", "subprotocol": "chat"})
    assert (await client.sent_count(1))[0] == {"type": "websocket.accept", "subprotocol": "chat"}

    client.feed({"type": "websocket.receive", "text": "hello"})
    client.feed({"type": "websocket.receive", "bytes": b"\x00\x01"})
    first = await receive(layer, "websocket.receive")
    second = await receive(layer, "websocket.receive")
    assert first == {
        "type": "websocket.receive",
        "reply_channel": reply,
        "text": "hello",
        "order": 1,
    }
    assert second["bytes"] == b"\x00\x01" and second["order"] == 2 and "text" not in second
    await layer.send(reply, {"type": "websocket.send", "text": first["text"]})
    assert (await client.sent_count(2))[1] == {"type": "websocket.send", "text": "hello"}

    await layer.send(reply, {"type": "websocket.close", "code": 4000})
    assert (await client.sent_count(3))[2] == {"type": "websocket.close", "code": 4000}
    await client.finished()
    disconnect = await receive(layer, "websocket.disconnect")
    assert disconnect == {
        "type": "websocket.disconnect",
        "reply_channel": reply,
        "code": 4000,
        "order": 3,
    }
    assert app.stats.websocket_messages == 2 and app.stats.websocket_disconnects == 1


async def test_websocket_client_closes(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer)
    client, connect = await ws_connect(layer, app)
    await layer.send(connect["reply_channel"], {"type": "websocket.accept"})
    await client.sent_count(1)
    client.feed({"type": "websocket.disconnect", "code": 1001, "reason": "bye"})
    await client.finished()
    disconnect = await receive(layer, "websocket.disconnect")
    assert (disconnect["code"], disconnect["reason"], disconnect["order"]) == (1001, "bye", 1)
    await nothing_on(layer, "websocket.disconnect")  # exactly one


async def test_websocket_denial_response(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer)
    client, connect = await ws_connect(layer, app)
    reply = connect["reply_channel"]
    await layer.send(reply, {"type": "websocket.http.response.start", "status": 403})
    await layer.send(reply, {"type": "websocket.http.response.body", "body": b"no"})
    start, body = await client.sent_count(2)
    await client.finished()
    assert start["status"] == 403 and body["body"] == b"no"
    assert (await receive(layer, "websocket.disconnect"))["code"] == 1006


async def test_websocket_close_before_accept_rejects(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer)
    client, connect = await ws_connect(layer, app)
    await layer.send(connect["reply_channel"], {"type": "websocket.close"})
    assert (await client.sent_count(1))[0]["type"] == "websocket.close"
    await client.finished()
    assert (await receive(layer, "websocket.disconnect"))["code"] == 1006


async def test_full_websocket_connect_is_denied_503(layer_factory: LayerFactory) -> None:
    layer = await layer_factory(capacity=1)
    await layer.send("websocket.connect", {"type": "filler"})
    app = ForwardingApp(layer)
    client = Client(app, ws_scope())
    client.feed({"type": "websocket.connect"})
    start, body = await client.sent_count(2)
    await client.finished()
    assert start["type"] == "websocket.http.response.start" and start["status"] == 503
    assert body["type"] == "websocket.http.response.body"
    assert app.stats.websocket_503_full == 1 and app.stats.websocket_connects == 0


async def test_websocket_connect_unanswered_is_denied_503(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer, http_timeout_seconds=0.05)  # the timeout is the thing tested
    client, _ = await ws_connect(layer, app)
    start, _ = await client.sent_count(2)
    await client.finished()
    assert start["status"] == 503 and app.stats.websocket_503_timeout == 1
    disconnect = await receive(layer, "websocket.disconnect")
    assert (disconnect["code"], disconnect["order"]) == (1006, 1)


async def test_accepted_websocket_has_no_timeout(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer, http_timeout_seconds=0.05)
    client, connect = await ws_connect(layer, app)
    await layer.send(connect["reply_channel"], {"type": "websocket.accept"})
    await client.sent_count(1)
    await asyncio.sleep(0.1)  # the timeout is the thing tested: it must not fire
    assert not client.task.done()
    client.feed({"type": "websocket.disconnect", "code": 1000})
    await client.finished()
    assert app.stats.websocket_503_timeout == 0


async def test_full_websocket_receive_closes_1013(layer_factory: LayerFactory) -> None:
    layer = await layer_factory(channel_capacity={"websocket.receive": 1})
    app = ForwardingApp(layer)
    client, connect = await ws_connect(layer, app)
    await layer.send(connect["reply_channel"], {"type": "websocket.accept"})
    await client.sent_count(1)
    client.feed({"type": "websocket.receive", "text": "one"})  # fills the channel
    client.feed({"type": "websocket.receive", "text": "two"})  # refused: close 1013
    close = (await client.sent_count(2))[1]
    assert close == {"type": "websocket.close", "code": 1013}
    await client.finished()
    disconnect = await receive(layer, "websocket.disconnect")
    assert disconnect["code"] == 1013 and disconnect["order"] == 3
    assert app.stats.websocket_1013 == 1


# -- lifespan and settings -------------------------------------------------------------------


async def test_lifespan_startup_and_shutdown_closes_the_layer() -> None:
    closed = asyncio.Event()

    class Layer(InMemoryChannelLayer):
        async def close(self) -> None:
            closed.set()
            await super().close()

    app = ForwardingApp(Layer())
    client = Client(app, {"type": "lifespan", "asgi": {"version": "3.0"}})
    client.inbox.put_nowait({"type": "lifespan.startup"})
    assert (await client.sent_count(1))[0]["type"] == "lifespan.startup.complete"
    assert not closed.is_set()
    client.inbox.put_nowait({"type": "lifespan.shutdown"})
    assert (await client.sent_count(2))[1]["type"] == "lifespan.shutdown.complete"
    await client.finished()
    assert closed.is_set()


def test_bad_arguments() -> None:
    with pytest.raises(InvalidChannelLayerError, match="not a channel layer"):
        ForwardingApp(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="body_chunk_bytes"):
        ForwardingApp(InMemoryChannelLayer(), body_chunk_bytes=0)
    with pytest.raises(ValueError, match="http_timeout_seconds"):
        ForwardingApp(InMemoryChannelLayer(), http_timeout_seconds=0)


MEMORY_LAYER = InMemoryChannelLayer()


@pytest.fixture
def settings_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "fwd_settings.py").write_text(
        "CHANNEL_LAYERS = {\n"
        '    "default": {"BACKEND": "towpath.layers.InMemoryChannelLayer"},\n'
        '    "big": {"BACKEND": "towpath.layers.InMemoryChannelLayer",'
        ' "CONFIG": {"capacity": 7}},\n'
        "}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield_name = "fwd_settings"
    monkeypatch.delitem(sys.modules, yield_name, raising=False)
    return yield_name


def test_settings_refuse_the_in_memory_layer(settings_module: str) -> None:
    with pytest.raises(InvalidChannelLayerError, match="runserver"):
        forwarding_app_from_settings(settings_module)


def test_settings_module_and_alias(settings_module: str) -> None:
    app = forwarding_app_from_settings(
        settings_module, "big", allow_in_memory=True, http_timeout_seconds=3
    )
    assert isinstance(app.layer, InMemoryChannelLayer) and app.layer.capacity == 7
    assert app.http_timeout_seconds == 3
    with pytest.raises(InvalidChannelLayerError, match="no 'nope' entry"):
        forwarding_app_from_settings(settings_module, "nope", allow_in_memory=True)


def test_settings_from_the_environment(
    settings_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWPATH_SETTINGS", settings_module)
    assert forwarding_app_from_settings(None, allow_in_memory=True).layer.capacity == 100


def test_settings_naming_a_layer_object() -> None:
    app = forwarding_app_from_settings(f"{__name__}:MEMORY_LAYER", allow_in_memory=True)
    assert app.layer is MEMORY_LAYER
    with pytest.raises(InvalidChannelLayerError, match="class InMemoryChannelLayer"):
        forwarding_app_from_settings("towpath.layers:InMemoryChannelLayer")
    with pytest.raises(InvalidChannelLayerError, match="not a channel layer"):
        forwarding_app_from_settings(f"{__name__}:WAIT")


async def test_redis_layer_from_settings(tmp_path: Path, redis_server: Any) -> None:
    path = tmp_path / "redis_settings.py"
    path.write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.redis.RedisChannelLayer',"
        f" 'CONFIG': {{'hosts': [{redis_server.url!r}]}}}}}}\n"
    )
    app = forwarding_app_from_settings(str(path))
    try:
        client = Client(app, http_scope())
        client.feed({"type": "http.request", "body": b"x"})
        request = await receive(app.layer, "http.request")
        await app.layer.send(
            request["reply_channel"], {"type": "http.response.start", "status": 200}
        )
        await app.layer.send(request["reply_channel"], {"type": "http.response.body"})
        await client.finished()
    finally:
        await app.layer.close()


# -- end to end: a real server, real clients, a worker coroutine -----------------------------


async def test_end_to_end_with_httpx_and_websockets(layer: BaseChannelLayer) -> None:
    httpx = pytest.importorskip("httpx")
    websockets_client = pytest.importorskip("websockets.asyncio.client")
    from towpath.testing.server import running_server

    async def worker() -> None:
        """Answers HTTP with the body it read, upper-cased; echoes WebSocket text."""
        while True:
            channel, message = await layer.receive_many(
                ["http.request", "websocket.connect", "websocket.receive"]
            )
            reply = message["reply_channel"]
            if channel == "http.request":
                body = message["body"]
                more = message["more_body"]
                while more:
                    chunk = await layer.receive(message["request_channel"])
                    body += chunk["body"]
                    more = chunk["more_body"]
                start = {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [[b"content-type", b"text/plain"]],
                }
                await layer.send(reply, start)
                path = message["scope"]["path"].encode()
                await layer.send(reply, {"type": "http.response.body", "body": path + body.upper()})
            elif channel == "websocket.connect":
                await layer.send(reply, {"type": "websocket.accept", "subprotocol": "chat"})
            else:
                await layer.send(reply, {"type": "websocket.send", "text": message["text"] * 2})

    app = ForwardingApp(layer, body_chunk_bytes=1024)
    worker_task = asyncio.get_running_loop().create_task(worker())
    try:
        async with running_server(app) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=WAIT) as http:
                response = await http.get("/hi")
                assert (response.status_code, response.text) == (200, "/hi")
                big = b"x" * 5000
                response = await http.post("/up", content=big)
                assert response.content == b"/up" + big.upper()
            async with websockets_client.connect(
                server.ws_url + "/ws", subprotocols=["chat"], open_timeout=WAIT
            ) as ws:
                assert ws.subprotocol == "chat"
                await ws.send("ab")
                async with asyncio.timeout(WAIT):
                    assert await ws.recv() == "abab"
            disconnect = await receive(layer, "websocket.disconnect")
            assert disconnect["code"] == 1000 and disconnect["order"] == 2
    finally:
        worker_task.cancel()
    assert app.stats.http_requests == 2 and app.stats.http_body_chunks == 4


# -- connection affinity: the accept's owner ---------------------------------------------------


async def test_accept_with_owner_sends_later_events_to_the_owner(layer: BaseChannelLayer) -> None:
    app = ForwardingApp(layer)
    client, connect = await ws_connect(layer, app)
    reply = connect["reply_channel"]
    owner = await layer.new_channel("worker")
    await layer.send(reply, {"type": "websocket.accept", "subprotocol": None, "owner": owner})
    # the owner key is towpath's: it never reaches the ASGI server
    assert (await client.sent_count(1))[0] == {"type": "websocket.accept", "subprotocol": None}
    client.feed({"type": "websocket.receive", "text": "mine"})
    event = await receive(layer, owner)
    assert (event["type"], event["text"], event["order"]) == ("websocket.receive", "mine", 1)
    client.feed({"type": "websocket.disconnect", "code": 1000})
    await client.finished()
    disconnect = await receive(layer, owner)
    assert (disconnect["type"], disconnect["order"]) == ("websocket.disconnect", 2)
    await nothing_on(layer, "websocket.receive")
    await nothing_on(layer, "websocket.disconnect")


@pytest.mark.parametrize("owner", ["websocket.receive", "bad name!?", 42])
async def test_an_owner_that_is_not_a_process_channel_is_ignored(
    layer: BaseChannelLayer, owner: object
) -> None:
    app = ForwardingApp(layer)
    client, connect = await ws_connect(layer, app)
    await layer.send(connect["reply_channel"], {"type": "websocket.accept", "owner": owner})
    assert (await client.sent_count(1))[0] == {"type": "websocket.accept"}
    client.feed({"type": "websocket.receive", "text": "shared"})
    assert (await receive(layer, "websocket.receive"))["text"] == "shared"
    client.feed({"type": "websocket.disconnect", "code": 1000})
    await client.finished()
    assert (await receive(layer, "websocket.disconnect"))["code"] == 1000
