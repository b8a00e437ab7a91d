"""The embedded default: ``towpath serve`` and ``towpath runworker`` with no settings at all run
over the IPC layer (one machine, no Redis, ``docs/ipc.md``): real processes, real clients, and a
worker handing its WebSockets to another one."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.chat import clients, each_hears_itself, everyone_hears_everyone
from tests.support.commands import ENV, runworker
from tests.support.waiting import WAIT
from towpath.layers.ipc.store import default_directory
from towpath.testing.processes import towpath_serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def own_prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test its own IPC prefix (the processes inherit it), so runs never meet; its store
    is removed after."""
    prefix = f"t{secrets.token_hex(6)}"
    monkeypatch.delenv("TOWPATH_SETTINGS", raising=False)
    monkeypatch.setenv("TOWPATH_IPC_PREFIX", prefix)
    yield
    shutil.rmtree(Path(default_directory()) / f"towpath-ipc-{prefix}", ignore_errors=True)


async def test_serve_and_runworker_need_no_settings(tmp_path: Path) -> None:
    worker_args = ("--routing", "tests.support.workerapp:routes", "--heartbeat-interval", "0.2")
    async with (
        towpath_serve("--port", "0", cwd=tmp_path, env=ENV) as served,
        runworker(*worker_args, tag="A", cwd=tmp_path) as worker_a,
    ):
        assert "the IPC layer" in await served.wait_for_stderr("No --settings")
        base = served.urls[0]
        async with httpx.AsyncClient(timeout=WAIT) as http:
            response = await http.get(f"{base}/hello/ipc")
        assert (response.status_code, response.text) == (200, "hello ipc from A")
        url = base.replace("http://", "ws://") + "/chat/"
        async with clients(url) as sockets, asyncio.timeout(4 * WAIT):
            assert await everyone_hears_everyone(sockets, "one") == {"A"}
            async with runworker(*worker_args, tag="B", cwd=tmp_path):
                worker_a.send_signal(signal.SIGTERM)  # hands its WebSockets to B
                assert await worker_a.wait() == 0
                assert await each_hears_itself(sockets, "two") == 0
                assert await everyone_hears_everyone(sockets, "three") == {"B"}
            assert all(socket.close_code is None for socket in sockets)
