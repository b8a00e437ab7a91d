"""A hostile HTTP/2 client and the app it attacks, for the server's hardening tests and for
``bench/h2_hostile.py``.

:class:`HostileH2` speaks HTTP/2 on a blocking socket with the ``h2`` library and misbehaves on
purpose: it opens huge flow-control windows and never reads, resets every stream it opens
(CVE-2023-44487, "Rapid Reset"), floods PING or SETTINGS frames, sends header lists over the
server's limits. A reader thread (``read=True``) takes whatever the server writes, so a GOAWAY
is seen even when the server closes right after it; with ``read=False`` nothing is read, ever.

``app`` is the ASGI app those attacks are aimed at (``towpath serve
towpath.testing.hostile_h2:app``): ``/stream?mib=N&chunk_kib=K`` sends ``N`` MiB in ``K`` KiB
``http.response.body`` messages from one buffer (so the app itself holds only ``K`` KiB) and
prints ``hostile-app: sent /stream`` on stderr once its last ``send`` returned; any other path
answers ``ok``.

:func:`rss_bytes` and :func:`cpu_seconds` read a process's resident memory and CPU time from
``/proc`` (Linux); :func:`idle` waits until a process stops using CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes
from hyperframe.frame import PingFrame, SettingsFrame

__all__ = [
    "MAX_WINDOW",
    "PING",
    "SETTINGS",
    "HostileH2",
    "Seen",
    "app",
    "cpu_seconds",
    "idle",
    "rss_bytes",
]

#: the largest flow-control window HTTP/2 allows (RFC 9113 6.9.1)
MAX_WINDOW = 2**31 - 1


# -- the app under attack -------------------------------------------------------------------------


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/stream":
        query = parse_qs(scope["query_string"].decode())
        total = int(float(query.get("mib", ["1"])[0]) * 1024 * 1024)
        chunk = bytes(int(float(query.get("chunk_kib", ["1024"])[0]) * 1024))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        left = total
        while left > 0:
            piece = chunk if left >= len(chunk) else chunk[:left]
            left -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": left > 0})
        print(f"hostile-app: sent {scope['path']}", file=sys.stderr, flush=True)
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


# -- /proc ----------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle(pid: int, quiet_seconds: float = 0.3) -> float:
    """Wait until process ``pid`` stops using CPU (no tick for ``quiet_seconds``): what it was
    doing (pushing a response into its buffers, answering a flood) is over. No event says
    that, so ``/proc`` is polled; bound the wait with ``asyncio.timeout``. Its CPU seconds."""
    used = cpu_seconds(pid)
    still_since = time.monotonic()
    while time.monotonic() - still_since < quiet_seconds:
        await asyncio.sleep(0.05)
        now = cpu_seconds(pid)
        if now != used:
            used, still_since = now, time.monotonic()
    return used


# -- the client -----------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the reader thread saw from the server."""

    #: GOAWAY: its error code and when it arrived (``time.monotonic()``)
    goaway: ErrorCodes | int | None = None
    goaway_at: float | None = None
    statuses: dict[int, int] = field(default_factory=dict)
    resets: dict[int, ErrorCodes | int] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    data_bytes: int = 0
    #: the server closed the connection (EOF or reset)
    closed: bool = False


class HostileH2:
    """An HTTP/2 client on a blocking socket that attacks the server it talks to.

    ``window``: advertise this stream window and open the connection window as far, so the
    server may send that much without a WINDOW_UPDATE. ``read``: run the reader thread (else
    nothing the server sends is ever read). Use it as a context manager: leaving closes it."""

    def __init__(
        self, host: str, port: int, *, window: int | None = None, read: bool = True
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=10.0)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.seen = Seen()
        #: why a write failed (``TimeoutError``: the server stopped reading for the socket's
        #: timeout; ``BrokenPipeError``, ``ConnectionResetError``: it closed), None while none did
        self.write_failed: str | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.authority = f"{host}:{port}"
        with self._lock:
            self.h2.initiate_connection()
            if window is not None:
                # a SETTINGS of its own: h2 sends only its defaults in the first one
                self.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: window})
                if window > 65535:
                    self.h2.increment_flow_control_window(window - 65535)
            data = self.h2.data_to_send()
        self.sock.sendall(data)
        self._reader: threading.Thread | None = None
        if read:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def __enter__(self) -> HostileH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self._reader is not None:
            self._reader.join(5)

    # -- sending --------------------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Write raw bytes; False once the server has closed (or the write stalled past the
        socket's timeout: the server stopped reading)."""
        try:
            self.sock.sendall(data)
        except OSError as exc:
            # TimeoutError: the server stopped reading; BrokenPipe/ConnectionReset: it closed
            self.write_failed = type(exc).__name__
            return False
        return True

    def _flush(self) -> bool:
        with self._lock:
            data = self.h2.data_to_send()
        return self.send(data) if data else True

    def request(
        self, path: str = "/", headers: list[tuple[str, str]] | None = None, end: bool = True
    ) -> int:
        """Send a GET (its HEADERS only, END_STREAM unless ``end`` is false); its stream id."""
        with self._lock:
            stream_id = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream_id, self._head(path, headers), end_stream=end)
        self._flush()
        return stream_id

    def _head(self, path: str, headers: list[tuple[str, str]] | None) -> list[tuple[str, str]]:
        return [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", self.authority),
            (":path", path),
            *(headers or []),
        ]

    def rapid_reset(self, pairs: int, batch: int = 100) -> int:
        """Open a stream and reset it at once (HEADERS then RST_STREAM CANCEL), ``pairs``
        times, ``batch`` pairs per write, until done or the server closed; pairs written."""
        head = self._head("/", None)
        sent = 0
        while sent < pairs:
            with self._lock:
                try:
                    for _ in range(min(batch, pairs - sent)):
                        stream_id = self.h2.get_next_available_stream_id()
                        self.h2.send_headers(stream_id, head, end_stream=True)
                        self.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
                        sent += 1
                except H2Error:  # h2 saw the GOAWAY: it refuses new streams
                    return sent
                data = self.h2.data_to_send()
            if not self.send(data):
                return sent
        return sent

    def flood(self, frame: bytes, count: int, *, seconds: float | None = None) -> int:
        """Write ``frame`` (raw bytes of one frame) ``count`` times, 1000 per write, until done,
        ``seconds`` passed, a GOAWAY came, or the server closed or stopped reading; frames
        written."""
        blob = frame * 1000
        deadline = None if seconds is None else time.monotonic() + seconds
        sent = 0
        seen = self.seen
        while sent < count and (deadline is None or time.monotonic() < deadline):
            if seen.goaway is not None:
                return sent
            if not self.send(blob):
                return sent
            sent += 1000
        return sent

    # -- reading --------------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                with self._lock:
                    try:
                        events = self.h2.receive_data(data)
                    except H2Error:
                        continue  # after a GOAWAY h2 refuses the rest: only GOAWAY mattered
                    self._record(events)
                    outgoing = self.h2.data_to_send()
                    self._changed.notify_all()
                if outgoing:
                    self.send(outgoing)
        except OSError:
            pass
        with self._lock:
            self.seen.closed = True
            self._changed.notify_all()

    def _record(self, events: list[Any]) -> None:
        seen = self.seen
        for event in events:
            if isinstance(event, ResponseReceived):
                status = dict(event.headers or [])[b":status"]
                seen.statuses[event.stream_id] = int(status)
            elif isinstance(event, DataReceived):
                seen.data_bytes += len(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                seen.ended.add(event.stream_id)
            elif isinstance(event, StreamReset):
                seen.resets[event.stream_id] = event.error_code
            elif isinstance(event, ConnectionTerminated):
                seen.goaway = event.error_code
                seen.goaway_at = time.monotonic()

    def wait(self, condition: Callable[[Seen], bool], timeout: float = 10.0) -> bool:
        """Wait (blocking) until ``condition(seen)`` holds, or the connection closed, or
        ``timeout``; whether it holds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self.seen):
                left = deadline - time.monotonic()
                if self.seen.closed or left <= 0:
                    return condition(self.seen)
                self._changed.wait(left)
            return True

    def read_all(self, expect: int, timeout: float = 10.0) -> int:
        """Read (in this thread) until ``expect`` DATA bytes came, the server closed, or it
        went quiet for ``timeout``: the DATA bytes received. Frames are counted without h2
        (for a client that did not read so far, whose h2 state no longer matters)."""
        self.sock.settimeout(timeout)
        buffer = bytearray()
        total = 0
        try:
            while total < expect:
                data = self.sock.recv(1 << 20)
                if not data:
                    break
                buffer += data
                while len(buffer) >= 9:
                    size = int.from_bytes(buffer[:3], "big")
                    if len(buffer) < 9 + size:
                        break
                    if buffer[3] == 0:  # DATA (no padding: the server never pads)
                        total += size
                    del buffer[: 9 + size]
        except OSError:
            pass
        return total


#: one PING frame and one empty SETTINGS frame, to flood with
PING = PingFrame(0, opaque_data=b"hostile!").serialize()
SETTINGS = SettingsFrame(0).serialize()
