"""A consumer that raises: the worker's log names the message it was handling when it raised
and shows the consumer's own frame in the traceback, for every kind of consumer.

One test runs real processes (``towpath serve`` + ``towpath runworker`` on the IPC layer, a
real WebSocket client); the others run the worker in process on the in-memory layer and feed
it the wire messages an interface server would send."""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.support.commands import ENV, runworker
from tests.support.waiting import WAIT
from towpath.consumers import AsyncHttpConsumer, AsyncJsonWebsocketConsumer
from towpath.layers.ipc.store import default_directory
from towpath.layers.memory import InMemoryChannelLayer
from towpath.layers.registry import unregister_channel_layer
from towpath.routing import asgi_app, route
from towpath.testing.processes import towpath_serve
from towpath.worker import Worker

Message = dict[str, Any]
THIS_FILE = Path(__file__).name


@pytest.fixture
def own_ipc_prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The processes of one test share an IPC store of their own, removed after."""
    prefix = f"t{secrets.token_hex(6)}"
    monkeypatch.delenv("TOWPATH_SETTINGS", raising=False)
    monkeypatch.setenv("TOWPATH_IPC_PREFIX", prefix)
    yield
    shutil.rmtree(Path(default_directory()) / f"towpath-ipc-{prefix}", ignore_errors=True)


@pytest.mark.slow
@pytest.mark.usefixtures("own_ipc_prefix")
async def test_a_runworker_names_the_receive_that_failed_and_the_consumers_frame(
    tmp_path: Path,
) -> None:
    async with (
        towpath_serve("--port", "0", cwd=tmp_path, env=ENV) as served,
        runworker("--routing", "tests.support.workerapp:routes", tag="E", cwd=tmp_path) as worker,
    ):
        async with connect(served.ws_url + "/raise/", open_timeout=WAIT) as socket:
            await socket.send("hello")
            async with asyncio.timeout(WAIT):
                await socket.wait_closed()
            assert socket.close_code == 1011
        async with asyncio.timeout(WAIT):
            line = await worker.wait_for_stderr("Consumer RaisingConsumer.as_asgi() failed")
        assert "failed on a 'websocket.receive' message of WebSocket /raise/" in line
        log = worker.output()
        assert "RuntimeError: raising consumer got 'hello'" in log
        # the consumer's own frame: its file, its method
        assert 'workerapp.py", line' in log and ", in receive\n" in log


# -- every kind of consumer, in process ------------------------------------------------------


class JsonRoom(AsyncJsonWebsocketConsumer):
    groups = ["room"]

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content == "to the group":
            await self.channel_layer.group_send("room", {"type": "room.say"})
            return
        raise RuntimeError("json_receive_failed")

    async def room_say(self, event: Message) -> None:
        raise KeyError("group_handler_failed")


class Page(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        raise RuntimeError("http_handle_failed")


async def plain_function(message: Message) -> None:
    raise RuntimeError("plain_function_failed")


def sync_function(message: Message) -> None:
    raise RuntimeError("sync_function_failed")


async def hosted_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await receive()  # the client's frame
    raise RuntimeError("hosted_app_failed")


ROUTES = [
    route("websocket.connect", JsonRoom, path=r"^/json$"),
    route("websocket.connect", asgi_app(hosted_app), path=r"^/app$"),
    route("http.request", Page.as_asgi(), path=r"^/page$"),
    route("http.request", plain_function, path=r"^/plain$"),
    route("http.request", sync_function, path=r"^/sync$"),
]


@pytest.fixture
async def worker() -> AsyncIterator[tuple[InMemoryChannelLayer, Worker]]:
    layer = InMemoryChannelLayer()
    running = Worker(layer, ROUTES)
    task = asyncio.get_running_loop().create_task(running.run())
    async with asyncio.timeout(WAIT):
        await running.started()
    yield layer, running
    running.stop()
    async with asyncio.timeout(WAIT):
        await task
    unregister_channel_layer("default")
    await layer.close()


async def websocket_frame(layer: InMemoryChannelLayer, path: str, text: str) -> Message:
    """Connect to ``path``, send one frame once accepted; the worker's next answer."""
    reply = await layer.new_channel("interface")
    scope = {"type": "websocket", "path": path, "headers": [], "subprotocols": []}
    connect_message = {"type": "websocket.connect", "reply_channel": reply, "scope": scope}
    await layer.send("websocket.connect", {**connect_message, "order": 0})
    async with asyncio.timeout(WAIT):
        accept = await layer.receive(reply)
        assert accept["type"] == "websocket.accept"
        frame = {"type": "websocket.receive", "reply_channel": reply, "order": 1, "text": text}
        await layer.send(accept["owner"], frame)
        return await layer.receive(reply)


async def http_request(layer: InMemoryChannelLayer, path: str) -> Message:
    reply = await layer.new_channel("interface")
    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    request = {"type": "http.request", "reply_channel": reply, "scope": scope, "body": b""}
    await layer.send("http.request", {**request, "more_body": False})
    async with asyncio.timeout(WAIT):
        return await layer.receive(reply)


def failure(caplog: pytest.LogCaptureFixture) -> str:
    (record,) = [r for r in caplog.records if "failed on a" in r.getMessage()]
    return record.getMessage()


@pytest.mark.parametrize(
    ("path", "text", "kind", "frame"),
    [
        ("/json", '"x"', "websocket.receive", "receive_json"),
        ("/json", '"to the group"', "room.say", "room_say"),
        ("/app", "x", "websocket.receive", "hosted_app"),
    ],
)
async def test_websocket_consumers_name_the_message_they_failed_on(
    worker: tuple[InMemoryChannelLayer, Worker],
    caplog: pytest.LogCaptureFixture,
    path: str,
    text: str,
    kind: str,
    frame: str,
) -> None:
    layer, _ = worker
    with caplog.at_level(logging.ERROR, logger="towpath.worker"):
        answer = await websocket_frame(layer, path, text)
    assert answer == {"type": "websocket.close", "code": 1011}
    logged = failure(caplog)
    assert f"failed on a {kind!r} message of WebSocket {path}" in logged
    assert f'{THIS_FILE}", line' in logged and f", in {frame}\n" in logged


@pytest.mark.parametrize(
    ("path", "frame"),
    [("/page", "handle"), ("/plain", "plain_function"), ("/sync", "sync_function")],
)
async def test_http_consumers_name_the_request_and_their_frame(
    worker: tuple[InMemoryChannelLayer, Worker],
    caplog: pytest.LogCaptureFixture,
    path: str,
    frame: str,
) -> None:
    layer, _ = worker
    with caplog.at_level(logging.ERROR, logger="towpath.worker"):
        answer = await http_request(layer, path)
    assert answer["status"] == 500
    logged = failure(caplog)
    assert f"failed on a 'http.request' message from channel http.request (GET {path})" in logged
    assert f'{THIS_FILE}", line' in logged and f", in {frame}\n" in logged


async def test_a_consumer_class_notes_the_message_on_the_exception() -> None:
    """Whoever logs the exception (another server, the user's own code) sees the message."""
    consumer = JsonRoom()
    consumer.scope = {"type": "websocket"}
    with pytest.raises(KeyError) as raised:
        await consumer.dispatch({"type": "room.say"})
    assert raised.value.__notes__ == ["(raised by JsonRoom handling a 'room.say' message)"]
