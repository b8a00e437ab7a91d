"""What every attack of ``python -m bench attacks`` shares: its result, the server it is aimed
at, the normal client and a raw-socket exchange.

An attack is a function ``(target, options) -> Outcome``: it runs against ``target.port``
(loopback) and returns the protocol answer it got (a status, a GOAWAY or close code,
"served", ...), how long that answer took and details for the JSON results. The harness
(``bench/attacks.py``) measures the server around it: RSS, CPU, log bytes, and whether a normal
client (:func:`probe`) was served during and after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
import time
from typing import IO, Any, Protocol

__all__ = [
    "HOST",
    "MIB",
    "Exchange",
    "LogWindow",
    "Outcome",
    "Target",
    "answer_of",
    "exchange",
    "probe",
    "statuses",
]

HOST = "127.0.0.1"
MIB = 1024 * 1024


@dataclasses.dataclass
class Outcome:
    """What an attack saw: ``answer`` for the table, ``seconds`` from its start to that answer
    (None: there was none, or it has no single moment), ``details`` for the JSON."""

    answer: str
    seconds: float | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class Target(Protocol):
    """The server (or stack of processes) an attack is aimed at."""

    name: str
    port: int

    def pids(self) -> list[int]:
        """Every process measured (RSS, CPU), children included."""
        ...

    def logs(self) -> list[IO[bytes]]:
        """The files the processes write their stdout and stderr to."""
        ...

    def exited(self) -> str | None:
        """None while every process runs, else which one exited and how."""
        ...


class LogWindow:
    """What the target's processes log from now on: its size, and an excerpt."""

    def __init__(self, files: list[IO[bytes]]) -> None:
        self.files = files
        self.offsets = [_size(file) for file in files]

    def written(self) -> int:
        return sum(_size(f) - offset for f, offset in zip(self.files, self.offsets, strict=True))

    def excerpt(self, size: int) -> str:
        """The first ``size`` bytes each process wrote since, read without moving the files'
        offset (the processes write through the same open files)."""
        parts = []
        for file, offset in zip(self.files, self.offsets, strict=True):
            with contextlib.suppress(ValueError, OSError):  # closed: stopped already
                parts.append(os.pread(file.fileno(), size, offset))
        return b"".join(part for part in parts if part).decode("utf-8", "replace")


def _size(file: IO[bytes]) -> int:
    try:
        return os.fstat(file.fileno()).st_size
    except (ValueError, OSError):  # closed: stopped already
        return 0


def probe(port: int, timeout: float) -> bool:
    """The normal client: a fresh connection, ``GET /``; True if a 200 came within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@dataclasses.dataclass
class Exchange:
    """Bytes a raw connection got back, when the first arrived, and how it ended."""

    data: bytes
    first_seconds: float | None
    ended: str  # "closed", "reset", "idle" (nothing more within the idle time), "timeout"

    def statuses(self) -> list[int]:
        return statuses(self.data)


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


def statuses(data: bytes) -> list[int]:
    """Every HTTP/1.x status line in ``data`` (responses on one connection, in order)."""
    return [int(code) for code in _STATUS.findall(data)]


def exchange(port: int, request: bytes, wait: float = 3.0, idle: float = 1.0) -> Exchange:
    """Send ``request`` in one write, then read until the server closes, or nothing more comes
    for ``idle`` seconds after something came, or ``wait`` seconds in all."""
    started = time.monotonic()
    deadline = started + wait
    data, first, ended = b"", None, "timeout"
    try:
        with socket.create_connection((HOST, port), timeout=wait) as sock:
            sock.sendall(request)
            while True:
                left = deadline - time.monotonic()
                if data:
                    left = min(left, idle)
                if left <= 0:
                    break
                sock.settimeout(left)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    ended = "idle" if data else "timeout"
                    break
                if not chunk:
                    ended = "closed"
                    break
                if first is None:
                    first = time.monotonic() - started
                data += chunk
    except ConnectionResetError:
        ended = "reset"
    except OSError as exc:
        ended = f"error: {exc}"
    return Exchange(data, first, ended)


def answer_of(result: Exchange, limit: float) -> str:
    """The table's answer for one request: its statuses, or how the connection ended."""
    codes = result.statuses()
    if codes:
        text = ", ".join(str(code) for code in codes)
        return text if result.ended == "closed" else f"{text} (then {result.ended})"
    if result.ended == "timeout":
        return f"no answer in {limit:g} s"
    return f"{result.ended}, no status" if result.data else f"{result.ended}, nothing sent"
