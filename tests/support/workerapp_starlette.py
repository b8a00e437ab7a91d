"""A Starlette app, unchanged, for ``towpath runworker --asgi`` (HTTP, WebSocket, lifespan)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

TAG = os.environ.get("WORKERAPP_TAG", "starlette")
events: list[str] = []


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    events.append("startup")
    yield {"greeting": f"hi from {TAG}"}
    events.append("shutdown")


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{request.state.greeting} {request.url.path}")


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {"size": len(body), "method": request.method, "client": request.client is not None}
    )


async def stream(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for number in range(3):
            yield f"part{number}\n".encode()

    return StreamingResponse(parts(), media_type="text/plain")


async def fail(request: Request) -> PlainTextResponse:
    raise RuntimeError("starlette route failed on purpose")


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol="echo")
    while True:
        text = await websocket.receive_text()
        if text == "bye":
            await websocket.close(code=4000)
            return
        await websocket.send_text(f"echo {text}")


app = Starlette(
    routes=[
        Route("/", home),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/fail", fail),
        WebSocketRoute("/ws", ws_echo),
    ],
    lifespan=lifespan,
)
