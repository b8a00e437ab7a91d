"""The access log: daphne's NCSA-like rows, WebSocket rows included.

::

    127.0.0.1 - - [22/Nov/2026:16:00:00] "GET /path" 200 12
    127.0.0.1 - - [22/Nov/2026:16:00:01] "WSCONNECTING /chat" - -
    127.0.0.1 - - [22/Nov/2026:16:00:01] "WSCONNECT /chat" - -

An :class:`AccessLogWriter` is the :class:`~towpath.interface.protocol.base.AccessLog` callable
of a server's :class:`ServerContext`. Rows go to a buffered text stream (stdout for ``-``, else
a file opened for appending); the timestamp string is rebuilt at most once a second, and the
buffer is flushed by the server on a timer and at close, not per row.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TextIO

from towpath.interface.protocol.base import Stream

__all__ = ["AccessLogWriter", "open_access_log"]

_WS_ROWS = {
    "websocket.connecting": "WSCONNECTING",
    "websocket.connected": "WSCONNECT",
    "websocket.rejected": "WSREJECT",
    "websocket.disconnected": "WSDISCONNECT",
}


class AccessLogWriter:
    """Formats one row per action and writes it to ``stream`` (buffered)."""

    __slots__ = ("_date", "_owned", "_second", "stream")

    def __init__(self, stream: TextIO, *, owned: bool = False) -> None:
        self.stream = stream
        self._owned = owned
        self._second = -1
        self._date = ""

    def _now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._date = time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(now))
        return self._date

    def __call__(self, action: str, stream: Stream) -> None:
        scope = stream.scope
        client = scope.get("client")
        host = client[0] if client else "-"
        if action == "http.complete":
            status = stream.status
            request = f"{scope.get('method', '-')} {scope.get('path', '')}"
            size = stream.response_bytes
            self.stream.write(
                f'{host} - - [{self._now()}] "{request}" {status or "-"} {size or "-"}\n'
            )
            return
        word = _WS_ROWS.get(action)
        if word is not None:
            self.stream.write(f'{host} - - [{self._now()}] "{word} {scope.get("path", "")}" - -\n')

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self.stream.close()


def open_access_log(target: str | None) -> AccessLogWriter | None:
    """The writer for ``config.access_log``: None off, ``-`` stdout, else a file (appended)."""
    if target is None:
        return None
    if target == "-":
        return AccessLogWriter(sys.stdout)
    return AccessLogWriter(open(target, "a", encoding="utf-8", buffering=64 * 1024), owned=True)
