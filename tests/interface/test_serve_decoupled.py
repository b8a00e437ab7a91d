"""Decoupled mode end to end, with real processes: a real ``redis-server``, ``towpath serve
--settings`` as a subprocess on port 0, real clients (curl, httpx, ``websockets``), and the
worker played by coroutines in this process on the Redis layer (``docs/protocol.md``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.typing import Subprotocol

from tests.support.waiting import WAIT
from towpath.layers.redis import RedisChannelLayer
from towpath.testing.processes import ServeProcess, towpath_serve
from towpath.testing.services import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

Message = dict[str, Any]
#: bound on every wait of a test (the whole file runs in seconds)
KIB = 1024
MIB = 1024 * KIB


# -- fixtures and helpers ----------------------------------------------------------------------


def write_settings(directory: Path, url: str, **config: Any) -> Path:
    """A settings module whose default layer is the Redis layer on ``url``."""
    path = directory / "decoupled_settings.py"
    layer_config = {"hosts": [url], **config}
    path.write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.redis.RedisChannelLayer', "
        f"'CONFIG': {layer_config!r}}}}}\n"
    )
    return path


ServeFactory = Callable[..., Any]


@pytest.fixture
def serve(tmp_path: Path, redis_server: RedisServer) -> ServeFactory:
    """``serve(*args, **layer_config)``: ``towpath serve --settings S --port 0 *args``."""

    def start(*args: str, **layer_config: Any) -> Any:
        settings = write_settings(tmp_path, redis_server.url, **layer_config)
        return towpath_serve("--settings", str(settings), "--port", "0", *args, cwd=tmp_path)

    return start


@pytest.fixture
async def layer(redis_server: RedisServer) -> AsyncIterator[RedisChannelLayer]:
    """The workers' layer: this process, same Redis."""
    made = RedisChannelLayer(hosts=[redis_server.url])
    yield made
    await made.close()


async def respond(
    layer: RedisChannelLayer,
    reply_channel: str,
    body: bytes,
    status: int = 200,
    headers: list[list[bytes]] | None = None,
) -> None:
    await layer.send(
        reply_channel,
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers or [[b"content-type", b"text/plain"]],
        },
    )
    await layer.send(reply_channel, {"type": "http.response.body", "body": body})


async def stop(served: ServeProcess) -> int:
    served.send_signal(signal.SIGTERM)
    return await served.wait()


# -- HTTP --------------------------------------------------------------------------------------


async def test_get_answered_by_a_worker(serve: ServeFactory, layer: RedisChannelLayer) -> None:
    async def worker() -> Message:
        message = await layer.receive("http.request")
        scope = message["scope"]
        text = f"{scope['method']} {scope['path']} {scope['query_string'].decode()}"
        await respond(layer, message["reply_channel"], text.encode(), status=201)
        return message

    async with serve() as served, asyncio.timeout(WAIT):
        answering = asyncio.create_task(worker())
        curl = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-i", "--max-time", str(WAIT), served.url + "/hello/w%C3%B6rld?x=1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await curl.communicate()
        assert curl.returncode == 0, err
        head, _, body = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 201"), out
        assert b"content-type: text/plain" in head.lower()
        assert body == "GET /hello/wörld x=1".encode()

        message = await answering
        assert message["body"] == b"" and message["more_body"] is False
        assert message["reply_channel"].startswith("interface.") and "!" in message["reply_channel"]
        assert message["request_channel"].startswith("http.request.body.")
        scope = message["scope"]
        assert scope["type"] == "http" and scope["http_version"] == "1.1"
        assert scope["raw_path"] == b"/hello/w%C3%B6rld"
        assert scope["client"][0] == "127.0.0.1" and scope["server"] == [served.host, served.port]
        assert any(
            name == b"user-agent" and value.startswith(b"curl/") for name, value in scope["headers"]
        )
        assert "state" not in scope
        assert await stop(served) == 0


async def test_post_of_1_mib_is_streamed_through_the_request_channel(
    serve: ServeFactory, layer: RedisChannelLayer
) -> None:
    payload = bytes(range(256)) * (4 * KIB)  # 1 MiB
    first_forwarded = asyncio.Event()
    chunk_size = 64 * KIB

    async def upload() -> AsyncIterator[bytes]:
        # The first 256 KiB (one body chunk) go out, then the upload pauses until the worker
        # holds that chunk: a server that buffered the whole body would never forward it.
        for offset in range(0, len(payload), chunk_size):
            if offset == 256 * KIB:
                await first_forwarded.wait()
            yield payload[offset : offset + chunk_size]

    async def worker() -> list[Message]:
        first = await layer.receive("http.request")
        first_forwarded.set()
        messages = [first]
        more = first["more_body"]
        while more:
            chunk = await layer.receive(first["request_channel"])
            messages.append(chunk)
            assert chunk["type"] == "http.request"
            more = chunk["more_body"]
        body = b"".join(m["body"] for m in messages)
        await respond(layer, first["reply_channel"], hashlib.sha256(body).hexdigest().encode())
        return messages

    async with serve() as served, asyncio.timeout(WAIT):
        answering = asyncio.create_task(worker())
        async with httpx.AsyncClient(timeout=WAIT) as client:
            response = await client.post(served.url + "/upload", content=upload())
        assert response.status_code == 200
        assert response.text == hashlib.sha256(payload).hexdigest()
        messages = await answering
        assert messages[0]["scope"]["method"] == "POST"
        assert messages[0]["more_body"] is True
        assert len(messages) >= 4  # 1 MiB in chunks of at most 256 KiB
        assert all(len(m["body"]) <= 256 * KIB for m in messages)
        assert [m["more_body"] for m in messages] == [True] * (len(messages) - 1) + [False]
        assert sum(len(m["body"]) for m in messages) == MIB
        assert await stop(served) == 0


async def test_sse_is_written_chunk_by_chunk(serve: ServeFactory, layer: RedisChannelLayer) -> None:
    events = 5
    client_saw = [asyncio.Event() for _ in range(events)]

    async def worker() -> None:
        message = await layer.receive("http.request")
        reply = message["reply_channel"]
        await layer.send(
            reply,
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    [b"content-type", b"text/event-stream"],
                    [b"cache-control", b"no-cache"],
                ],
            },
        )
        for i in range(events):
            event = f"id: {i}\ndata: tick {i}\n\n".encode()
            await layer.send(
                reply, {"type": "http.response.body", "body": event, "more_body": True}
            )
            # Lockstep: the next event is written only once the client has read this one.
            await client_saw[i].wait()
        await layer.send(reply, {"type": "http.response.body", "body": b"", "more_body": False})

    async with serve() as served, asyncio.timeout(WAIT):
        answering = asyncio.create_task(worker())
        data: list[str] = []
        async with (
            httpx.AsyncClient(timeout=WAIT) as client,
            client.stream("GET", served.url + "/events") as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    data.append(line.removeprefix("data: "))
                    client_saw[len(data) - 1].set()
        assert data == [f"tick {i}" for i in range(events)]
        await answering
        assert await stop(served) == 0


async def test_long_poll_is_answered_by_a_group_send_without_a_worker(
    serve: ServeFactory, layer: RedisChannelLayer, redis_server: RedisServer
) -> None:
    async def worker_that_goes_away(requests: int) -> None:
        for _ in range(requests):
            message = await layer.receive("http.request")
            await layer.group_add("news", message["reply_channel"])

    publisher = RedisChannelLayer(hosts=[redis_server.url])  # a third party: not the worker
    try:
        async with (
            serve() as served,
            httpx.AsyncClient(timeout=WAIT) as client,
            asyncio.timeout(WAIT),
        ):
            polls = [asyncio.create_task(client.get(served.url + f"/poll/{i}")) for i in range(2)]
            await worker_that_goes_away(2)
            # Both requests were forwarded and their reply channels kept; nobody answered.
            assert not any(poll.done() for poll in polls)
            await publisher.group_send(
                "news",
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [[b"content-type", b"application/json"]],
                },
            )
            await publisher.group_send(
                "news", {"type": "http.response.body", "body": b'{"headline": "locks opened"}'}
            )
            responses = await asyncio.gather(*polls)
            for response in responses:
                assert response.status_code == 200
                assert response.json() == {"headline": "locks opened"}
            assert await stop(served) == 0
    finally:
        await publisher.close()


async def test_no_response_within_http_timeout_is_a_503(
    serve: ServeFactory, layer: RedisChannelLayer
) -> None:
    async with (
        serve("--http-timeout", "0.5") as served,
        httpx.AsyncClient(timeout=WAIT) as client,
        asyncio.timeout(WAIT),
    ):
        started = time.monotonic()
        response = await client.get(served.url + "/nobody-home")
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.text == "Service Unavailable: no response in time"
        assert elapsed >= 0.5
        # The request was forwarded, and whoever picks it up late is told to stop.
        message = await layer.receive("http.request")
        assert message["scope"]["path"] == "/nobody-home"
        assert await layer.receive(message["request_channel"]) == {"type": "http.disconnect"}
        assert await stop(served) == 0


async def test_channel_full_is_a_503(serve: ServeFactory, layer: RedisChannelLayer) -> None:
    async with (
        serve(capacity=1) as served,
        httpx.AsyncClient(timeout=WAIT) as client,
        asyncio.timeout(WAIT),
    ):
        requests = [asyncio.create_task(client.get(served.url + f"/r{i}")) for i in range(2)]
        # One request fills http.request (capacity 1); the other finds it full: 503 at once.
        done, pending = await asyncio.wait(requests, return_when=asyncio.FIRST_COMPLETED)
        (refused,) = done
        assert refused.result().status_code == 503
        assert refused.result().text == "Service Unavailable: the server is overloaded"
        # The queued one is still answerable by a worker that comes along now.
        message = await layer.receive("http.request")
        await respond(layer, message["reply_channel"], b"late but fine")
        (waiting,) = pending
        response = await waiting
        assert response.status_code == 200 and response.text == "late but fine"
        assert {refused.result().url.path, response.url.path} == {"/r0", "/r1"}
        assert message["scope"]["path"] == response.url.path
        assert await stop(served) == 0


async def test_sigterm_with_a_request_in_flight_still_answers_it(
    serve: ServeFactory, layer: RedisChannelLayer
) -> None:
    async with (
        serve() as served,
        httpx.AsyncClient(timeout=WAIT) as client,
        asyncio.timeout(WAIT),
    ):
        request = asyncio.create_task(client.get(served.url + "/slow"))
        message = await layer.receive("http.request")  # in flight: forwarded, unanswered
        served.send_signal(signal.SIGTERM)
        await served.wait_for_stderr("shutting down")
        assert not request.done()
        await respond(layer, message["reply_channel"], b"answered after the signal")
        response = await request
        assert response.status_code == 200 and response.text == "answered after the signal"
        assert await served.wait() == 0


# -- WebSocket ---------------------------------------------------------------------------------


async def test_websocket_accept_echo_and_client_close(
    serve: ServeFactory, layer: RedisChannelLayer
) -> None:
    async def echo_worker() -> list[Message]:
        connect_message = await layer.receive("websocket.connect")
        seen = [connect_message]
        reply = connect_message["reply_channel"]
        await layer.send(reply, {"type": "websocket.accept", "subprotocol": "chat"})
        while True:
            channel, message = await layer.receive_many(
                ["websocket.receive", "websocket.disconnect"]
            )
            assert message["reply_channel"] == reply
            seen.append(message)
            if channel == "websocket.disconnect":
                return seen
            frame: Message = {k: message[k] for k in ("text", "bytes") if k in message}
            await layer.send(reply, {"type": "websocket.send", **frame})

    async with serve() as served, asyncio.timeout(WAIT):
        worker = asyncio.create_task(echo_worker())
        offered = [Subprotocol("chat"), Subprotocol("v2")]
        async with connect(served.ws_url + "/ws/echo?room=1", subprotocols=offered) as ws:
            assert ws.subprotocol == "chat"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            await ws.close(code=4000, reason="bye")
        connected, text, binary, disconnect = await worker
        scope = connected["scope"]
        assert connected["type"] == "websocket.connect" and connected["order"] == 0
        assert scope["type"] == "websocket" and scope["scheme"] == "ws"
        assert scope["path"] == "/ws/echo" and scope["query_string"] == b"room=1"
        assert scope["subprotocols"] == ["chat", "v2"]
        assert (text["order"], text["text"]) == (1, "hello") and "bytes" not in text
        assert (binary["order"], binary["bytes"]) == (2, b"\x00\x01\xff") and "text" not in binary
        assert disconnect == {
            "type": "websocket.disconnect",
            "reply_channel": connected["reply_channel"],
            "code": 4000,
            "reason": "bye",
            "order": 3,
        }
        assert await stop(served) == 0


async def test_websocket_closed_by_the_worker(
    serve: ServeFactory, layer: RedisChannelLayer
) -> None:
    async def closing_worker() -> Message:
        connect_message = await layer.receive("websocket.connect")
        reply = connect_message["reply_channel"]
        await layer.send(reply, {"type": "websocket.accept"})
        message = await layer.receive("websocket.receive")
        assert message["text"] == "please go"
        await layer.send(reply, {"type": "websocket.close", "code": 4321, "reason": "done"})
        return await layer.receive("websocket.disconnect")

    async with serve() as served, asyncio.timeout(WAIT):
        worker = asyncio.create_task(closing_worker())
        async with connect(served.ws_url + "/ws/closing") as ws:
            assert ws.subprotocol is None
            await ws.send("please go")
            with pytest.raises(ConnectionClosedError) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4321, "done")
        disconnect = await worker
        assert disconnect["code"] == 4321 and disconnect["order"] == 2
        assert await stop(served) == 0


async def test_group_chat_reaches_every_client_in_order(
    serve: ServeFactory, layer: RedisChannelLayer
) -> None:
    clients, per_client = 3, 5

    async def chat_worker() -> None:
        while True:
            channel, message = await layer.receive_many(
                ["websocket.connect", "websocket.receive", "websocket.disconnect"]
            )
            reply = message["reply_channel"]
            if channel == "websocket.connect":
                await layer.group_add("room", reply)
                await layer.send(reply, {"type": "websocket.accept"})
            elif channel == "websocket.receive":
                await layer.group_send("room", {"type": "websocket.send", "text": message["text"]})
            else:
                await layer.group_discard("room", reply)

    async def chat(ws: ClientConnection, name: str) -> list[str]:
        async def talk() -> None:
            for i in range(per_client):
                await ws.send(f"{name}:{i}")

        talking = asyncio.create_task(talk())
        heard = [str(await ws.recv()) for _ in range(clients * per_client)]
        await talking
        return heard

    async with serve() as served, asyncio.timeout(WAIT):
        worker = asyncio.create_task(chat_worker())
        try:
            sockets = [await connect(served.ws_url + "/chat") for _ in range(clients)]
            try:
                # Every socket is accepted, so every reply channel is in the room already.
                heard = await asyncio.gather(*(chat(ws, f"c{n}") for n, ws in enumerate(sockets)))
            finally:
                for ws in sockets:
                    await ws.close()
            if worker.done():
                worker.result()  # the worker must still be serving: surface why it stopped
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        # Everyone heard all the messages, in one and the same order (the order the worker
        # broadcast them), and each speaker's messages in the order they were said.
        assert heard[0] == heard[1] == heard[2]
        assert sorted(heard[0]) == sorted(
            f"c{n}:{i}" for n in range(clients) for i in range(per_client)
        )
        for n in range(clients):
            said = [m for m in heard[0] if m.startswith(f"c{n}:")]
            assert said == [f"c{n}:{i}" for i in range(per_client)]
        assert await stop(served) == 0


async def test_client_leaving_a_long_poll_tells_the_worker(
    serve: ServeFactory, layer: RedisChannelLayer
) -> None:
    async with serve() as served, asyncio.timeout(WAIT):
        _, writer = await asyncio.open_connection(served.host, served.port)
        writer.write(b"GET /poll HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        message = await layer.receive("http.request")
        writer.close()  # the client gives up before any response
        await writer.wait_closed()
        assert await layer.receive(message["request_channel"]) == {"type": "http.disconnect"}
        # A reply sent now goes nowhere and harms nothing.
        await respond(layer, message["reply_channel"], b"too late")
        assert await stop(served) == 0


async def test_sigterm_closes_open_websockets_and_tells_the_worker(
    serve: ServeFactory, layer: RedisChannelLayer
) -> None:
    async with serve("--graceful-timeout", "5") as served, asyncio.timeout(WAIT):

        async def accept() -> Message:
            connect_message = await layer.receive("websocket.connect")
            await layer.send(connect_message["reply_channel"], {"type": "websocket.accept"})
            return connect_message

        accepting = asyncio.create_task(accept())
        async with connect(served.ws_url + "/ws/long") as ws:
            connected = await accepting
            served.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1012)
        disconnect = await layer.receive("websocket.disconnect")
        assert disconnect["reply_channel"] == connected["reply_channel"]
        assert disconnect["code"] in (1001, 1012) and disconnect["order"] == 1
        assert await served.wait() == 0
