"""The tiny ASGI app every server of ``python -m bench attacks`` runs (``bench.attacks_app:app``).

A raw ASGI 3 app, so the figures measure the server, not a framework:

* HTTP: the whole request body is read first (so a server's body parser is exercised); then
  ``GET /big?size=N`` streams N bytes (64 KiB ``http.response.body`` messages with
  ``more_body``: a server that does not apply back-pressure buffers them all), ``GET /client``
  answers the client address the server gave (``scope["client"]``), anything else answers
  ``"<METHOD> <path> <body bytes>"`` (so a smuggled request shows which path was served);
* WebSocket: accepts every connection (whatever its Origin: refusing is the server's job)
  and echoes each message;
* lifespan: startup and shutdown complete at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

__all__ = ["CHUNK_BYTES", "app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHUNK_BYTES = 64 * 1024
_CHUNK = b"x" * CHUNK_BYTES


def _start(length: int | None) -> Message:
    headers = [(b"content-type", b"text/plain")]
    if length is not None:
        headers.append((b"content-length", b"%d" % length))
    return {"type": "http.response.start", "status": 200, "headers": headers}


async def _http(scope: Scope, receive: Receive, send: Send) -> None:
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/big":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        size = int(query.get("size", ["0"])[0])
        await send(_start(size))
        while size > 0:
            chunk = _CHUNK if size >= CHUNK_BYTES else _CHUNK[:size]
            size -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": size > 0})
        return
    if path == "/client":
        client = scope.get("client")
        body = f"{client[0]}:{client[1]}" if client else "None"
    else:
        body = f"{scope['method']} {path} {received}\n"
    data = body.encode("utf-8", "backslashreplace")
    await send(_start(len(data)))
    await send({"type": "http.response.body", "body": data})


async def _websocket(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        else:  # websocket.disconnect
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "websocket":
        await _websocket(receive, send)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
