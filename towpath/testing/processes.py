"""Real processes for end-to-end tests::

    async with towpath_serve("--settings", str(settings_py), "--port", "0") as served:
        async with towpath_process("runworker", "--settings", str(settings_py)):
            async with httpx.AsyncClient() as client:
                response = await client.get(served.url + "/")
        served.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await served.wait() == 0

:func:`towpath_process` runs a ``towpath`` command (the console script of the running
interpreter's environment, the one next to ``sys.executable``) and yields once the command has
printed its documented ready line: ``towpath serve`` and ``towpath runserver`` print ``towpath
serving on URL`` on stdout, one per listener (so ``--port 0`` gives the real address and nothing
waits on a fixed port); ``towpath runworker`` logs ``worker listening on CHANNELS`` once it has
reached its layer. :func:`towpath_serve` is ``towpath_process("serve", ...)``;
:func:`running_process` runs any other program.

Both output pipes are drained in the background, so a chatty process never blocks on a full
pipe; the lines are kept for assertions (:meth:`ServeProcess.wait_for_stderr`,
:meth:`ServeProcess.wait_for_stdout`) and for failure messages. Leaving the block kills the
process if it is still running.
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

__all__ = [
    "READY_PREFIX",
    "TOWPATH",
    "WORKER_READY",
    "ServeProcess",
    "running_process",
    "towpath_process",
    "towpath_serve",
]

#: the ``towpath`` console script installed beside the running interpreter
TOWPATH = str(Path(sys.executable).with_name("towpath"))
#: how ``towpath serve`` announces each listener on stdout, followed by its URL
READY_PREFIX = "towpath serving on "
#: how ``towpath runworker`` says it is ready, in its log (stderr), followed by its channels
WORKER_READY = "worker listening on "


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
    """A running process (``towpath serve``, ``runserver``, ``runworker``, or any program): the
    process, the URLs it reported (a server's), its output so far."""

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
        return await self._wait_for(self._stderr, "stderr", text)

    async def wait_for_stdout(self, text: str) -> str:
        """The first stdout line containing ``text``, as :meth:`wait_for_stderr`."""
        return await self._wait_for(self._stdout, "stdout", text)

    async def _wait_for(self, pipe: _Lines, name: str, text: str) -> str:
        seen = 0
        while True:
            lines = pipe.lines
            for line in lines[seen:]:
                if text in line:
                    return line
            seen = len(lines)
            if pipe.closed:
                raise AssertionError(f"no {text!r} on {name}\n{self.output()}")
            await pipe.changed()

    async def wait_until_serving(self, listeners: int = 1) -> None:
        """Wait (bound it with ``asyncio.timeout``) until a server printed ``listeners`` ready
        lines (``towpath serving on URL``, its first output), their URLs in :attr:`urls`;
        AssertionError with the output if it says something else first or exits."""
        while len(self.urls) < listeners:
            lines = self.stdout_lines
            if len(lines) > len(self.urls):
                line = lines[len(self.urls)]
                if not line.startswith(READY_PREFIX):
                    raise AssertionError(f"unexpected first output\n{self.output()}")
                self.urls.append(line[len(READY_PREFIX) :].strip())
                continue
            if self._stdout.closed:
                status = await self.wait()
                raise AssertionError(
                    f"exited with status {status} before it was ready\n{self.output()}"
                )
            await self._stdout.changed()

    async def wait_until_listening(self) -> None:
        """Wait (bound it with ``asyncio.timeout``) until a worker logged ``worker listening
        on CHANNELS``; AssertionError with the output if it exits first."""
        try:
            await self.wait_for_stderr(WORKER_READY)
        except AssertionError:
            status = await self.wait()
            raise AssertionError(
                f"exited with status {status} before it was ready\n{self.output()}"
            ) from None

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
async def running_process(
    *argv: str,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> AsyncIterator[ServeProcess]:
    """Run the program ``argv`` until the block ends (killed then if it still runs), its output
    drained and kept; yields at once. ``env`` is added to this process's environment."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        pass_fds=tuple(pass_fds),
    )
    assert process.stdout is not None and process.stderr is not None
    running = ServeProcess(process, [])
    try:
        running._start_readers(process.stdout, process.stderr)
        yield running
    finally:
        await running._close()


@asynccontextmanager
async def towpath_process(
    command: str,
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    listeners: int = 1,
    startup_timeout: float = 15.0,
    ready: bool = True,
) -> AsyncIterator[ServeProcess]:
    """Run ``towpath COMMAND *args`` until the block ends; yields once it is ready: ``serve``
    and ``runserver`` once ``listeners`` ready lines were printed (their URLs in ``.urls``),
    ``runworker`` once it logged that it listens. ``ready=False`` yields at once, for a process
    expected not to get there. ``env`` is added to this process's environment. AssertionError
    (with the process's output) if it exits or stays silent for ``startup_timeout`` seconds
    first."""
    argv = (TOWPATH, command, *args)
    async with running_process(*argv, cwd=cwd, env=env, pass_fds=pass_fds) as running:
        if ready:
            async with asyncio.timeout(startup_timeout):
                if command == "runworker":
                    await running.wait_until_listening()
                else:
                    await running.wait_until_serving(listeners)
        yield running


@asynccontextmanager
async def towpath_serve(
    *args: str,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    listeners: int = 1,
    startup_timeout: float = 15.0,
) -> AsyncIterator[ServeProcess]:
    """``towpath serve *args`` until the block ends, once it printed ``listeners`` ready lines
    (:func:`towpath_process`)."""
    async with towpath_process(
        "serve",
        *args,
        cwd=cwd,
        env=env,
        pass_fds=pass_fds,
        listeners=listeners,
        startup_timeout=startup_timeout,
    ) as served:
        yield served
