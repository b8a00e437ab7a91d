"""``towpath serve``: an interface server for an ASGI app (direct mode) or in front of a
channel layer (decoupled mode)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import click

from towpath.cli.base import (
    POSITIVE_INT,
    POSITIVE_SECONDS,
    STARTUP_ERRORS,
    announce,
    envvar,
    field_option,
    given,
    main,
    report_startup_failure,
    usage_error,
)
from towpath.errors import ConfigError
from towpath.fields import help_of
from towpath.interface.config import ServerConfig, ServerConfigError
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
@field_option(
    "-b",
    "--bind",
    "binds",
    config=ServerConfig,
    field="binds",
    multiple=True,
    envvar=envvar("BIND"),
)
@field_option(
    "--host",
    config=ServerConfig,
    field="host",
    envvar=envvar("HOST"),
)
@click.option(
    "-p",
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar=envvar("PORT"),
    help=help_of(ServerConfig, "port"),
)
@field_option(
    "-u",
    "--unix-socket",
    "--uds",
    config=ServerConfig,
    field="unix_socket",
    envvar=envvar("UNIX_SOCKET"),
)
@field_option(
    "--fd",
    config=ServerConfig,
    field="fd",
    type=click.IntRange(min=0),
    envvar=envvar("FD"),
)
@field_option(
    "--ssl-certfile",
    config=ServerConfig,
    field="ssl_certfile",
    envvar=envvar("SSL_CERTFILE"),
)
@field_option(
    "--ssl-keyfile",
    config=ServerConfig,
    field="ssl_keyfile",
    envvar=envvar("SSL_KEYFILE"),
)
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
    help=help_of(ServerConfig, "ws_output_limit_bytes"),
)
@field_option(
    "--websocket-timeout",
    config=ServerConfig,
    field="websocket_timeout_seconds",
    type=POSITIVE_SECONDS,
    envvar=envvar("WEBSOCKET_TIMEOUT"),
)
@field_option(
    "--ping-interval",
    config=ServerConfig,
    field="ws_ping_interval_seconds",
    type=click.FloatRange(min=0),
    envvar=envvar("PING_INTERVAL"),
)
@field_option(
    "--ping-timeout",
    config=ServerConfig,
    field="ws_ping_timeout_seconds",
    type=POSITIVE_SECONDS,
    envvar=envvar("PING_TIMEOUT"),
)
@field_option(
    "--ws-protocol",
    "ws_protocols",
    config=ServerConfig,
    field="ws_protocols",
    multiple=True,
    envvar=envvar("WS_PROTOCOL"),
)
@field_option(
    "--ws-allowed-origins",
    "ws_allowed_origins",
    config=ServerConfig,
    field="ws_allowed_origins",
    multiple=True,
    envvar=envvar("WS_ALLOWED_ORIGINS"),
)
@field_option(
    "--proxy-headers/--no-proxy-headers",
    config=ServerConfig,
    field="proxy_headers",
    envvar=envvar("PROXY_HEADERS"),
)
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1,::1",
    envvar=envvar("FORWARDED_ALLOW_IPS"),
    help=help_of(ServerConfig, "forwarded_allow_ips"),
)
@field_option(
    "--root-path",
    config=ServerConfig,
    field="root_path",
    envvar=envvar("ROOT_PATH"),
)
@field_option(
    "--access-log",
    config=ServerConfig,
    field="access_log",
    envvar=envvar("ACCESS_LOG"),
)
@field_option(
    "--max-connections",
    "--limit-concurrency",
    config=ServerConfig,
    field="max_connections",
    type=POSITIVE_INT,
    envvar=envvar("MAX_CONNECTIONS"),
)
@field_option(
    "--max-header-bytes",
    config=ServerConfig,
    field="max_header_bytes",
    type=POSITIVE_INT,
    envvar=envvar("MAX_HEADER_BYTES"),
)
@field_option(
    "--max-header-count",
    config=ServerConfig,
    field="max_header_count",
    type=POSITIVE_INT,
    envvar=envvar("MAX_HEADER_COUNT"),
)
@field_option(
    "--max-body-bytes",
    config=ServerConfig,
    field="max_body_bytes",
    type=POSITIVE_INT,
    envvar=envvar("MAX_BODY_BYTES"),
)
@field_option(
    "--ws-max-size",
    config=ServerConfig,
    field="max_websocket_message_bytes",
    type=POSITIVE_INT,
    envvar=envvar("WS_MAX_SIZE"),
)
@field_option(
    "--keep-alive-timeout",
    config=ServerConfig,
    field="keep_alive_timeout_seconds",
    type=POSITIVE_SECONDS,
    envvar=envvar("KEEP_ALIVE_TIMEOUT"),
)
@field_option(
    "--header-timeout",
    config=ServerConfig,
    field="header_timeout_seconds",
    type=POSITIVE_SECONDS,
    envvar=envvar("HEADER_TIMEOUT"),
)
@field_option(
    "--body-timeout",
    config=ServerConfig,
    field="body_timeout_seconds",
    type=POSITIVE_SECONDS,
    envvar=envvar("BODY_TIMEOUT"),
)
@field_option(
    "--ws-per-message-deflate/--no-ws-per-message-deflate",
    config=ServerConfig,
    field="ws_per_message_deflate",
    envvar=envvar("WS_PER_MESSAGE_DEFLATE"),
)
@field_option(
    "--h2-max-concurrent-streams",
    config=ServerConfig,
    field="h2_max_concurrent_streams",
    type=POSITIVE_INT,
    envvar=envvar("H2_MAX_CONCURRENT_STREAMS"),
)
@field_option(
    "--h2-reset-burst",
    config=ServerConfig,
    field="h2_reset_burst",
    type=POSITIVE_INT,
    envvar=envvar("H2_RESET_BURST"),
)
@field_option(
    "--h2-resets-per-second",
    config=ServerConfig,
    field="h2_resets_per_second",
    type=POSITIVE_SECONDS,
    envvar=envvar("H2_RESETS_PER_SECOND"),
)
@field_option(
    "--h2-control-frame-burst",
    config=ServerConfig,
    field="h2_control_frame_burst",
    type=POSITIVE_INT,
    envvar=envvar("H2_CONTROL_FRAME_BURST"),
)
@field_option(
    "--h2-control-frames-per-second",
    config=ServerConfig,
    field="h2_control_frames_per_second",
    type=POSITIVE_SECONDS,
    envvar=envvar("H2_CONTROL_FRAMES_PER_SECOND"),
)
@field_option(
    "--graceful-timeout",
    config=ServerConfig,
    field="graceful_timeout_seconds",
    type=POSITIVE_SECONDS,
    envvar=envvar("GRACEFUL_TIMEOUT"),
)
@field_option(
    "--lifespan",
    config=ServerConfig,
    field="lifespan",
    type=click.Choice(["auto", "on", "off"]),
    envvar=envvar("LIFESPAN"),
)
@field_option(
    "--http2/--no-http2",
    config=ServerConfig,
    field="http2",
    envvar=envvar("HTTP2"),
)
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

    import towpath
    from towpath.interface.config import DEFAULT_WS_OUTPUT_LIMIT_BYTES
    from towpath.interface.lifespan import LifespanFailure
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

    failures: tuple[type[Exception], ...] = (*STARTUP_ERRORS, LifespanFailure, ServerConfigError)
    try:
        towpath.serve(
            app,
            settings=settings,
            layer=layer,
            config=config,
            forwarding=forwarding if app is None else None,
            loop_factory=_loop_factory(loop),
            ready=announce(tls=config.tls),
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
