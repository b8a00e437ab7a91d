"""``towpath serve``: an interface server for an ASGI app (direct mode) or in front of a
channel layer (decoupled mode)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import click

from towpath.cli.base import (
    POSITIVE_INT,
    POSITIVE_SECONDS,
    STARTUP_ERRORS,
    envvar,
    field_option,
    given,
    main,
    report_startup_failure,
    usage_error,
)
from towpath.errors import ConfigError
from towpath.interface.config import ServerConfigError
from towpath.interface.forwarding.settings import ForwardingSettings


@main.command()
@click.argument("app", required=False, envvar=envvar("APP"))
@click.option(
    "--settings",
    envvar=envvar("SETTINGS"),
    help="Decoupled mode: settings module with CHANNEL_LAYERS (or module:attr naming a layer); "
    "requests are forwarded to the channel layer.",
)
@click.option("--layer", default="default", envvar=envvar("LAYER"), help="Layer alias.")
@click.option(
    "-b",
    "--bind",
    "binds",
    multiple=True,
    envvar=envvar("BIND"),
    help="Listen on host:port, [v6]:port, unix:/path or fd://N (repeatable; a bare host "
    "takes --port).",
)
@click.option("--host", default="127.0.0.1", envvar=envvar("HOST"), help="Host for --port.")
@click.option(
    "-p",
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar=envvar("PORT"),
    help="TCP port (0: any free port). [default: 8000 when nothing else is given]",
)
@click.option(
    "-u", "--unix-socket", "--uds", envvar=envvar("UNIX_SOCKET"), help="Unix socket path."
)
@click.option(
    "--fd",
    type=click.IntRange(min=0),
    envvar=envvar("FD"),
    help="Inherited listening socket (supervisord fcgi-program: --fd 0).",
)
@click.option("--ssl-certfile", envvar=envvar("SSL_CERTFILE"), help="TLS certificate (PEM).")
@click.option("--ssl-keyfile", envvar=envvar("SSL_KEYFILE"), help="TLS private key (PEM).")
@field_option(
    "--http-timeout",
    config=ForwardingSettings,
    field="http_timeout_seconds",
    type=POSITIVE_SECONDS,
    envvar=envvar("HTTP_TIMEOUT"),
)
@field_option(
    "--heartbeat-timeout",
    config=ForwardingSettings,
    field="heartbeat_timeout_seconds",
    type=POSITIVE_SECONDS,
    envvar=envvar("HEARTBEAT_TIMEOUT"),
)
@field_option(
    "--untaken-warning",
    config=ForwardingSettings,
    field="untaken_warning_seconds",
    type=POSITIVE_SECONDS,
    envvar=envvar("UNTAKEN_WARNING"),
)
@field_option(
    "--protocol-send-timeout",
    config=ForwardingSettings,
    field="protocol_send_timeout_seconds",
    type=POSITIVE_SECONDS,
    envvar=envvar("PROTOCOL_SEND_TIMEOUT"),
)
@click.option(
    "--ws-output-limit",
    type=POSITIVE_INT,
    default=None,
    metavar="BYTES",
    envvar=envvar("WS_OUTPUT_LIMIT"),
    help="Decoupled mode: bytes of output a WebSocket client may leave unread; a message that "
    "would pass it closes the client 1013 (client too slow) and its worker gets the "
    "disconnect. [default: 1048576]",
)
@click.option(
    "--websocket-timeout",
    type=POSITIVE_SECONDS,
    default=None,
    envvar=envvar("WEBSOCKET_TIMEOUT"),
    help="Close WebSockets after this many seconds. [default: never]",
)
@click.option(
    "--ping-interval",
    type=click.FloatRange(min=0),
    default=20.0,
    envvar=envvar("PING_INTERVAL"),
    help="WebSocket ping every N seconds (0: off).",
)
@click.option(
    "--ping-timeout",
    type=POSITIVE_SECONDS,
    default=20.0,
    envvar=envvar("PING_TIMEOUT"),
    help="Drop a WebSocket whose pong is this late.",
)
@click.option(
    "--ws-protocol",
    "ws_protocols",
    multiple=True,
    envvar=envvar("WS_PROTOCOL"),
    help="WebSocket subprotocol the server may accept (repeatable).",
)
@click.option(
    "--ws-allowed-origins",
    "ws_allowed_origins",
    multiple=True,
    envvar=envvar("WS_ALLOWED_ORIGINS"),
    help="Origin a WebSocket handshake may come from (repeatable, or comma separated): "
    "https://example.com, example.com (any scheme), .example.com (and subdomains), or *; "
    "other origins get 403 before the app sees the connect. [default: any origin]",
)
@click.option(
    "--proxy-headers/--no-proxy-headers",
    default=False,
    envvar=envvar("PROXY_HEADERS"),
    help="Trust X-Forwarded-For/-Proto and Forwarded from --forwarded-allow-ips.",
)
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1,::1",
    envvar=envvar("FORWARDED_ALLOW_IPS"),
    help="Comma list of trusted proxy addresses or CIDR networks, or '*'.",
)
@click.option("--root-path", default="", envvar=envvar("ROOT_PATH"), help="ASGI root_path.")
@click.option(
    "--access-log",
    default=None,
    envvar=envvar("ACCESS_LOG"),
    help="NCSA access log: '-' for stdout, or a file path. [default: off]",
)
@click.option(
    "--max-connections",
    "--limit-concurrency",
    type=POSITIVE_INT,
    default=None,
    envvar=envvar("MAX_CONNECTIONS"),
    help="Open connections allowed; past it new ones get 503. [default: what the "
    "file-descriptor limit allows, less 64; the soft limit is raised to the hard one at start]",
)
@click.option(
    "--max-header-bytes",
    type=POSITIVE_INT,
    default=16384,
    envvar=envvar("MAX_HEADER_BYTES"),
    help="Largest request head in bytes: 431 past it (414 when the request line alone is longer).",
)
@click.option(
    "--max-header-count",
    type=POSITIVE_INT,
    default=100,
    envvar=envvar("MAX_HEADER_COUNT"),
    help="Most header fields in one request head (431 past it).",
)
@click.option(
    "--max-body-bytes",
    type=POSITIVE_INT,
    default=None,
    envvar=envvar("MAX_BODY_BYTES"),
    help="Request body limit (413 past it). [default: unlimited]",
)
@click.option(
    "--ws-max-size",
    type=POSITIVE_INT,
    default=1024 * 1024,
    envvar=envvar("WS_MAX_SIZE"),
    help="Largest WebSocket message in bytes (1009 past it).",
)
@click.option(
    "--keep-alive-timeout",
    type=POSITIVE_SECONDS,
    default=5.0,
    envvar=envvar("KEEP_ALIVE_TIMEOUT"),
    help="Seconds an idle keep-alive connection stays open.",
)
@click.option(
    "--header-timeout",
    type=POSITIVE_SECONDS,
    default=10.0,
    envvar=envvar("HEADER_TIMEOUT"),
    help="Seconds for a whole request head (slow clients are dropped).",
)
@click.option(
    "--body-timeout",
    type=POSITIVE_SECONDS,
    default=60.0,
    envvar=envvar("BODY_TIMEOUT"),
    help="Longest pause while a request body is read.",
)
@click.option(
    "--ws-per-message-deflate/--no-ws-per-message-deflate",
    default=True,
    envvar=envvar("WS_PER_MESSAGE_DEFLATE"),
    help="Offer WebSocket compression (permessage-deflate).",
)
@click.option(
    "--h2-max-concurrent-streams",
    type=POSITIVE_INT,
    default=100,
    envvar=envvar("H2_MAX_CONCURRENT_STREAMS"),
    help="HTTP/2 streams one connection may open at once.",
)
@click.option(
    "--h2-reset-burst",
    type=POSITIVE_INT,
    default=1000,
    envvar=envvar("H2_RESET_BURST"),
    help="HTTP/2 stream resets a client may send or cause at once (Rapid Reset) before "
    "GOAWAY(ENHANCE_YOUR_CALM); the bucket refills at --h2-resets-per-second.",
)
@click.option(
    "--h2-resets-per-second",
    type=POSITIVE_SECONDS,
    default=33.0,
    envvar=envvar("H2_RESETS_PER_SECOND"),
    help="How fast the HTTP/2 reset allowance refills.",
)
@click.option(
    "--h2-control-frame-burst",
    type=POSITIVE_INT,
    default=1000,
    envvar=envvar("H2_CONTROL_FRAME_BURST"),
    help="HTTP/2 control frames (PING, SETTINGS, PRIORITY, empty DATA, refused requests...) "
    "a client may send at once before GOAWAY(ENHANCE_YOUR_CALM).",
)
@click.option(
    "--h2-control-frames-per-second",
    type=POSITIVE_SECONDS,
    default=33.0,
    envvar=envvar("H2_CONTROL_FRAMES_PER_SECOND"),
    help="How fast the HTTP/2 control-frame allowance refills.",
)
@click.option(
    "--graceful-timeout",
    type=POSITIVE_SECONDS,
    default=30.0,
    envvar=envvar("GRACEFUL_TIMEOUT"),
    help="After SIGTERM, seconds for in-flight work before connections are cut.",
)
@click.option(
    "--lifespan",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    envvar=envvar("LIFESPAN"),
    help="ASGI lifespan in direct mode: auto (skipped for an app that raises on the lifespan "
    "scope), on (the app must support it), off.",
)
@click.option("--http2/--no-http2", default=True, envvar=envvar("HTTP2"), help="Offer HTTP/2.")
@click.option(
    "--loop",
    type=click.Choice(["asyncio", "uvloop", "auto"]),
    default="asyncio",
    envvar=envvar("LOOP"),
    help="Event loop: asyncio, uvloop (must be installed), or auto (uvloop when installed).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    envvar=envvar("LOG_LEVEL"),
    help="Log level; logs go to stderr. SIGUSR1 logs the counters (a `stats {...}` line).",
)
def serve(
    app: str | None,
    settings: str | None,
    layer: str,
    binds: tuple[str, ...],
    host: str,
    port: int | None,
    unix_socket: str | None,
    fd: int | None,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    http_timeout: float | None,
    heartbeat_timeout: float,
    untaken_warning: float | None,
    protocol_send_timeout: float,
    ws_output_limit: int | None,
    websocket_timeout: float | None,
    ping_interval: float,
    ping_timeout: float,
    ws_protocols: tuple[str, ...],
    ws_allowed_origins: tuple[str, ...],
    proxy_headers: bool,
    forwarded_allow_ips: str,
    root_path: str,
    access_log: str | None,
    max_connections: int | None,
    max_header_bytes: int,
    max_header_count: int,
    max_body_bytes: int | None,
    ws_max_size: int,
    keep_alive_timeout: float,
    header_timeout: float,
    body_timeout: float,
    ws_per_message_deflate: bool,
    h2_max_concurrent_streams: int,
    h2_reset_burst: int,
    h2_resets_per_second: float,
    h2_control_frame_burst: int,
    h2_control_frames_per_second: float,
    graceful_timeout: float,
    lifespan: str,
    http2: bool,
    loop: str,
    log_level: str,
) -> None:
    """Serve an ASGI app: APP as module:attr (direct mode), or --settings (decoupled mode:
    every connection is forwarded to the channel layer's workers). With neither, decoupled
    mode on the IPC layer: workers started with `towpath runworker` on this machine serve it,
    no Redis needed."""
    import logging
    import sys

    import towpath
    from towpath.interface.config import DEFAULT_WS_OUTPUT_LIMIT_BYTES, ServerConfig
    from towpath.interface.lifespan import LifespanFailure
    from towpath.interface.server import address_url
    from towpath.serving import expand_binds

    if app is not None and settings is not None:
        raise click.UsageError(
            "give either APP (module:attr of an ASGI app) or --settings (decoupled mode), not both"
        )
    for name in ("http_timeout", "heartbeat_timeout", "untaken_warning", "protocol_send_timeout"):
        if app is not None and given(name):
            option = "--" + name.replace("_", "-")
            raise click.UsageError(f"{option} applies to decoupled mode (--settings) only")
    if app is not None and ws_output_limit is not None:
        raise click.UsageError(
            "--ws-output-limit applies to decoupled mode (--settings) only: in direct mode the "
            "app's send waits for the client"
        )
    try:
        config = ServerConfig(
            host=host,
            port=8000 if port is None else port,
            binds=expand_binds(binds, host=host, port=port, unix_socket=unix_socket, fd=fd),
            unix_socket=unix_socket,
            fd=fd,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            http2=http2,
            root_path=root_path,
            max_header_bytes=max_header_bytes,
            max_header_count=max_header_count,
            max_body_bytes=max_body_bytes,
            max_websocket_message_bytes=ws_max_size,
            max_connections=max_connections,
            keep_alive_timeout_seconds=keep_alive_timeout,
            header_timeout_seconds=header_timeout,
            body_timeout_seconds=body_timeout,
            ws_per_message_deflate=ws_per_message_deflate,
            h2_max_concurrent_streams=h2_max_concurrent_streams,
            h2_reset_burst=h2_reset_burst,
            h2_resets_per_second=h2_resets_per_second,
            h2_control_frame_burst=h2_control_frame_burst,
            h2_control_frames_per_second=h2_control_frames_per_second,
            ws_ping_interval_seconds=ping_interval or None,
            ws_ping_timeout_seconds=ping_timeout,
            websocket_timeout_seconds=websocket_timeout,
            graceful_timeout_seconds=graceful_timeout,
            ws_protocols=ws_protocols,
            ws_allowed_origins=tuple(
                origin.strip()
                for entry in ws_allowed_origins
                for origin in entry.split(",")
                if origin.strip()
            ),
            proxy_headers=proxy_headers,
            forwarded_allow_ips=tuple(
                ip.strip() for ip in forwarded_allow_ips.split(",") if ip.strip()
            ),
            access_log=access_log,
            lifespan=lifespan,  # type: ignore[arg-type]
            ws_output_limit_bytes=ws_output_limit or DEFAULT_WS_OUTPUT_LIMIT_BYTES,
        )
        forwarding = ForwardingSettings(
            http_timeout_seconds=http_timeout,
            heartbeat_timeout_seconds=heartbeat_timeout,
            untaken_warning_seconds=untaken_warning,
            protocol_send_timeout_seconds=protocol_send_timeout,
            max_body_bytes=max_body_bytes,
        )
    except ConfigError as exc:
        raise usage_error(exc) from None
    if config.proxy_headers:
        from towpath.interface.proxy import trusted_proxies

        try:
            trusted_proxies(config.forwarded_allow_ips)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def ready(addresses: list[Any]) -> None:
        for address in addresses:
            click.echo(f"towpath serving on {address_url(address, tls=config.tls)}")
        sys.stdout.flush()

    failures: tuple[type[Exception], ...] = (*STARTUP_ERRORS, LifespanFailure, ServerConfigError)
    try:
        towpath.serve(
            app,
            settings=settings,
            layer=layer,
            config=config,
            forwarding=forwarding if app is None else None,
            loop_factory=_loop_factory(loop),
            ready=ready,
        )
    except failures as exc:
        raise SystemExit(report_startup_failure(exc)) from None
    except OSError as exc:
        raise SystemExit(
            report_startup_failure(
                f"cannot listen: {exc}; choose another --port/--bind or free the address"
            )
        ) from None


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``--loop``: None for asyncio's own loop, else uvloop's (``auto``: when installed)."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise click.UsageError(
                "--loop uvloop: uvloop is not installed (pip install uvloop, or --loop asyncio)"
            ) from None
        return None
    return uvloop.new_event_loop
