"""The worker in process: a real interface server (``running_server(ForwardingApp(layer))``),
the worker as a task in the test's loop, real httpx and websockets clients; the in-memory layer,
and Redis where crossing a real server matters."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.support import workerapp, workerapp_starlette
from tests.support.waiting import WAIT
from towpath.interface.forwarding import ForwardingApp
from towpath.layers.base import BaseChannelLayer
from towpath.layers.memory import InMemoryChannelLayer
from towpath.layers.registry import unregister_channel_layer
from towpath.routing import route
from towpath.testing.server import RunningServer, running_server
from towpath.worker import LifespanFailure, Worker, WorkerConfigError, filter_channels

Message = dict[str, Any]


@pytest.fixture
async def layer() -> AsyncIterator[BaseChannelLayer]:
    made = InMemoryChannelLayer()
    yield made
    unregister_channel_layer("default")
    await made.close()


@pytest.fixture
async def redis_layer(redis_server: Any) -> AsyncIterator[BaseChannelLayer]:
    from towpath.layers.redis import RedisChannelLayer

    made = RedisChannelLayer(hosts=[redis_server.url], retry_timeout=2)
    yield made
    unregister_channel_layer("default")
    await made.close()


@pytest.fixture(params=["memory", "redis"])
def any_layer(request: pytest.FixtureRequest) -> BaseChannelLayer:
    """The in-memory layer, then Redis (sync, so it may pick the async fixtures)."""
    result: BaseChannelLayer = request.getfixturevalue(
        "layer" if request.param == "memory" else "redis_layer"
    )
    return result


@asynccontextmanager
async def running_worker(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.get_running_loop().create_task(worker.run())
    started = asyncio.ensure_future(worker.started())
    async with asyncio.timeout(WAIT):
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        task.result()
    try:
        yield worker
    finally:
        worker.stop()
        async with asyncio.timeout(WAIT):
            await task


@asynccontextmanager
async def stack(
    layer: BaseChannelLayer, routing: object = None, **options: Any
) -> AsyncIterator[tuple[RunningServer, Worker]]:
    """An interface server forwarding to ``layer`` and a worker serving ``routing``."""
    body_chunk_bytes = options.pop("body_chunk_bytes", 256 * 1024)
    forwarding = ForwardingApp(layer, http_timeout_seconds=WAIT, body_chunk_bytes=body_chunk_bytes)
    async with (
        running_worker(Worker(layer, routing, **options)) as worker,
        running_server(forwarding, lifespan="off") as server,
    ):
        yield server, worker


def client(server: RunningServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=WAIT)


# -- channels and filters ----------------------------------------------------------------------


def test_filters_keep_only_then_exclude() -> None:
    names = ["http.request", "websocket.connect", "websocket.receive", "thumbnail"]
    assert filter_channels(names, ["http.*", "websocket.*"], ["websocket.receive"]) == [
        "http.request",
        "websocket.connect",
    ]
    assert filter_channels(names, (), ["http.*"]) == [
        "thumbnail",
        "websocket.connect",
        "websocket.receive",
    ]
    assert filter_channels(names) == sorted(names)


def test_empty_channel_lists_are_refused_saying_why() -> None:
    with pytest.raises(WorkerConfigError, match=r"no channel of the routing matches.*thumbnail"):
        filter_channels(["thumbnail"], ["http.*"])
    with pytest.raises(WorkerConfigError, match=r"drops every channel left \(thumbnail\)"):
        filter_channels(["thumbnail"], (), ["thumb*"])
    with pytest.raises(WorkerConfigError, match="names no channels"):
        filter_channels([])


def test_worker_channels(layer: BaseChannelLayer) -> None:
    worker = Worker(layer, workerapp.routes)
    # a routed websocket.connect brings the events of pending connections
    assert worker.channels == [
        "http.request",
        "sync.job",
        "thumbnail",
        "websocket.connect",
        "websocket.disconnect",
        "websocket.receive",
    ]
    assert Worker(layer, "tests.support.workerapp:routes", only_channels=["http.*"]).channels == [
        "http.request"
    ]
    assert Worker(layer, app=workerapp_starlette.app, exclude_channels=["http.*"]).channels == [
        "websocket.connect",
        "websocket.disconnect",
        "websocket.receive",
    ]
    with pytest.raises(WorkerConfigError, match="either routing or an ASGI app"):
        Worker(layer)
    with pytest.raises(WorkerConfigError, match="concurrency must be an int >= 1, not 0"):
        Worker(layer, workerapp.routes, concurrency=0)


# -- message consumers -------------------------------------------------------------------------


async def test_http_message_consumers(any_layer: BaseChannelLayer) -> None:
    async with stack(any_layer, workerapp.routes) as (server, _), client(server) as http:
        response = await http.get("/hello/bob")
        assert (response.status_code, response.text) == (200, "hello bob from w")
        response = await http.get("/nowhere")  # the router's fallback
        assert response.status_code == 404
        response = await http.get("/thumb?id=7")  # a job channel answers the client
        assert (response.status_code, response.text) == (200, "thumbnail 7 by w")


async def test_a_consumer_exception_is_logged_and_the_next_message_served(
    layer: BaseChannelLayer, caplog: pytest.LogCaptureFixture
) -> None:
    async with stack(layer, workerapp.routes) as (server, _), client(server) as http:
        with caplog.at_level(logging.ERROR, logger="towpath.worker"):
            response = await http.get("/boom")
        assert response.status_code == 500
        (record,) = [r for r in caplog.records if "failed" in r.getMessage()]
        text = record.getMessage()
        assert "'http.request' message from channel http.request" in text
        assert "RuntimeError: boom on purpose" in text
        response = await http.get("/hello/again")
        assert response.text == "hello again from w"


async def test_a_sync_consumer_runs_in_a_thread(layer: BaseChannelLayer) -> None:
    workerapp.sync_gate.clear()
    workerapp.sync_entered.clear()
    workerapp.sync_threads.clear()
    try:
        async with stack(layer, workerapp.routes) as (server, worker), client(server) as http:
            await layer.send("sync.job", {"type": "sync.job"})
            assert await asyncio.to_thread(workerapp.sync_entered.wait, WAIT)
            # the job is blocked in its thread, and the loop still serves
            response = await http.get("/hello/loop")
            assert response.text == "hello loop from w"
            assert workerapp.sync_threads[0] != threading.main_thread().name
            assert len(worker.tasks) == 1
            workerapp.sync_gate.set()
            async with asyncio.timeout(WAIT):
                await asyncio.wait(set(worker.tasks))
    finally:
        workerapp.sync_gate.set()


async def test_concurrency_limit_is_honoured(layer: BaseChannelLayer) -> None:
    gate = asyncio.Event()
    two_running = asyncio.Event()
    running = 0
    peak = 0
    done: list[int] = []

    async def job(message: Message) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            two_running.set()
        await gate.wait()
        running -= 1
        done.append(message["n"])

    async with running_worker(Worker(layer, [route("jobs", job)], concurrency=2)) as worker:
        for n in range(5):
            await layer.send("jobs", {"type": "job", "n": n})
        async with asyncio.timeout(WAIT):
            await two_running.wait()
        assert len(worker.tasks) == 2
        gate.set()
        async with asyncio.timeout(WAIT):
            while len(done) < 5:
                await asyncio.wait(set(worker.tasks) or {asyncio.ensure_future(gate.wait())})
    assert peak == 2 and sorted(done) == [0, 1, 2, 3, 4]


# -- ASGI apps hosted in the worker -----------------------------------------------------------


async def test_starlette_app_runs_unchanged(any_layer: BaseChannelLayer) -> None:
    workerapp_starlette.events.clear()
    async with stack(any_layer, app=workerapp_starlette.app, body_chunk_bytes=1000) as (server, _):
        assert workerapp_starlette.events == ["startup"]
        async with client(server) as http:
            response = await http.get("/")
            assert (response.status_code, response.text) == (200, "hi from starlette /")
            body = b"y" * 4500  # five chunks through the request channel
            response = await http.post("/echo", content=body)
            assert response.json() == {"size": 4500, "method": "POST", "client": True}
            response = await http.get("/stream")
            assert response.text == "part0\npart1\npart2\n"
            response = await http.get("/fail")
            assert response.status_code == 500
        async with connect(
            server.ws_url + "/ws", subprotocols=[Subprotocol("echo")], open_timeout=WAIT
        ) as ws:
            assert ws.subprotocol == "echo"
            async with asyncio.timeout(WAIT):
                await ws.send("one")
                assert await ws.recv() == "echo one"
                await ws.send("two")
                assert await ws.recv() == "echo two"
                await ws.send("bye")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    assert workerapp_starlette.events == ["startup", "shutdown"]


async def test_owned_websocket_events_reach_the_owner_only(layer: BaseChannelLayer) -> None:
    """Without the shared websocket.receive channel the echo still works: after the accept,
    the server sends that connection's frames to the worker's process channel."""
    options = {"exclude_channels": ["websocket.receive"]}
    async with stack(layer, app=workerapp_starlette.app, **options) as (server, worker):
        assert "websocket.receive" not in worker.channels
        async with connect(
            server.ws_url + "/ws", subprotocols=[Subprotocol("echo")], open_timeout=WAIT
        ) as ws:
            async with asyncio.timeout(WAIT):
                await ws.send("owned")
                assert await ws.recv() == "echo owned"
                assert len(worker.connections) == 1
        async with asyncio.timeout(WAIT):
            await asyncio.wait(set(worker.tasks) or {asyncio.ensure_future(asyncio.sleep(0))})
        assert worker.connections == {}


async def test_app_failures_answer_500_or_close_1011(layer: BaseChannelLayer) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")
        if scope["path"] == "/silent":
            return
        if scope["type"] == "websocket" and scope["path"] == "/later":
            await receive()
            await send({"type": "websocket.accept"})
        raise ValueError(f"failed on {scope['path']}")

    async with stack(layer, app=app) as (server, _), client(server) as http:
        assert (await http.get("/raise")).status_code == 500
        assert (await http.get("/silent")).status_code == 500
        with pytest.raises(InvalidStatus) as rejected:
            async with connect(server.ws_url + "/early", open_timeout=WAIT):
                pass
        assert rejected.value.response.status_code == 403
        async with connect(server.ws_url + "/later", open_timeout=WAIT) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(WAIT):
                    await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


async def test_lifespan_startup_failure_stops_the_worker(layer: BaseChannelLayer) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(LifespanFailure, match="no database"):
        async with running_worker(Worker(layer, app=app)):
            pass


async def test_chat_through_groups(any_layer: BaseChannelLayer) -> None:
    async with stack(any_layer, workerapp.routes) as (server, _):
        url = server.ws_url + "/chat/"
        async with connect(url, open_timeout=WAIT) as a, connect(url, open_timeout=WAIT) as b:
            async with asyncio.timeout(WAIT):
                await a.send("hi all")
                assert await a.recv() == "hi all via w"
                assert await b.recv() == "hi all via w"
        with pytest.raises(InvalidStatus) as rejected:  # unrouted: rejected
            async with connect(server.ws_url + "/other/", open_timeout=WAIT):
                pass
        assert rejected.value.response.status_code == 403


# -- stopping ----------------------------------------------------------------------------------


def gated_routes(gate: asyncio.Event, started: asyncio.Event) -> list[Any]:
    from towpath.consumers.messages import reply

    async def slow(message: Message) -> None:
        started.set()
        await gate.wait()
        await reply(message, 200, "finished")

    return [route("http.request", slow)]


async def test_graceful_stop_finishes_in_flight_work(layer: BaseChannelLayer) -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    worker = Worker(layer, gated_routes(gate, started))
    async with running_server(ForwardingApp(layer), lifespan="off") as server:
        run = asyncio.get_running_loop().create_task(worker.run())
        async with client(server) as http, asyncio.timeout(WAIT):
            answer = asyncio.ensure_future(http.get("/"))
            await started.wait()
            worker.stop()
            await layer.send("http.request", {"type": "left.alone"})
            await asyncio.sleep(0)
            assert not run.done()
            gate.set()
            response = await answer
            assert (response.status_code, response.text) == (200, "finished")
            await run
        # the worker stopped receiving: what came after the stop is still in the layer
        assert (await layer.receive("http.request"))["type"] == "left.alone"


async def test_second_stop_or_timeout_cuts_in_flight_work(layer: BaseChannelLayer) -> None:
    for how in ("second stop", "timeout"):
        gate, started = asyncio.Event(), asyncio.Event()
        timeout = 30.0 if how == "second stop" else 0.2
        worker = Worker(layer, gated_routes(gate, started), graceful_timeout=timeout)
        async with running_server(ForwardingApp(layer), lifespan="off") as server:
            run = asyncio.get_running_loop().create_task(worker.run())
            async with client(server) as http, asyncio.timeout(WAIT):
                answer = asyncio.ensure_future(http.get("/"))
                await started.wait()
                worker.stop()
                if how == "second stop":
                    worker.stop()
                await run
                response = await answer
                assert response.status_code == 503, how
                assert "stopping" in response.text


# -- the layer failing -------------------------------------------------------------------------


class FlakyLayer(InMemoryChannelLayer):
    """Refuses ``receive_many`` ``failures`` times (recording when), then works."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls: list[float] = []

    async def receive_many(self, channels: Any) -> tuple[str, Message]:
        if self.failures and "jobs" in channels:
            self.failures -= 1
            self.calls.append(asyncio.get_running_loop().time())
            raise ConnectionError("connection refused")
        return await super().receive_many(channels)


async def test_lost_layer_is_retried_with_capped_back_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = FlakyLayer(failures=7)
    done = asyncio.Event()

    async def job(message: Message) -> None:
        done.set()

    worker = Worker(layer, [route("jobs", job)], retry_initial=0.01, retry_max=0.04)
    try:
        with caplog.at_level(logging.INFO, logger="towpath.worker"):
            async with running_worker(worker):
                await layer.send("jobs", {"type": "job"})
                async with asyncio.timeout(WAIT):
                    await done.wait()
    finally:
        unregister_channel_layer("default")
    gaps = [b - a for a, b in zip(layer.calls, layer.calls[1:], strict=False)]
    expected = [0.01, 0.02, 0.04, 0.04, 0.04, 0.04]
    assert all(gap >= want * 0.95 for gap, want in zip(gaps, expected, strict=True)), gaps
    messages = [r.getMessage() for r in caplog.records]
    assert sum("lost the channel layer" in m for m in messages) == 1  # once per outage
    assert sum("reachable again" in m for m in messages) == 1


async def test_redis_restart_is_survived(redis_server: Any) -> None:
    from towpath.layers.redis import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[redis_server.url], retry_timeout=5)
    try:
        async with stack(layer, workerapp.routes) as (server, _), client(server) as http:
            assert (await http.get("/hello/before")).text == "hello before from w"
            redis_server.stop()
            redis_server.start()
            async with asyncio.timeout(WAIT):
                while True:  # the interface answers 503 until its own connection is back
                    response = await http.get("/hello/after")
                    if response.status_code != 503:
                        break
            assert response.text == "hello after from w"
    finally:
        unregister_channel_layer("default")
        await layer.close()
