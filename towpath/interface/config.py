"""``ServerConfig``: every setting of the interface server, in one frozen object.

The CLI (``towpath serve``), plain code and tests all build this one object and pass it down;
no other module of ``towpath.interface`` reads flags or the environment. Units are in the names
(``_seconds``, ``_bytes``). ``__post_init__`` rejects impossible values with an error that names
the setting, and :meth:`ServerConfig.replace` refuses unknown names, suggesting the nearest one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from towpath.errors import ConfigError
from towpath.fields import replace_known, setting

__all__ = ["DEFAULT_WS_OUTPUT_LIMIT_BYTES", "KIB", "MIB", "ServerConfig", "ServerConfigError"]

KIB = 1024
MIB = 1024 * KIB
#: ``ws_output_limit_bytes``: room for a healthy client's burst (a backlog sent on connect, a
#: moment on a slow link) at a bounded cost, 10 GiB at most for 10,000 clients all stopped.
#: Centrifugo bounds each client's queue the same way (``client_queue_max_size``) and
#: disconnects a client past it as slow
DEFAULT_WS_OUTPUT_LIMIT_BYTES = 1 * MIB


class ServerConfigError(ConfigError):
    """A server setting is invalid; the message names the setting and what it accepts, and
    ``field`` names it (the CLI names its option: the field's ``option`` metadata)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    # -- where to listen (several may be combined; none given means host:port) ----------------
    host: str = setting(
        "127.0.0.1",
        option="--host",
        help="Host for --port.",
    )
    port: int = setting(
        8000,
        option="--port",
        help="TCP port (0: any free port). [default: 8000 when nothing else is given]",
    )
    #: extra listeners, ``host:port``, ``[v6]:port``, ``unix:/path`` or ``fd://N`` (as hypercorn
    #: and daphne's endpoint strings say it)
    binds: tuple[str, ...] = setting(
        (),
        option="--bind",
        help="Listen on host:port, [v6]:port, unix:/path or fd://N (repeatable; a bare host "
        "takes --port).",
    )
    unix_socket: str | None = setting(
        None,
        option="--unix-socket",
        help="Unix socket path.",
    )
    #: an already-listening socket inherited from a process manager (supervisord's
    #: ``fcgi-program`` hands it over as fd 0)
    fd: int | None = setting(
        None,
        option="--fd",
        help="Inherited listening socket (supervisord fcgi-program: --fd 0).",
    )
    backlog: int = 2048

    # -- TLS (ALPN offers h2 and http/1.1) ------------------------------------------------------
    ssl_certfile: str | None = setting(
        None,
        option="--ssl-certfile",
        help="TLS certificate (PEM).",
    )
    ssl_keyfile: str | None = setting(
        None,
        option="--ssl-keyfile",
        help="TLS private key (PEM).",
    )
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None

    # -- protocols -----------------------------------------------------------------------------
    #: HTTP/2 over TLS (ALPN) and in cleartext (prior knowledge, ``Upgrade: h2c``)
    http2: bool = setting(
        True,
        option="--http2",
        help="Offer HTTP/2.",
    )
    h2_max_concurrent_streams: int = setting(
        100,
        option="--h2-max-concurrent-streams",
        help="HTTP/2 streams one connection may open at once.",
    )
    h2_max_inbound_frame_size: int = 16 * KIB
    #: HTTP/2 flood limits, token buckets per connection (nghttp2's defaults): past them the
    #: connection gets GOAWAY(ENHANCE_YOUR_CALM). Resets: RST_STREAM from the client ("Rapid
    #: Reset", CVE-2023-44487); control frames: PING, SETTINGS, lone PRIORITY, empty DATA,
    #: unknown frames, refused requests (docs/server.md, "Hardening")
    h2_reset_burst: int = setting(
        1000,
        option="--h2-reset-burst",
        help="HTTP/2 stream resets a client may send or cause at once (Rapid Reset) before "
        "GOAWAY(ENHANCE_YOUR_CALM); the bucket refills at --h2-resets-per-second.",
    )
    h2_resets_per_second: float = setting(
        33.0,
        option="--h2-resets-per-second",
        help="How fast the HTTP/2 reset allowance refills.",
    )
    h2_control_frame_burst: int = setting(
        1000,
        option="--h2-control-frame-burst",
        help="HTTP/2 control frames (PING, SETTINGS, PRIORITY, empty DATA, refused requests...) "
        "a client may send at once before GOAWAY(ENHANCE_YOUR_CALM).",
    )
    h2_control_frames_per_second: float = setting(
        33.0,
        option="--h2-control-frames-per-second",
        help="How fast the HTTP/2 control-frame allowance refills.",
    )
    #: the ``root_path`` of every scope (an app mounted below a prefix by a proxy)
    root_path: str = setting(
        "",
        option="--root-path",
        help="ASGI root_path.",
    )
    #: ``Server`` response header value; ``None`` sends none
    server_header: str | None = "towpath"
    date_header: bool = True

    # -- limits: past them a request gets 431 / 414 / 413 / 503, a WebSocket close 1009 --------
    #: the whole request head (request line and headers); past it 431, or 414 when the request
    #: line alone is longer (HTTP/2: the header list, as SETTINGS_MAX_HEADER_LIST_SIZE)
    max_header_bytes: int = setting(
        16 * KIB,
        option="--max-header-bytes",
        help="Largest request head in bytes: 431 past it (414 when the request line alone is "
        "longer).",
    )
    #: header fields in one request head (Apache's LimitRequestFields and Tomcat's
    #: maxHeaderCount are 100 too; HTTP/2 pseudo-headers do not count); past it 431
    max_header_count: int = setting(
        100,
        option="--max-header-count",
        help="Most header fields in one request head (431 past it).",
    )
    #: request body limit in direct mode (``None``: unlimited, the app decides)
    max_body_bytes: int | None = setting(
        None,
        option="--max-body-bytes",
        help="Request body limit (413 past it). [default: unlimited]",
    )
    max_websocket_message_bytes: int = setting(
        1 * MIB,
        option="--ws-max-size",
        help="Largest WebSocket message in bytes (1009 past it).",
    )
    #: open connections allowed at once; past it new HTTP requests are answered 503. ``None``:
    #: bounded by the process's file-descriptor limit (see ``towpath.interface.fdlimit``)
    max_connections: int | None = setting(
        None,
        option="--max-connections",
        help="Open connections allowed; past it new ones get 503. [default: what the "
        "file-descriptor limit allows, less 64; the soft limit is raised to the hard one at start]",
    )
    #: HTTP/1.1 requests pipelined ahead of the one being answered before reading pauses
    max_pipelined_requests: int = 16

    # -- timeouts -------------------------------------------------------------------------------
    #: idle keep-alive connection between requests
    keep_alive_timeout_seconds: float = setting(
        5.0,
        option="--keep-alive-timeout",
        help="Seconds an idle keep-alive connection stays open.",
    )
    #: the whole request head must arrive within this (a slowloris client is dropped)
    header_timeout_seconds: float = setting(
        10.0,
        option="--header-timeout",
        help="Seconds for a whole request head (slow clients are dropped).",
    )
    #: longest pause while a request body is being read
    body_timeout_seconds: float = setting(
        60.0,
        option="--body-timeout",
        help="Longest pause while a request body is read.",
    )
    #: WebSocket: a ping every so often, and the connection is dropped when its pong is late
    ws_ping_interval_seconds: float | None = setting(
        20.0,
        option="--ping-interval",
        help="WebSocket ping every N seconds (0: off).",
    )
    ws_ping_timeout_seconds: float = setting(
        20.0,
        option="--ping-timeout",
        help="Drop a WebSocket whose pong is this late.",
    )
    #: a WebSocket is closed (1000) after this long; ``None``: never (daphne's --websocket_timeout)
    websocket_timeout_seconds: float | None = setting(
        None,
        option="--websocket-timeout",
        help="Close WebSockets after this many seconds. [default: never]",
    )
    #: after SIGTERM: in-flight requests get this long to finish, then connections are cut
    graceful_timeout_seconds: float = setting(
        30.0,
        option="--graceful-timeout",
        help="After SIGTERM, seconds for in-flight work before connections are cut.",
    )

    # -- WebSocket ------------------------------------------------------------------------------
    #: subprotocols the server may accept (``--ws-protocol``); empty: whatever the app picks
    ws_protocols: tuple[str, ...] = setting(
        (),
        option="--ws-protocol",
        help="WebSocket subprotocol the server may accept (repeatable).",
    )
    ws_per_message_deflate: bool = setting(
        True,
        option="--ws-per-message-deflate",
        help="Offer WebSocket compression (permessage-deflate).",
    )
    #: origins a WebSocket handshake may come from (``--ws-allowed-origins``): exact origins
    #: (``https://example.com``, ``http://localhost:8000``), hosts of any scheme
    #: (``example.com``), a host and its subdomains (``.example.com``), or ``*``. Others get 403
    #: before the app (or a worker) sees the connect; a handshake without ``Origin`` (not a
    #: browser) passes. Empty: no check.
    ws_allowed_origins: tuple[str, ...] = setting(
        (),
        option="--ws-allowed-origins",
        help="Origin a WebSocket handshake may come from (repeatable, or comma separated): "
        "https://example.com, example.com (any scheme), .example.com (and subdomains), or *; "
        "other origins get 403 before the app sees the connect. [default: any origin]",
    )
    #: decoupled mode: a WebSocket's output is written without waiting for its client to read
    #: it, while the output held unsent for that connection (the transport's buffer; over
    #: HTTP/2 the stream's frames waiting for its window or the socket) stays within this; a
    #: ``websocket.send`` that would take it past is not written: the client is closed 1013
    #: (``docs/protocol.md`` 6.2). Direct mode ignores it: the app's send waits for the client.
    ws_output_limit_bytes: int = setting(
        DEFAULT_WS_OUTPUT_LIMIT_BYTES,
        option="--ws-output-limit",
        help="Decoupled mode: bytes of output a WebSocket client may leave unread; a message that "
        "would pass it closes the client 1013 (client too slow) and its worker gets the "
        "disconnect. [default: 1048576]",
    )

    # -- proxies and logs -----------------------------------------------------------------------
    proxy_headers: bool = setting(
        False,
        option="--proxy-headers",
        help="Trust X-Forwarded-For/-Proto and Forwarded from --forwarded-allow-ips.",
    )
    #: peers trusted to set X-Forwarded-For / -Proto / Forwarded: addresses or CIDR networks,
    #: ``*`` for all
    forwarded_allow_ips: tuple[str, ...] = setting(
        ("127.0.0.1", "::1"),
        option="--forwarded-allow-ips",
        help="Comma list of trusted proxy addresses or CIDR networks, or '*'.",
    )
    #: NCSA access log (daphne's format, WebSocket rows included): ``None`` off, ``-`` stdout,
    #: else a file path
    access_log: str | None = setting(
        None,
        option="--access-log",
        help="NCSA access log: '-' for stdout, or a file path. [default: off]",
    )

    # -- application ----------------------------------------------------------------------------
    lifespan: Literal["auto", "on", "off"] = setting(
        "auto",
        option="--lifespan",
        help="ASGI lifespan in direct mode: auto (skipped for an app that raises on the lifespan "
        "scope), on (the app must support it), off.",
    )

    def __post_init__(self) -> None:
        for name in ("port", "backlog"):
            value = getattr(self, name)
            if type(value) is not int or value < 0 or (name == "port" and value > 65535):
                raise ServerConfigError(
                    f"{name} must be an int in range, not {value!r}", field=name
                )
        positive_ints = (
            "h2_max_concurrent_streams",
            "h2_max_inbound_frame_size",
            "h2_reset_burst",
            "h2_control_frame_burst",
            "max_header_bytes",
            "max_header_count",
            "max_websocket_message_bytes",
            "max_pipelined_requests",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ServerConfigError(f"{name} must be a positive int, not {value!r}", field=name)
        limit = self.ws_output_limit_bytes
        if type(limit) is not int or limit < 1:
            raise ServerConfigError(
                f"ws_output_limit_bytes must be a positive int, not {limit!r}: the bytes of "
                "output a WebSocket client may leave unread before it is closed 1013 "
                f"(--ws-output-limit BYTES; default {DEFAULT_WS_OUTPUT_LIMIT_BYTES})",
                field="ws_output_limit_bytes",
            )
        for name in ("max_body_bytes", "max_connections"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ServerConfigError(
                    f"{name} must be a positive int or None, not {value!r}", field=name
                )
        seconds = (
            "keep_alive_timeout_seconds",
            "header_timeout_seconds",
            "body_timeout_seconds",
            "ws_ping_timeout_seconds",
            "graceful_timeout_seconds",
        )
        for name in ("h2_resets_per_second", "h2_control_frames_per_second"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ServerConfigError(f"{name} must be a number > 0, not {value!r}", field=name)
        for name in seconds:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ServerConfigError(
                    f"{name} must be a number of seconds > 0, not {value!r}", field=name
                )
        for name in ("ws_ping_interval_seconds", "websocket_timeout_seconds"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise ServerConfigError(
                    f"{name} must be a number of seconds > 0 or None, not {value!r}", field=name
                )
        if self.lifespan not in ("auto", "on", "off"):
            raise ServerConfigError(
                f"lifespan must be 'auto', 'on' or 'off', not {self.lifespan!r}", field="lifespan"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ServerConfigError(
                "ssl_certfile and ssl_keyfile go together: give both (--ssl-certfile and "
                "--ssl-keyfile) or neither",
                field="ssl_certfile",
            )
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ServerConfigError(
                f"root_path must start with '/' and not end with one, not {self.root_path!r}",
                field="root_path",
            )
        for name in ("binds", "ws_protocols", "forwarded_allow_ips", "ws_allowed_origins"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise ServerConfigError(f"{name} must be a tuple of str, not {value!r}", field=name)
        if self.ws_allowed_origins:
            from towpath.origins import OriginPatterns

            try:
                OriginPatterns(self.ws_allowed_origins)
            except ValueError as exc:
                raise ServerConfigError(
                    f"ws_allowed_origins: {exc}", field="ws_allowed_origins"
                ) from None

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None

    def replace(self, **changes: Any) -> ServerConfig:
        """A copy with ``changes``; an unknown name is an error suggesting the nearest one."""
        return replace_known(self, changes, ServerConfigError, "server")
