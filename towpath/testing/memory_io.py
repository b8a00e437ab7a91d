"""An in-memory transport for the interface server's protocol objects.

A peer of ``interface/transport.py``, not a test hack: it implements the same
:class:`~towpath.interface.protocol.base.ConnectionIO` and runs apps with the same
:class:`~towpath.interface.runner.StreamRunner`, but the bytes written are collected in a
buffer, and timers are only recorded until a test fires them (a 0-second one, "after this loop
turn", runs by itself after the turn, as in the transport). Protocol tests drive a connection
with :meth:`MemoryIO.feed` and read what it wrote with :meth:`MemoryIO.take`::

    io = MemoryIO(app)
    io.attach(HTTP11Connection(io, ServerContext(ServerConfig())))
    io.feed(b"GET / HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n")
    await io.wait_apps()
    assert io.take().startswith(b"HTTP/1.1 200 ")
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from towpath.interface.protocol.base import Connection, Stream
from towpath.interface.runner import ASGIApp, StreamRunner

__all__ = ["MemoryIO"]


class MemoryIO:
    """``ConnectionIO`` over a bytearray; apps run as tasks on the running loop."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: tuple[str, int] | None = ("127.0.0.1", 50000),
        server: tuple[str, int] | None = ("127.0.0.1", 8000),
        tls: bool = False,
        write_high_water: int | None = None,
    ) -> None:
        self.app = app
        #: past this many bytes written and not taken, the connection is told to pause
        #: writing (as the transport does over its high-water mark); ``take`` resumes it
        self.write_high_water = write_high_water
        self.writing_paused = False
        self.client = client
        self.server = server
        self.tls = tls
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        #: armed timers: name -> seconds it was armed for
        self.timers: dict[str, float] = {}
        self._generation = 0
        self.connection: Connection | None = None
        self.runners: dict[Stream, StreamRunner] = {}
        self.streams: list[Stream] = []

    # -- ConnectionIO ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.written += data
            high = self.write_high_water
            if high is not None and len(self.written) > high and not self.writing_paused:
                self.writing_paused = True
                if self.connection is not None:
                    self.connection.pause_writing()

    def write_buffer_size(self) -> int:
        """Bytes written and not taken yet (the peer has not read them)."""
        return len(self.written)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_timer(self, name: str, seconds: float | None) -> None:
        if seconds is None:
            self.timers.pop(name, None)
            return
        self.timers[name] = seconds
        if seconds == 0:
            # "after this loop turn" runs by itself, as in the transport (a flush of what a
            # protocol batched); longer timers wait for fire()
            self._generation += 1
            asyncio.get_running_loop().call_soon(self._run_soon, name, self._generation)

    def _run_soon(self, name: str, generation: int) -> None:
        if self._generation == generation and name in self.timers and not self.closed:
            self.fire(name)

    def start_stream(self, stream: Stream) -> None:
        runner = self.runners[stream] = StreamRunner(self.app, stream)
        self.streams.append(stream)
        runner.start()

    def wake(self, stream: Stream) -> None:
        runner = self.runners.get(stream)
        if runner is not None:
            runner.wake()

    def switch_protocol(self, connection: Connection) -> None:
        self.connection = connection

    # -- driving it -----------------------------------------------------------------------------

    def attach(self, connection: Connection) -> Connection:
        self.connection = connection
        connection.connection_made()
        return connection

    def feed(self, data: bytes) -> None:
        assert self.connection is not None, "attach() a connection first"
        self.connection.data_received(data)

    def feed_eof(self) -> None:
        assert self.connection is not None
        self.connection.eof_received()

    def lose(self) -> None:
        """The peer went away."""
        assert self.connection is not None
        self.closed = True
        self.connection.connection_lost()

    def fire(self, name: str) -> None:
        """Fire an armed timer now."""
        assert self.connection is not None
        del self.timers[name]
        self.connection.timeout(name)

    def take(self) -> bytes:
        """What was written since the last ``take`` (the peer read it: writing resumes)."""
        data = bytes(self.written)
        self.written.clear()
        if self.writing_paused:
            self.writing_paused = False
            if self.connection is not None and not self.closed:
                self.connection.resume_writing()
        return data

    async def wait_apps(self) -> None:
        """Until every app started so far has returned (or raised)."""
        tasks = [runner.task for runner in self.runners.values() if runner.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def run_until(self, condition: Callable[[], bool], *, turns: int = 1000) -> None:
        """Let the loop run (``sleep(0)`` turns, no clock) until ``condition()`` holds."""
        for _ in range(turns):
            if condition():
                return
            await asyncio.sleep(0)
        raise AssertionError(f"condition not reached within {turns} loop turns")
