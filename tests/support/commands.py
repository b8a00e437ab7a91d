"""``towpath runworker`` and ``towpath runserver`` as real processes for the tests: their
settings, the ``tests.support`` apps importable from any working directory (``ENV``), and the
chat they serve."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from tests.support.waiting import WAIT
from towpath.testing.processes import ServeProcess, towpath_process

#: the repository: on the commands' PYTHONPATH, so ``tests.support.workerapp:routes`` loads
ROOT = str(Path(__file__).resolve().parents[2])
#: the ``tests.support`` modules (``workerapp`` ...) importable from any working directory
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}


def write_settings(directory: Path, backend: str, config: dict[str, Any]) -> Path:
    """A settings module in ``directory`` routing to ``tests.support.workerapp``."""
    path = directory / "worker_settings.py"
    path.write_text(
        f"CHANNEL_LAYERS = {{'default': {{'BACKEND': {backend!r}, 'CONFIG': {config!r}, "
        "'ROUTING': 'tests.support.workerapp:routes'}}\n"
    )
    return path


@asynccontextmanager
async def runworker(
    *args: str, tag: str, cwd: Path, ready: bool = True
) -> AsyncIterator[ServeProcess]:
    """``towpath runworker *args`` (``workerapp`` answering as ``tag``) until the block ends,
    once it logged its channels (``ready=False``: at once)."""
    async with towpath_process(
        "runworker",
        *args,
        cwd=cwd,
        env={**ENV, "WORKERAPP_TAG": tag},
        startup_timeout=WAIT,
        ready=ready,
    ) as worker:
        yield worker


@asynccontextmanager
async def runserver(*args: str, cwd: Path, ready: bool = True) -> AsyncIterator[ServeProcess]:
    """``towpath runserver -p 0 *args`` until the block ends, once it printed its URL
    (``ready=False``: at once)."""
    async with towpath_process(
        "runserver",
        "-p",
        "0",
        *args,
        cwd=cwd,
        env={**ENV, "WORKERAPP_TAG": "solo"},
        startup_timeout=WAIT,
        ready=ready,
    ) as served:
        yield served


async def chat(ws_url: str, expected_suffix: str) -> None:
    """Two clients of ``workerapp``'s chat: what one says, both hear from ``expected_suffix``."""
    async with connect(ws_url, open_timeout=WAIT) as a, connect(ws_url, open_timeout=WAIT) as b:
        async with asyncio.timeout(WAIT):
            await a.send("hello room")
            assert await a.recv() == f"hello room via {expected_suffix}"
            assert await b.recv() == f"hello room via {expected_suffix}"


async def stop(process: ServeProcess) -> int:
    """SIGTERM ``process``; its exit status."""
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(WAIT):
        return await process.wait()
