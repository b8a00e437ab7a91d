"""The head of an HTTP/2 request, read and checked in one pass (RFC 9113 8.2 and 8.3).

h2 can check every received header block itself (``validate_inbound_headers``), but it walks the
headers in nine separate generator passes, which cost about 15% of the server's time per
request. The server turns that off and checks request heads here instead, in the loop that also
picks out the pseudo-headers, joins split ``cookie`` fields (RFC 9113 8.2.3) and gives the app a
``host`` header from ``:authority``. A malformed head is a stream error: the caller resets the
stream with ``PROTOCOL_ERROR`` and the connection goes on. Trailers are not checked: the server
never hands request trailers to an app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MalformedRequest", "RequestHead", "read_request_head"]

#: a field name: a token, in lowercase (RFC 9113 8.2.1: uppercase is malformed)
_NAME = re.compile(rb"[a-z0-9!#$%&'*+.^_`|~-]+")
#: a method: a token
_METHOD = re.compile(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
#: NUL, CR or LF anywhere, or whitespace at either end, make a value malformed (8.2.1)
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
#: connection-specific fields (8.2.2)
_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade")
)


class MalformedRequest(ValueError):
    """The request head breaks RFC 9113; the message says how."""


@dataclass(slots=True)
class RequestHead:
    method: bytes
    path: bytes | None
    scheme: bytes | None
    authority: bytes | None
    protocol: bytes | None
    content_length: bytes | None
    #: the regular fields, ``host`` first when only ``:authority`` gave it, cookies joined
    headers: list[tuple[bytes, bytes]]


def read_request_head(fields: list[tuple[bytes, bytes]]) -> RequestHead:
    """Split ``fields`` (as h2 decoded them, bytes) into pseudo-headers and the app's headers,
    raising :class:`MalformedRequest` for a head RFC 9113 calls malformed."""
    method = path = scheme = authority = protocol = content_length = host = None
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] | None = None
    regular = False
    for name, value in fields:
        if _BAD_VALUE.search(value) is not None:
            raise MalformedRequest(f"bad value for {name!r}")
        if name[:1] == b":":
            if regular:
                raise MalformedRequest(f"{name!r} after a regular field")
            if name == b":method":
                if method is not None or _METHOD.fullmatch(value) is None:
                    raise MalformedRequest("bad or repeated :method")
                method = value
            elif name == b":path":
                if path is not None:
                    raise MalformedRequest("repeated :path")
                path = value
            elif name == b":scheme":
                if scheme is not None:
                    raise MalformedRequest("repeated :scheme")
                scheme = value
            elif name == b":authority":
                if authority is not None:
                    raise MalformedRequest("repeated :authority")
                authority = value
            elif name == b":protocol":
                if protocol is not None:
                    raise MalformedRequest("repeated :protocol")
                protocol = value
            else:
                raise MalformedRequest(f"unknown pseudo-header {name!r}")
            continue
        regular = True
        if _NAME.fullmatch(name) is None:
            raise MalformedRequest(f"bad field name {name!r}")
        if name in _CONNECTION_SPECIFIC:
            raise MalformedRequest(f"connection-specific field {name!r}")
        if name == b"host":
            host = value
        elif name == b"content-length":
            content_length = value
        elif name == b"te":
            if value != b"trailers":
                raise MalformedRequest("te other than 'trailers'")
        elif name == b"cookie":
            if cookies is None:
                cookies = []
            cookies.append(value)
            continue
        headers.append((name, value))
    if method is None:
        raise MalformedRequest("no :method")
    if method == b"CONNECT" and protocol is None:
        if authority is None or path is not None or scheme is not None:
            raise MalformedRequest("CONNECT needs :authority and no :path or :scheme")
    else:
        if protocol is not None and method != b"CONNECT":
            raise MalformedRequest(":protocol on a method other than CONNECT")
        if scheme is None or not path:
            raise MalformedRequest("no :scheme or an empty :path")
    if authority is not None:
        if host is None:
            headers.insert(0, (b"host", authority))
        elif host != authority:
            raise MalformedRequest("host and :authority differ")
    elif host is None:
        raise MalformedRequest("neither :authority nor host")
    if cookies is not None:
        headers.append((b"cookie", b"; ".join(cookies)))
    return RequestHead(method, path, scheme, authority, protocol, content_length, headers)
