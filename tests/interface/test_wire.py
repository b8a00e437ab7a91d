"""``towpath.wire``, the code half of docs/protocol.md: the scope both ways, and the message
``TypedDict``s checked against what the forwarding app really sends on the in-memory layer."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.waiting import WAIT
from towpath import wire
from towpath.interface.forwarding import ForwardingApp
from towpath.layers.memory import InMemoryChannelLayer

Message = dict[str, Any]


def http_scope() -> Message:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [(b"host", b"example.com")],
        "extensions": {"http.response.trailers": {}, "http.response.pathsend": {}},
        "state": {"db": object()},
    }


def assert_shape(message: Message, shape: Any) -> None:
    """``message`` is what ``shape`` (a message TypedDict) says: its ``type``, every required
    key, and no key the TypedDict does not name."""
    keys = set(message)
    assert shape.__required_keys__ <= keys, shape.__required_keys__ - keys
    assert keys <= shape.__required_keys__ | shape.__optional_keys__, (
        keys - shape.__required_keys__ - shape.__optional_keys__
    )
    assert (message["type"],) == shape.__annotations__["type"].__args__


# -- the scope ----------------------------------------------------------------------------------


def test_scope_to_wire_drops_what_stays_in_the_server() -> None:
    scope = http_scope()
    before = dict(scope)
    wired = wire.scope_to_wire(scope)
    assert "state" not in wired
    assert wired["extensions"] == {"http.response.trailers": {}}  # pathsend stays here
    assert wired["client"] == ("127.0.0.1", 50000)
    assert {key: value for key, value in wired.items() if key != "extensions"} == {
        key: value for key, value in before.items() if key not in ("extensions", "state")
    }
    assert scope == before  # a new dict: the server's scope is untouched


def test_scope_to_wire_leaves_out_extensions_a_worker_cannot_use() -> None:
    scope = {**http_scope(), "extensions": {"tls": {}}}
    assert "extensions" not in wire.scope_to_wire(scope)
    assert wire.wire_extensions(None) == {}
    assert wire.wire_extensions({"websocket.http.response": {}, "tls": {}}) == {
        "websocket.http.response": {}
    }


def test_scope_to_wire_takes_extensions_worked_out_already() -> None:
    relayed = {"http.response.trailers": {}}
    assert wire.scope_to_wire(http_scope(), relayed)["extensions"] is relayed
    assert "extensions" not in wire.scope_to_wire(http_scope(), {})


def test_wire_to_scope_gives_an_app_tuples_and_its_own_state() -> None:
    arrived = {"type": "http", "client": ["10.0.0.1", 4000], "server": ["10.0.0.2", 80]}
    state = {"db": "pool"}
    scope = wire.wire_to_scope(arrived, state)
    assert scope is arrived  # in place
    assert scope["client"] == ("10.0.0.1", 4000)
    assert scope["server"] == ("10.0.0.2", 80)
    assert scope["state"] == state
    assert scope["state"] is not state  # each app instance its copy
    assert "state" not in wire.wire_to_scope({"type": "http", "client": None}, None)


# -- the messages -------------------------------------------------------------------------------


async def _received(layer: InMemoryChannelLayer, channel: str) -> Message:
    async with asyncio.timeout(WAIT):
        return await layer.receive(channel)


async def test_http_request_message_is_as_documented() -> None:
    layer = InMemoryChannelLayer()
    app = ForwardingApp(layer, http_timeout_seconds=WAIT)
    events: asyncio.Queue[Message] = asyncio.Queue()
    events.put_nowait({"type": "http.request", "body": b"hi", "more_body": False})
    sent: list[Message] = []

    async def send(event: Message) -> None:
        sent.append(event)

    task = asyncio.get_running_loop().create_task(app(http_scope(), events.get, send))
    request = await _received(layer, wire.HTTP_REQUEST_CHANNEL)
    assert_shape(request, wire.HTTPRequestMessage)
    assert request["request_channel"].startswith(wire.REQUEST_BODY_PREFIX)
    # across the layer tuples become arrays; wire_to_scope makes client/server tuples again
    scope = wire.wire_to_scope(request["scope"], None)
    assert set(scope) == set(wire.scope_to_wire(http_scope()))
    assert (scope["client"], scope["server"]) == (("127.0.0.1", 50000), ("127.0.0.1", 8000))
    await layer.send(request["reply_channel"], {"type": "http.response.start", "status": 204})
    await layer.send(request["reply_channel"], {"type": "http.response.body"})
    async with asyncio.timeout(WAIT):
        await task
    assert [event["type"] for event in sent] == ["http.response.start", "http.response.body"]
    await layer.close()


async def test_websocket_and_heartbeat_messages_are_as_documented() -> None:
    layer = InMemoryChannelLayer()
    app = ForwardingApp(layer, http_timeout_seconds=WAIT)
    events: asyncio.Queue[Message] = asyncio.Queue()
    events.put_nowait({"type": "websocket.connect"})
    accepted = asyncio.Event()

    async def send(event: Message) -> None:
        if event["type"] == "websocket.accept":
            accepted.set()

    scope = {**http_scope(), "type": "websocket", "scheme": "ws", "subprotocols": []}
    task = asyncio.get_running_loop().create_task(app(scope, events.get, send))
    connect = await _received(layer, wire.WEBSOCKET_CONNECT_CHANNEL)
    assert_shape(connect, wire.WebSocketConnectMessage)
    reply = connect["reply_channel"]
    await layer.send(reply, {"type": "websocket.accept"})
    async with asyncio.timeout(WAIT):
        await accepted.wait()

    worker = await layer.new_channel("worker")
    heartbeat = {"type": wire.HEARTBEAT_EVENT, "worker": worker, "connections": [reply]}
    assert_shape(heartbeat, wire.HeartbeatMessage)
    await layer.send(connect["control_channel"], heartbeat)
    ack = await _received(layer, worker)
    assert_shape(ack, wire.HeartbeatAckMessage)
    assert ack["type"] == wire.HEARTBEAT_ACK_EVENT

    events.put_nowait({"type": "websocket.receive", "text": "hello"})
    frame = await _received(layer, wire.WEBSOCKET_RECEIVE_CHANNEL)
    assert_shape(frame, wire.WebSocketReceiveMessage)
    assert (frame["order"], frame["text"]) == (1, "hello")
    events.put_nowait({"type": "websocket.disconnect", "code": 1000, "reason": "bye"})
    disconnect = await _received(layer, wire.WEBSOCKET_DISCONNECT_CHANNEL)
    assert_shape(disconnect, wire.WebSocketDisconnectMessage)
    assert (disconnect["code"], disconnect["order"], disconnect["reason"]) == (1000, 2, "bye")
    async with asyncio.timeout(WAIT):
        await task
    await layer.close()
