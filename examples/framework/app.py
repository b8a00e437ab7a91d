"""An ordinary FastAPI app, written with nothing towpath-specific in it.

It uses what real apps use: a lifespan that sets up shared state, JSON routes with path and
query parameters, a validated JSON body, a raw request body, a middleware, a streaming
response and a WebSocket. towpath serves it two ways without a line changed:

    towpath serve examples.framework.app:app                       # direct: in this process

    towpath serve --settings examples/framework/settings.py        # decoupled: the server holds
    towpath runworker --settings examples/framework/settings.py \\  # the connections, workers run
        --asgi examples.framework.app:app                          # the app, Redis in between

Run both from the repository root (see examples/framework/README.md).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypedDict

from fastapi import FastAPI, HTTPException, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field


class State(TypedDict):
    """What the lifespan hands every request (``request.state``) and WebSocket."""

    catalogue: dict[int, str]
    greeting: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[State]:
    # Open connection pools, load models, read config here. Each process that runs the app
    # (the server in direct mode, every worker in decoupled mode) runs this once.
    yield {"catalogue": {1: "towpath", 2: "lock", 3: "narrowboat"}, "greeting": "ahoy"}


app = FastAPI(title="towpath framework example", lifespan=lifespan)


@app.middleware("http")
async def add_app_header(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers["x-example"] = "framework"
    return response


@app.get("/")
async def home(request: Request) -> dict[str, Any]:
    return {"greeting": request.state.greeting, "items": len(request.state.catalogue)}


@app.get("/items/{item_id}")
async def read_item(request: Request, item_id: int, upper: bool = False) -> dict[str, Any]:
    name = request.state.catalogue.get(item_id)
    if name is None:
        raise HTTPException(status_code=404, detail=f"no item {item_id}")
    return {"id": item_id, "name": name.upper() if upper else name}


class Order(BaseModel):
    item_id: int
    quantity: int = Field(gt=0, le=100)
    note: str = ""


@app.post("/orders", status_code=201)
async def place_order(request: Request, order: Order) -> dict[str, Any]:
    if order.item_id not in request.state.catalogue:
        raise HTTPException(status_code=404, detail=f"no item {order.item_id}")
    return {"item": request.state.catalogue[order.item_id], **order.model_dump()}


@app.post("/upload")
async def upload(request: Request) -> dict[str, Any]:
    """Read a raw body of any size as it streams in, and say what arrived."""
    digest, size = hashlib.sha256(), 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


@app.get("/countdown")
async def countdown(start: int = 3, pause: float = 0.2) -> StreamingResponse:
    """One line per step, ``pause`` seconds apart: each reaches the client on its own."""

    async def lines() -> AsyncIterator[str]:
        for number in range(start, 0, -1):
            yield f"{number}\n"
            await asyncio.sleep(pause)
        yield "liftoff\n"

    return StreamingResponse(lines(), media_type="text/plain")


@app.websocket("/ws/echo")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    greeting = websocket.state.greeting
    try:
        while True:
            message = await websocket.receive_json()
            if message.get("bye"):
                await websocket.close(code=4000, reason="bye")
                return
            await websocket.send_json({"echo": message, "greeting": greeting})
    except WebSocketDisconnect:
        pass
