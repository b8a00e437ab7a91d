"""Response head pieces more than one protocol writes: the ``date`` value (formatted once a
second), HTTP/1.1 status lines, and the check that keeps an app's header from splitting a
response (HTTP/1.1 responses, and WebSocket handshake answers on either protocol)."""

from __future__ import annotations

import http
import re
import time
from email.utils import formatdate

__all__ = ["PHRASES", "bad_header", "date_value", "status_line"]

#: reason phrases by status code
PHRASES = {status.value: status.phrase.encode("ascii") for status in http.HTTPStatus}

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINES = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, phrase) for status, phrase in PHRASES.items()
}

_date_second = -1
_date_bytes = b""


def date_value() -> bytes:
    """The ``date`` header value, formatted once per second."""
    global _date_second, _date_bytes
    now = int(time.time())
    if now != _date_second:
        _date_bytes = formatdate(now, usegmt=True).encode("ascii")
        _date_second = now
    return _date_bytes


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <phrase>\\r\\n`` (an empty phrase for a code without one)."""
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def bad_header(name: bytes, value: bytes) -> bool:
    """True unless ``name`` is a token and ``value`` has no control character but tab (so no
    CR or LF that would end the header, or the head, early)."""
    return _TOKEN.fullmatch(name) is None or _BAD_VALUE.search(value) is not None
