"""One lifespan implementation (``towpath.lifespan``) for the server and a worker hosting an
app, each keeping its wording and its wait for the app's lifespan coroutine."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from towpath import lifespan
from towpath.interface import lifespan as server_lifespan
from towpath.worker import LifespanFailure as WorkerLifespanFailure
from towpath.worker import host


def test_one_failure_class_for_both_hosts() -> None:
    assert server_lifespan.LifespanFailure is lifespan.LifespanFailure
    assert WorkerLifespanFailure is lifespan.LifespanFailure
    assert issubclass(server_lifespan.Lifespan, lifespan.Lifespan)
    assert issubclass(host.Lifespan, lifespan.Lifespan)


async def failing(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "database unreachable"})


@pytest.mark.parametrize(
    ("made", "wording"),
    [
        (lambda: server_lifespan.Lifespan(failing, "auto"), "application startup failed"),
        (lambda: host.Lifespan(failing), "the app's lifespan startup failed"),
    ],
)
async def test_a_failed_startup_is_worded_by_its_host(made: Any, wording: str) -> None:
    span = made()
    with pytest.raises(lifespan.LifespanFailure, match=f"{wording}: database unreachable"):
        await span.startup()
    assert not span.supported
    await span.shutdown()  # nothing to shut down after a failed start


async def test_the_worker_waits_for_the_app_to_return_the_server_does_not() -> None:
    release = asyncio.Event()
    finished = asyncio.Event()
    returned: list[str] = []

    async def lingering(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        scope["state"]["ready"] = True
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        await release.wait()
        returned.append("done")
        finished.set()

    server_side = server_lifespan.Lifespan(lingering, "on")
    await server_side.startup()
    assert server_side.state == {"ready": True}
    await server_side.shutdown()
    assert returned == []  # the server did not wait
    release.set()
    await asyncio.wait_for(finished.wait(), 5)
    assert returned == ["done"]

    release.clear()
    worker_side = host.Lifespan(lingering)
    await worker_side.startup()
    shutting = asyncio.ensure_future(worker_side.shutdown())
    for _ in range(5):  # a few turns of the loop: the shutdown answer is in, the app lingers
        await asyncio.sleep(0)
    assert not shutting.done()  # the worker waits for the app to return
    release.set()
    await asyncio.wait_for(shutting, 5)
    assert returned == ["done", "done"]


async def test_an_app_without_lifespan_is_skipped_in_auto_and_fails_when_on() -> None:
    async def plain(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("no lifespan here")

    for span in (server_lifespan.Lifespan(plain, "auto"), host.Lifespan(plain)):
        await span.startup()
        assert not span.supported and span.state is None
        await span.shutdown()
    with pytest.raises(lifespan.LifespanFailure, match="ValueError: no lifespan here"):
        await server_lifespan.Lifespan(plain, "on").startup()


async def test_a_failed_shutdown_raises_only_when_on(caplog: pytest.LogCaptureFixture) -> None:
    async def bad_shutdown(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "disk full"})

    span = server_lifespan.Lifespan(bad_shutdown, "on")
    await span.startup()
    with pytest.raises(lifespan.LifespanFailure, match="application shutdown failed: disk full"):
        await span.shutdown()
    for auto in (server_lifespan.Lifespan(bad_shutdown, "auto"), host.Lifespan(bad_shutdown)):
        await auto.startup()
        await auto.shutdown()
    assert "the app's lifespan shutdown failed: disk full" in caplog.text
