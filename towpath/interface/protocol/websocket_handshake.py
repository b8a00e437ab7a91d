"""The server's half of a WebSocket handshake, the same on HTTP/1.1 and HTTP/2 (RFC 8441):
what makes it refused (:func:`handshake_problem`: version, key, ``Origin``), the subprotocols it
offers, and the permessage-deflate offer taken (:func:`negotiate_deflate`).

permessage-deflate keeps a zlib compressor and decompressor per connection for as long as it
is open (context takeover), so its memory is paid by every idle connection. It is bounded as
the ``websockets`` library bounds it: our compressor uses a 4 KiB window
(``server_max_window_bits=12``, always sent in the answer: RFC 7692 7.1.2.1 lets the server
name it unasked) and ``memLevel=5`` instead of zlib's 32 KiB and 8; a client that offers
``client_max_window_bits`` is asked for 12 too (a client that does not offer it may use 15, so
our decompressor then keeps a 32 KiB window). Both are made on the first message, not on accept.
"""

from __future__ import annotations

import binascii
import zlib
from typing import TYPE_CHECKING

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import Opcode, RsvBits

from towpath.interface.config import ServerConfig
from towpath.origins import OriginPatterns

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

__all__ = [
    "DEFLATE_MEMORY_LEVEL",
    "DEFLATE_WINDOW_BITS",
    "BoundedPerMessageDeflate",
    "handshake_problem",
    "negotiate_deflate",
    "offered_subprotocols",
]

#: the largest LZ77 window (2**bits bytes) our compressor uses, and the one asked of clients
DEFLATE_WINDOW_BITS = 12
#: zlib's memLevel for our compressor (its hash table is 2**(level + 9) bytes; zlib's default 8)
DEFLATE_MEMORY_LEVEL = 5


def _header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    values: list[str] = []
    for key, value in headers:
        if key.lower() == name:
            for piece in value.decode("latin-1").split(","):
                piece = piece.strip()
                if piece:
                    values.append(piece)
    return values


def offered_subprotocols(headers: list[tuple[bytes, bytes]]) -> list[str]:
    """The subprotocols a handshake offers (``Sec-WebSocket-Protocol``), in order."""
    return _header_values(headers, b"sec-websocket-protocol")


_patterns: dict[tuple[str, ...], OriginPatterns] = {}


def origin_allowed(headers: list[tuple[bytes, bytes]], allowed: tuple[str, ...]) -> bool:
    """Whether the handshake's ``Origin`` matches ``allowed`` (``ws_allowed_origins``; empty:
    any). A handshake without ``Origin`` passes: browsers always send one, and a client that is
    not a browser could send any."""
    if not allowed:
        return True
    patterns = _patterns.get(allowed)
    if patterns is None:
        patterns = _patterns[allowed] = OriginPatterns(allowed)
    origins = [value for name, value in headers if name.lower() == b"origin"]
    if len(origins) > 1:
        return False
    origin = origins[0].decode("latin-1") if origins else None
    return patterns.allows(origin, allow_missing=True)


def handshake_problem(
    headers: list[tuple[bytes, bytes]], *, http2: bool, config: ServerConfig | None = None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
    """Why this handshake cannot be accepted, as ``(status, reason, extra headers)``, or None.

    Version 13 is required on both carriers (426 with ``Sec-WebSocket-Version: 13`` if not);
    HTTP/1.1 also needs a ``Sec-WebSocket-Key`` of 16 base64 bytes (400). With ``config``, an
    ``Origin`` outside its ``ws_allowed_origins`` is refused with 403. The method (GET, or
    CONNECT with ``:protocol websocket``) is the calling connection's to check.
    """
    version = key = None
    for name, value in headers:
        name = name.lower()
        if name == b"sec-websocket-version":
            version = value.strip()
        elif name == b"sec-websocket-key":
            key = value.strip()
    if version != b"13":
        return 426, b"Unsupported WebSocket version", [(b"sec-websocket-version", b"13")]
    if not http2:
        if key is None:
            return 400, b"Missing Sec-WebSocket-Key", []
        try:
            if len(binascii.a2b_base64(key, strict_mode=True)) != 16:
                raise ValueError(key)
        except (binascii.Error, ValueError):
            return 400, b"Invalid Sec-WebSocket-Key", []
    if config is not None and not origin_allowed(headers, config.ws_allowed_origins):
        return 403, b"Origin not allowed", []
    return None


class BoundedPerMessageDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate with our compressor made at ``DEFLATE_MEMORY_LEVEL``
    (wsproto's own takes zlib's default); everything else is wsproto's."""

    def __init__(self) -> None:
        super().__init__()
        self._bounded_compressor: zlib._Compress | None = None

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if opcode not in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
            return rsv, data
        if opcode is not Opcode.CONTINUATION:
            rsv = RsvBits(True, rsv[1], rsv[2])
        compressor = self._bounded_compressor
        if compressor is None:
            bits = self.client_max_window_bits if proto.client else self.server_max_window_bits
            compressor = self._bounded_compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, DEFLATE_MEMORY_LEVEL
            )
        data = compressor.compress(bytes(data))
        if fin:
            data += compressor.flush(zlib.Z_SYNC_FLUSH)
            data = data[:-4]  # RFC 7692 7.2.1: the empty block's 00 00 ff ff is not sent
            no_takeover = (
                self.client_no_context_takeover if proto.client else self.server_no_context_takeover
            )
            if no_takeover:
                self._bounded_compressor = None
        return rsv, data


def _bounded_offer(offer: str) -> str:
    """``offer`` with its window sizes capped at ``DEFLATE_WINDOW_BITS`` (and ours named)."""
    params = [param.strip() for param in offer.split(";")[1:]]
    out = ["permessage-deflate"]
    server_bits = DEFLATE_WINDOW_BITS
    for param in params:
        name, _, value = param.partition("=")
        name, value = name.strip(), value.strip().strip('"')
        if name == "server_max_window_bits":
            server_bits = min(int(value), DEFLATE_WINDOW_BITS)  # ValueError: not a number
        elif name == "client_max_window_bits":
            bits = min(int(value), DEFLATE_WINDOW_BITS) if value else DEFLATE_WINDOW_BITS
            out.append(f"client_max_window_bits={bits}")
        elif param:
            out.append(param)
    out.append(f"server_max_window_bits={server_bits}")
    return "; ".join(out)


def negotiate_deflate(headers: list[tuple[bytes, bytes]]) -> tuple[Extension, bytes] | None:
    """The first permessage-deflate offer we can take, as the extension and its header."""
    for offer in _header_values(headers, b"sec-websocket-extensions"):
        if offer.split(";", 1)[0].strip() != "permessage-deflate":
            continue
        extension = BoundedPerMessageDeflate()
        try:
            params = extension.accept(_bounded_offer(offer))
        except ValueError:  # a malformed window size
            continue
        if params is None or params is False:
            continue
        value = (
            "permessage-deflate" if params is True or not params else f"{extension.name}; {params}"
        )
        return extension, value.encode("ascii")
    return None
