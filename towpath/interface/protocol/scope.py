"""ASGI scopes, built the same way by every protocol (HTTP/1.1, HTTP/2, WebSocket on either).

One function per scope type; each is a single dict literal, since it runs once per request.
``path`` is the percent-decoded request path with ``root_path`` in front (as uvicorn and
Starlette expect), ``raw_path`` the undecoded bytes likewise, ``query_string`` the bytes after
``?``. With ``proxy_headers`` on, ``client`` and ``scheme`` come from a trusted proxy's headers
(:mod:`towpath.interface.proxy`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from towpath.interface.protocol.base import (
    WS_OUTPUT_LIMIT_EXTENSION,
    ConnectionIO,
    ServerContext,
)
from towpath.interface.proxy import forwarded_client, trusted_proxies

__all__ = ["ASGI_VERSION", "http_scope", "websocket_scope"]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}


def _client_and_scheme(
    context: ServerContext,
    io: ConnectionIO,
    headers: list[tuple[bytes, bytes]],
    scheme: str | None,
) -> tuple[tuple[str, int] | None, str]:
    """The client and scheme: the transport's (or the protocol's own ``scheme``, as HTTP/2's
    ``:scheme``), unless a trusted proxy forwarded others."""
    if scheme is None:
        scheme = "https" if io.tls else "http"
    if not context.config.proxy_headers:
        return io.client, scheme
    client, forwarded_scheme = forwarded_client(
        headers, io.client, trusted_proxies(context.config.forwarded_allow_ips)
    )
    return client, forwarded_scheme or scheme


def _split_target(context: ServerContext, target: bytes) -> tuple[str, bytes, bytes]:
    raw_path, _, query_string = target.partition(b"?")
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path)
    root_path = context.config.root_path
    if root_path:
        path = root_path + path
        raw_path = root_path.encode("latin-1") + raw_path
    return path, raw_path, query_string


def http_scope(
    context: ServerContext,
    io: ConnectionIO,
    *,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    http_version: str,
    scheme: str | None = None,
) -> dict[str, Any]:
    """The ``http`` scope of one request. ``target`` is the request target as received (path
    and query); ``scheme`` overrides the transport's (HTTP/2's ``:scheme``)."""
    path, raw_path, query_string = _split_target(context, target)
    client, scheme = _client_and_scheme(context, io, headers, scheme)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": http_version,
        "server": io.server,
        "client": client,
        "scheme": scheme,
        "method": method,
        "root_path": context.config.root_path,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "headers": headers,
        "extensions": context.extensions,
    }
    if context.lifespan_state is not None:
        scope["state"] = context.lifespan_state.copy()
    return scope


def websocket_scope(
    context: ServerContext,
    io: ConnectionIO,
    *,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    http_version: str,
    subprotocols: list[str],
    scheme: str | None = None,
) -> dict[str, Any]:
    """The ``websocket`` scope of one handshake (``subprotocols`` as the client offered them,
    in order)."""
    path, raw_path, query_string = _split_target(context, target)
    client, scheme = _client_and_scheme(context, io, headers, scheme)
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": ASGI_VERSION,
        "http_version": http_version,
        "server": io.server,
        "client": client,
        "scheme": "wss" if scheme in ("https", "wss") else "ws",
        "root_path": context.config.root_path,
        "path": path,
        "raw_path": raw_path,
        "query_string": query_string,
        "headers": headers,
        "subprotocols": subprotocols,
        "extensions": {**context.extensions, "websocket.http.response": {}},
    }
    limit = context.ws_output_limit_bytes
    if limit is not None:  # an app that does not wait for the client: how much is held for it
        scope["extensions"][WS_OUTPUT_LIMIT_EXTENSION] = {"bytes": limit}
    if context.lifespan_state is not None:
        scope["state"] = context.lifespan_state.copy()
    return scope
