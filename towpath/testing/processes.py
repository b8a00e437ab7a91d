"""Real ``towpath`` processes for end-to-end tests::

    async with towpath_serve("--settings", str(settings_py), "--port", "0") as served:
        async with httpx.AsyncClient() as client:
            response = await client.get(served.url + "/")
        served.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await served.wait() == 0

:func:`towpath_serve` runs the ``towpath`` console script of the running interpreter's
environment (the one next to ``sys.executable``) and waits for its ready lines (``towpath
serving on URL``, one per listener), so ``--port 0`` gives the real address and nothing waits on
a fixed port. Both output pipes are drained in the background, so a chatty server never blocks
on a full pipe; the lines are kept for assertions (:meth:`ServeProcess.wait_for_stderr`) and
for failure messages. Leaving the block kills the process if it is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

__all__ = ["READY_PREFIX", "TOWPATH", "ServeProcess", "towpath_serve"]

#: the ``towpath`` console script installed beside the running interpreter
TOWPATH = str(Path(sys.executable).with_name("towpath"))
#: how ``towpath serve`` announces each listener on stdout, followed by its URL
READY_PREFIX = "towpath serving on "


class _Lines:
    """Lines read from one pipe, kept, with a way to wait for the next."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._changed = asyncio.Event()

    def add(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def changed(self) -> None:
        await self._changed.wait()
        self._changed = asyncio.Event()


class ServeProcess:
    """A running ``towpath serve``: its process, the URLs it reported, its output so far."""

    def __init__(self, process: asyncio.subprocess.Process, urls: list[str]) -> None:
        self.process = process
        #: one URL per listener, as printed: ``http://127.0.0.1:41234``, ``http+unix:///p``
        self.urls = urls
        self._stdout = _Lines()
        self._stderr = _Lines()
        self._readers: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        """The first listener's URL."""
        return self.urls[0]

    @property
    def ws_url(self) -> str:
        """The first listener's URL with a WebSocket scheme."""
        return self.url.replace("http", "ws", 1)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def stdout_lines(self) -> list[str]:
        return self._stdout.lines

    @property
    def stderr_lines(self) -> list[str]:
        return self._stderr.lines

    def output(self) -> str:
        """Everything the process printed so far, for failure messages."""
        return (
            "--- stdout ---\n"
            + "".join(self._stdout.lines)
            + "--- stderr ---\n"
            + "".join(self._stderr.lines)
        )

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait(self) -> int:
        """Wait for the process to exit (bound it with ``asyncio.timeout``); its exit status."""
        status = await self.process.wait()
        await asyncio.gather(*self._readers)
        return status

    async def wait_for_stderr(self, text: str) -> str:
        """The first stderr line containing ``text``, waiting for it if need be (bound it with
        ``asyncio.timeout``); AssertionError if the process ends its stderr without one."""
        seen = 0
        while True:
            lines = self._stderr.lines
            for line in lines[seen:]:
                if text in line:
                    return line
            seen = len(lines)
            if self._stderr.closed:
                raise AssertionError(f"no {text!r} on stderr\n{self.output()}")
            await self._stderr.changed()

    async def logged_stats(self) -> dict[str, Any]:
        """Ask the process for its counters (SIGUSR1: ``towpath serve`` and ``runworker`` log
        them as one ``stats {...}`` line) and return them parsed (bound it with
        ``asyncio.timeout``); AssertionError if the process ends its stderr first."""
        marker = " stats {"
        before = sum(marker in line for line in self._stderr.lines)
        self.send_signal(signal.SIGUSR1)
        while True:
            lines = [line for line in self._stderr.lines if marker in line]
            if len(lines) > before:
                parsed: dict[str, Any] = json.loads(lines[-1].partition(" stats ")[2])
                return parsed
            if self._stderr.closed:
                raise AssertionError(f"no stats line on stderr\n{self.output()}")
            await self._stderr.changed()

    def _start_readers(self, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        self._readers = [
            loop.create_task(_drain(stdout, self._stdout)),
            loop.create_task(_drain(stderr, self._stderr)),
        ]

    async def _close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        await asyncio.gather(*self._readers)


async def _drain(stream: asyncio.StreamReader, lines: _Lines) -> None:
    try:
        while line := await stream.readline():
            lines.add(line.decode(errors="replace"))
    finally:
        lines.close()


@asynccontextmanager
async def towpath_serve(
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    listeners: int = 1,
    startup_timeout: float = 15.0,
) -> AsyncIterator[ServeProcess]:
    """Run ``towpath serve *args`` until the block ends; yields once ``listeners`` ready lines
    were printed. ``env`` is added to this process's environment. AssertionError (with the
    process's output) if it exits or stays silent for ``startup_timeout`` seconds first."""
    process = await asyncio.create_subprocess_exec(
        TOWPATH,
        "serve",
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        pass_fds=tuple(pass_fds),
    )
    assert process.stdout is not None and process.stderr is not None
    served = ServeProcess(process, [])
    try:
        served._start_readers(process.stdout, process.stderr)
        async with asyncio.timeout(startup_timeout):
            while len(served.urls) < listeners:
                lines = served.stdout_lines
                if len(lines) > len(served.urls):
                    line = lines[len(served.urls)]
                    if not line.startswith(READY_PREFIX):
                        raise AssertionError(f"unexpected first output\n{served.output()}")
                    served.urls.append(line[len(READY_PREFIX) :].strip())
                    continue
                if served._stdout.closed:
                    status = await process.wait()
                    await asyncio.gather(*served._readers)
                    raise AssertionError(
                        f"towpath serve exited with status {status} before it was ready\n"
                        + served.output()
                    )
                await served._stdout.changed()
        yield served
    finally:
        await served._close()
