"""HTTP/1.1 request framing checks that h11 leaves out, on the raw bytes, before h11 parses them.

h11 refuses most malformed requests itself (conflicting ``Content-Length`` values, unknown
transfer codings, control characters, a missing ``Host``), but some requests two HTTP parsers
read differently pass it, and one proxy in front of us reading a request otherwise than we do
is request smuggling. :func:`check_head` looks at a complete request head as received and
answers the status to refuse it with (RFC 9112 section in brackets):

- 431 past ``max_header_bytes`` (414 when the request line alone is longer) or past
  ``max_header_count`` fields; h11 only bounds a head that arrives in pieces;
- 400 for ``Content-Length`` together with ``Transfer-Encoding`` (6.1, 6.3: "ought to be
  handled as an error"; the connection closes after any 400), for ``Content-Length`` sent twice
  or as a list (8.6 of RFC 9110 lets a recipient refuse it, as llhttp and Twisted do; h11
  merges equal values), for ``Transfer-Encoding`` whose last coding is not ``chunked`` or that
  names ``chunked`` twice (6.3: "MUST respond with the 400"), for ``Transfer-Encoding`` in an
  HTTP/1.0 request (6.1: the framing is faulty), for an obs-fold line (5.2: reject or unfold;
  h11 unfolds) and for a bare LF ending a line (2.2 allows accepting it; h11 does, llhttp does
  not);
- 501 for a transfer coding other than ``chunked`` before it (6.1; h11 says the same);
- 505 for an HTTP major version other than 1 (``HTTP/2.0``, ``HTTP/9.9``; the HTTP/2
  preface ``PRI * HTTP/2.0`` is the caller's).

:class:`ChunkScanner` follows a chunked body's framing in the raw bytes and refuses a chunk
size of 2^63 or more (400: h11 takes up to 20 hex digits, other parsers overflow on them) and,
with ``max_body_bytes``, a chunk that announces more body than allowed (413) before its bytes
arrive.
"""

from __future__ import annotations

import re

from towpath.interface.config import ServerConfig

__all__ = ["MAX_CHUNK_SIZE", "ChunkScanner", "HeadCheck", "check_head"]

#: the largest chunk size taken: what fits a signed 64-bit integer
MAX_CHUNK_SIZE = 2**63 - 1

#: the end of a head: h11 takes ``\n`` or ``\r\n`` before the last line break
_HEAD_END = re.compile(rb"\n\r?\n")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_VERSIONS_1X = (b" HTTP/1.1", b" HTTP/1.0")
#: a line folded onto the one before (obs-fold)
_FOLD = re.compile(rb"\n[ \t]")
#: a field that frames the body (h11 refuses whitespace before the colon itself)
_FRAMING = re.compile(rb"\n(?:content-length|transfer-encoding):", re.IGNORECASE)
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class HeadCheck:
    """What :func:`check_head` found: ``status`` to answer (None: acceptable, or not complete
    yet when ``length`` is None), ``reason`` for the debug log, ``length`` of the head in
    bytes, and ``chunked``: the body is chunked."""

    __slots__ = ("chunked", "length", "reason", "status")

    def __init__(
        self,
        status: int | None = None,
        reason: str = "",
        length: int | None = None,
        chunked: bool = False,
    ) -> None:
        self.status = status
        self.reason = reason
        self.length = length
        self.chunked = chunked


_INCOMPLETE = HeadCheck()


def _too_long(buffer: bytes | bytearray, limit: int) -> HeadCheck:
    if buffer.find(b"\n", 0, limit) == -1:
        return HeadCheck(414, f"request line over max_header_bytes ({limit})")
    return HeadCheck(431, f"request head over max_header_bytes ({limit})")


def check_head(buffer: bytes | bytearray, config: ServerConfig, searched: int = 0) -> HeadCheck:
    """Check the request head at the start of ``buffer`` (what h11 has not parsed yet; only its
    first ``max_header_bytes`` + 1 bytes are looked at); ``searched``: bytes already known to
    hold no end of head."""
    limit = config.max_header_bytes
    end = _HEAD_END.search(buffer, max(0, searched - 2), limit)
    if end is None:
        return _too_long(buffer, limit) if len(buffer) > limit else _INCOMPLETE
    length = end.end()
    head = buffer[:length]
    lines = head.count(b"\n")
    if lines != head.count(b"\r\n"):
        return HeadCheck(400, "a line ends in a bare LF", length)
    if _FOLD.search(head) is not None:
        return HeadCheck(400, "obsolete line folding", length)
    if lines - 2 > config.max_header_count:
        return HeadCheck(431, f"more than max_header_count ({config.max_header_count}) fields")
    request_line = head[: head.find(b"\r\n")]
    if not request_line.endswith(_VERSIONS_1X):
        version = _VERSION.fullmatch(request_line.rpartition(b" ")[2])
        if version is not None and version.group(1) != b"1":
            if request_line.startswith(b"PRI * "):
                return HeadCheck(None, "", length)  # the HTTP/2 preface: the caller's
            return HeadCheck(505, f"HTTP version {version.group(0).decode()}", length)
    if _FRAMING.search(head) is None:
        return HeadCheck(None, "", length)
    return _check_framing(head.lower(), length, request_line.endswith(b" HTTP/1.0"))


def _values(lowered: bytes | bytearray, name: bytes) -> list[bytes]:
    """The values of every ``name:`` field line of a lower-cased head."""
    values = []
    start = lowered.find(name)
    while start != -1:
        value_start = start + len(name)
        values.append(bytes(lowered[value_start : lowered.find(b"\r\n", value_start)].strip()))
        start = lowered.find(name, value_start)
    return values


def _check_framing(lowered: bytes | bytearray, length: int, http10: bool) -> HeadCheck:
    lengths = _values(lowered, b"\ncontent-length:")
    encodings = _values(lowered, b"\ntransfer-encoding:")
    if len(lengths) > 1 or (lengths and b"," in lengths[0]):
        return HeadCheck(400, "more than one Content-Length", length)
    if not encodings:
        return HeadCheck(None, "", length)
    if lengths:
        return HeadCheck(400, "both Content-Length and Transfer-Encoding", length)
    if http10:
        return HeadCheck(400, "Transfer-Encoding in an HTTP/1.0 request", length)
    codings = [c.strip() for value in encodings for c in value.split(b",") if c.strip()]
    if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
        return HeadCheck(400, "Transfer-Encoding does not end in one chunked", length)
    if len(codings) > 1:
        return HeadCheck(501, "a transfer coding other than chunked", length)
    return HeadCheck(None, "", length, chunked=True)


# ChunkScanner states
_SIZE = 0  # in a chunk-size line
_DATA = 1  # in chunk data
_DATA_END = 2  # in the CRLF after chunk data
_TRAILER = 3  # in the trailer section
_DONE = 4


class ChunkScanner:
    """Follows one chunked request body in the raw bytes (fed from its first byte on, in the
    pieces the socket gives). :meth:`feed` answers a status to refuse the request with, or
    None; :attr:`done` once the body (trailers included) ended, or once the framing is one
    h11 refuses itself (scanning stops and h11 answers)."""

    __slots__ = ("_left", "_line", "_state", "_total", "max_body_bytes")

    def __init__(self, max_body_bytes: int | None) -> None:
        self.max_body_bytes = max_body_bytes
        self._state = _SIZE
        self._left = 0
        self._line = bytearray()  # the start of the current line (at most 64 bytes)
        self._total = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes | memoryview) -> int | None:
        view = memoryview(data)
        size = len(view)
        at = 0
        while at < size and self._state != _DONE:
            state = self._state
            if state == _DATA:
                step = min(self._left, size - at)
                self._left -= step
                at += step
                if not self._left:
                    self._state = _DATA_END
                    self._left = 2
            elif state == _DATA_END:
                step = min(self._left, size - at)
                self._left -= step
                at += step
                if not self._left:
                    self._state = _SIZE
            else:  # a line: the chunk size, or a trailer field
                newline = bytes(view[at : at + 4096]).find(b"\n")
                stop = size if newline == -1 else at + newline + 1
                if len(self._line) < 64:
                    self._line += view[at : min(stop, at + 64 - len(self._line))]
                at = stop
                if newline != -1:
                    status = self._line_done(bytes(self._line))
                    self._line.clear()
                    if status is not None:
                        return status
        return None

    def _line_done(self, line: bytes) -> int | None:
        if self._state == _TRAILER:
            if line in (b"\r\n", b"\n"):
                self._state = _DONE
            return None
        digits = _HEX.match(line)
        if digits is None:
            self._state = _DONE  # h11 refuses it
            return None
        chunk = int(digits.group(0), 16)
        if chunk > MAX_CHUNK_SIZE:
            self._state = _DONE
            return 400
        self._total += chunk
        if self.max_body_bytes is not None and self._total > self.max_body_bytes:
            self._state = _DONE
            return 413
        if chunk:
            self._state = _DATA
            self._left = chunk
        else:
            self._state = _TRAILER
        return None
