"""The ``towpath`` command. It only translates: flags become library calls, library exceptions
become exit codes. Every option also reads a ``TOWPATH_<OPTION>`` environment variable, which
suits supervisord program sections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from towpath import __version__
from towpath.config import configure_layers, load_settings
from towpath.layers.base import BaseChannelLayer, ChannelLayerError

__all__ = ["main"]

#: Exit status for a configuration or start-up failure, distinct from a crash (1), so a
#: process manager can tell "will never start" from "fell over".
EXIT_STARTUP_FAILURE = 3


@click.group(context_settings={"auto_envvar_prefix": "TOWPATH", "show_default": True})
@click.version_option(__version__, prog_name="towpath")
def main() -> None:
    """towpath: ASGI interface servers, channel layers and workers."""


async def _round_trip(layer: BaseChannelLayer, wait: float) -> float:
    channel = await layer.new_channel("towpath-check")
    started = time.perf_counter()
    await layer.send(channel, {"type": "towpath.check"})
    await asyncio.wait_for(layer.receive(channel), wait)
    elapsed = time.perf_counter() - started
    await layer.close()
    return elapsed


@main.command()
@click.option(
    "--settings",
    envvar="TOWPATH_SETTINGS",
    help="Settings module (dotted name or .py path) holding CHANNEL_LAYERS.",
)
@click.option("--timeout", default=5.0, help="Seconds to wait for each layer's round trip.")
def check(settings: str | None, timeout: float) -> None:
    """Load the settings, build every channel layer and send one message through each."""
    try:
        layers = configure_layers(load_settings(settings))
    except (ChannelLayerError, ImportError) as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(EXIT_STARTUP_FAILURE) from None
    failed = False
    for alias, layer in layers.items():
        try:
            elapsed = asyncio.run(_round_trip(layer, timeout))
        except (ChannelLayerError, OSError, TimeoutError) as exc:
            failed = True
            click.echo(f"{alias}: FAILED {type(exc).__name__}: {exc}", err=True)
        else:
            click.echo(f"{alias}: ok ({type(layer).__name__}, round trip {elapsed * 1e3:.2f} ms)")
    if failed:
        raise SystemExit(1)


def _envvar(name: str) -> str:
    return f"TOWPATH_{name}"


_POSITIVE_SECONDS = click.FloatRange(min=0, min_open=True)
_POSITIVE_INT = click.IntRange(min=1)

#: ServerConfig field -> the option that sets it, to name the option in an error
_OPTION_FOR_SETTING = {
    "port": "--port",
    "binds": "--bind",
    "unix_socket": "--unix-socket",
    "fd": "--fd",
    "ssl_certfile": "--ssl-certfile",
    "ssl_keyfile": "--ssl-keyfile",
    "root_path": "--root-path",
    "forwarded_allow_ips": "--forwarded-allow-ips",
    "max_connections": "--max-connections",
    "max_header_bytes": "--max-header-bytes",
    "max_body_bytes": "--max-body-bytes",
    "max_websocket_message_bytes": "--ws-max-size",
    "keep_alive_timeout_seconds": "--keep-alive-timeout",
    "header_timeout_seconds": "--header-timeout",
    "graceful_timeout_seconds": "--graceful-timeout",
    "ws_ping_interval_seconds": "--ping-interval",
    "ws_ping_timeout_seconds": "--ping-timeout",
    "websocket_timeout_seconds": "--websocket-timeout",
}


def _binds(binds: tuple[str, ...], port: int | None) -> tuple[str, ...]:
    """``-b`` entries as ServerConfig binds; a bare host (daphne's ``-b 0.0.0.0``) takes
    ``--port`` (default 8000)."""
    result = []
    for bind in binds:
        for entry in bind.split(","):
            entry = entry.strip()
            if not entry:
                continue
            is_bare_v6 = entry.count(":") > 1 and not entry.startswith("[")
            if entry.startswith(("unix:", "fd://")) or (":" in entry and not is_bare_v6):
                result.append(entry)
            else:
                host = f"[{entry}]" if is_bare_v6 else entry
                result.append(f"{host}:{8000 if port is None else port}")
    return tuple(result)


def _config_error(exc: Exception) -> click.UsageError:
    message = str(exc)
    setting = message.split(" ", 1)[0]
    option = _OPTION_FOR_SETTING.get(setting)
    return click.UsageError(f"{option}: {message}" if option else message)


@main.command()
@click.argument("app", required=False, envvar=_envvar("APP"))
@click.option(
    "--settings",
    envvar=_envvar("SETTINGS"),
    help="Decoupled mode: settings module with CHANNEL_LAYERS (or module:attr naming a layer); "
    "requests are forwarded to the channel layer.",
)
@click.option("--layer", default="default", envvar=_envvar("LAYER"), help="Layer alias.")
@click.option(
    "-b",
    "--bind",
    "binds",
    multiple=True,
    envvar=_envvar("BIND"),
    help="Listen on host:port, [v6]:port, unix:/path or fd://N (repeatable; a bare host "
    "takes --port).",
)
@click.option("--host", default="127.0.0.1", envvar=_envvar("HOST"), help="Host for --port.")
@click.option(
    "-p",
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar=_envvar("PORT"),
    help="TCP port (0: any free port). [default: 8000 when nothing else is given]",
)
@click.option(
    "-u", "--unix-socket", "--uds", envvar=_envvar("UNIX_SOCKET"), help="Unix socket path."
)
@click.option(
    "--fd",
    type=click.IntRange(min=0),
    envvar=_envvar("FD"),
    help="Inherited listening socket (supervisord fcgi-program: --fd 0).",
)
@click.option("--ssl-certfile", envvar=_envvar("SSL_CERTFILE"), help="TLS certificate (PEM).")
@click.option("--ssl-keyfile", envvar=_envvar("SSL_KEYFILE"), help="TLS private key (PEM).")
@click.option(
    "--http-timeout",
    type=_POSITIVE_SECONDS,
    default=None,
    envvar=_envvar("HTTP_TIMEOUT"),
    help="Decoupled mode: seconds to wait for a response before 503. [default: 120]",
)
@click.option(
    "--websocket-timeout",
    type=_POSITIVE_SECONDS,
    default=None,
    envvar=_envvar("WEBSOCKET_TIMEOUT"),
    help="Close WebSockets after this many seconds. [default: never]",
)
@click.option(
    "--ping-interval",
    type=click.FloatRange(min=0),
    default=20.0,
    envvar=_envvar("PING_INTERVAL"),
    help="WebSocket ping every N seconds (0: off).",
)
@click.option(
    "--ping-timeout",
    type=_POSITIVE_SECONDS,
    default=20.0,
    envvar=_envvar("PING_TIMEOUT"),
    help="Drop a WebSocket whose pong is this late.",
)
@click.option(
    "--ws-protocol",
    "ws_protocols",
    multiple=True,
    envvar=_envvar("WS_PROTOCOL"),
    help="WebSocket subprotocol the server may accept (repeatable).",
)
@click.option(
    "--proxy-headers/--no-proxy-headers",
    default=False,
    envvar=_envvar("PROXY_HEADERS"),
    help="Trust X-Forwarded-For/-Proto and Forwarded from --forwarded-allow-ips.",
)
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1,::1",
    envvar=_envvar("FORWARDED_ALLOW_IPS"),
    help="Comma list of trusted proxy addresses or CIDR networks, or '*'.",
)
@click.option("--root-path", default="", envvar=_envvar("ROOT_PATH"), help="ASGI root_path.")
@click.option(
    "--access-log",
    default=None,
    envvar=_envvar("ACCESS_LOG"),
    help="NCSA access log: '-' for stdout, or a file path. [default: off]",
)
@click.option(
    "--max-connections",
    "--limit-concurrency",
    type=_POSITIVE_INT,
    default=None,
    envvar=_envvar("MAX_CONNECTIONS"),
    help="Open connections allowed; past it new ones get 503. [default: unlimited]",
)
@click.option(
    "--max-header-bytes", type=_POSITIVE_INT, default=16384, envvar=_envvar("MAX_HEADER_BYTES")
)
@click.option(
    "--max-body-bytes",
    type=_POSITIVE_INT,
    default=None,
    envvar=_envvar("MAX_BODY_BYTES"),
    help="Request body limit (413 past it). [default: unlimited]",
)
@click.option(
    "--ws-max-size",
    type=_POSITIVE_INT,
    default=1024 * 1024,
    envvar=_envvar("WS_MAX_SIZE"),
    help="Largest WebSocket message in bytes (1009 past it).",
)
@click.option(
    "--keep-alive-timeout",
    type=_POSITIVE_SECONDS,
    default=5.0,
    envvar=_envvar("KEEP_ALIVE_TIMEOUT"),
)
@click.option(
    "--header-timeout",
    type=_POSITIVE_SECONDS,
    default=10.0,
    envvar=_envvar("HEADER_TIMEOUT"),
    help="Seconds for a whole request head (slow clients are dropped).",
)
@click.option(
    "--body-timeout",
    type=_POSITIVE_SECONDS,
    default=60.0,
    envvar=_envvar("BODY_TIMEOUT"),
    help="Longest pause while a request body is read.",
)
@click.option(
    "--ws-per-message-deflate/--no-ws-per-message-deflate",
    default=True,
    envvar=_envvar("WS_PER_MESSAGE_DEFLATE"),
    help="Offer WebSocket compression (permessage-deflate).",
)
@click.option(
    "--h2-max-concurrent-streams",
    type=_POSITIVE_INT,
    default=100,
    envvar=_envvar("H2_MAX_CONCURRENT_STREAMS"),
    help="HTTP/2 streams one connection may open at once.",
)
@click.option(
    "--graceful-timeout",
    type=_POSITIVE_SECONDS,
    default=30.0,
    envvar=_envvar("GRACEFUL_TIMEOUT"),
    help="After SIGTERM, seconds for in-flight work before connections are cut.",
)
@click.option(
    "--lifespan",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    envvar=_envvar("LIFESPAN"),
)
@click.option("--http2/--no-http2", default=True, envvar=_envvar("HTTP2"), help="Offer HTTP/2.")
@click.option(
    "--loop",
    type=click.Choice(["asyncio", "uvloop", "auto"]),
    default="asyncio",
    envvar=_envvar("LOOP"),
    help="Event loop: asyncio, uvloop (must be installed), or auto (uvloop when installed).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    envvar=_envvar("LOG_LEVEL"),
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
    websocket_timeout: float | None,
    ping_interval: float,
    ping_timeout: float,
    ws_protocols: tuple[str, ...],
    proxy_headers: bool,
    forwarded_allow_ips: str,
    root_path: str,
    access_log: str | None,
    max_connections: int | None,
    max_header_bytes: int,
    max_body_bytes: int | None,
    ws_max_size: int,
    keep_alive_timeout: float,
    header_timeout: float,
    body_timeout: float,
    ws_per_message_deflate: bool,
    h2_max_concurrent_streams: int,
    graceful_timeout: float,
    lifespan: str,
    http2: bool,
    loop: str,
    log_level: str,
) -> None:
    """Serve an ASGI app: APP as module:attr (direct mode), or --settings (decoupled mode:
    every connection is forwarded to the channel layer's workers)."""
    import logging

    from towpath.interface.config import ServerConfig, ServerConfigError

    if (app is None) == (settings is None):
        raise click.UsageError(
            "give either APP (module:attr of an ASGI app) or --settings (decoupled mode)"
        )
    if app is not None and http_timeout is not None:
        raise click.UsageError("--http-timeout applies to decoupled mode (--settings) only")
    all_binds = _binds(binds, port)
    bare_host = any(bind not in all_binds for bind in binds)
    if port is not None and not bare_host and (binds or unix_socket or fd is not None):
        all_binds += (f"[{host}]:{port}" if ":" in host else f"{host}:{port}",)
    from towpath.interface.server import parse_bind

    try:
        for bind in all_binds:
            parse_bind(bind)
    except ServerConfigError as exc:
        raise click.UsageError(f"--bind: {exc}") from None
    try:
        config = ServerConfig(
            host=host,
            port=8000 if port is None else port,
            binds=all_binds,
            unix_socket=unix_socket,
            fd=fd,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            http2=http2,
            root_path=root_path,
            max_header_bytes=max_header_bytes,
            max_body_bytes=max_body_bytes,
            max_websocket_message_bytes=ws_max_size,
            max_connections=max_connections,
            keep_alive_timeout_seconds=keep_alive_timeout,
            header_timeout_seconds=header_timeout,
            body_timeout_seconds=body_timeout,
            ws_per_message_deflate=ws_per_message_deflate,
            h2_max_concurrent_streams=h2_max_concurrent_streams,
            ws_ping_interval_seconds=ping_interval or None,
            ws_ping_timeout_seconds=ping_timeout,
            websocket_timeout_seconds=websocket_timeout,
            graceful_timeout_seconds=graceful_timeout,
            ws_protocols=ws_protocols,
            proxy_headers=proxy_headers,
            forwarded_allow_ips=tuple(
                ip.strip() for ip in forwarded_allow_ips.split(",") if ip.strip()
            ),
            access_log=access_log,
            lifespan=lifespan,  # type: ignore[arg-type]
        )
    except ServerConfigError as exc:
        raise _config_error(exc) from None
    if config.proxy_headers:
        from towpath.interface.proxy import trusted_proxies

        try:
            trusted_proxies(config.forwarded_allow_ips)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    raise SystemExit(_run_serve(app, settings, layer, http_timeout, config, _loop_factory(loop)))


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


def _run_serve(
    app_path: str | None,
    settings: str | None,
    layer: str,
    http_timeout: float | None,
    config: Any,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    """Load the app, serve it until a signal; returns the exit status."""
    import os
    import sys

    from towpath.config import ImportFromStringError, import_from_string
    from towpath.interface.config import ServerConfigError
    from towpath.interface.lifespan import LifespanFailure
    from towpath.interface.server import address_url, serve

    try:
        if app_path is not None:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            app = import_from_string(app_path)
            if not callable(app):
                raise ImportFromStringError(f"{app_path!r} is not an ASGI app: {app!r:.60}")
        else:
            from towpath.interface.forwarding import forwarding_app_from_settings

            kwargs: dict[str, Any] = {}
            if http_timeout is not None:
                kwargs["http_timeout_seconds"] = http_timeout
            if config.max_body_bytes is not None:
                kwargs["max_body_bytes"] = config.max_body_bytes
            app = forwarding_app_from_settings(settings, layer, **kwargs)
    except (ImportError, SyntaxError, ChannelLayerError) as exc:
        click.echo(f"Error: {_describe(exc)}", err=True)
        return EXIT_STARTUP_FAILURE

    def ready(addresses: list[Any]) -> None:
        for address in addresses:
            click.echo(f"towpath serving on {address_url(address, tls=config.tls)}")
        sys.stdout.flush()

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(app, config, ready=ready))
    except LifespanFailure as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_STARTUP_FAILURE
    except ServerConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_STARTUP_FAILURE
    except OSError as exc:
        click.echo(
            f"Error: cannot listen: {exc}; choose another --port/--bind or free the address",
            err=True,
        )
        return EXIT_STARTUP_FAILURE
    except KeyboardInterrupt:
        return 0
    return 0


# -- workers -----------------------------------------------------------------------------------

_LOG_LEVELS = click.Choice(["critical", "error", "warning", "info", "debug"])


def _worker_options(command: Any) -> Any:
    """Options runworker and runserver share."""
    options = [
        click.option(
            "--routing",
            envvar=_envvar("ROUTING"),
            help="Route list as module:attr. [default: the layer's ROUTING setting]",
        ),
        click.option(
            "--asgi",
            "asgi_path",
            envvar=_envvar("ASGI"),
            help="Host this ASGI app (module:attr) for every HTTP request and WebSocket.",
        ),
        click.option(
            "--only-channels",
            multiple=True,
            envvar=_envvar("ONLY_CHANNELS"),
            help="Listen only on the routed channels matching this glob (repeatable).",
        ),
        click.option(
            "--exclude-channels",
            multiple=True,
            envvar=_envvar("EXCLUDE_CHANNELS"),
            help="Do not listen on channels matching this glob (repeatable).",
        ),
        click.option(
            "--concurrency",
            type=_POSITIVE_INT,
            default=100,
            envvar=_envvar("CONCURRENCY"),
            help="Messages handled at once.",
        ),
        click.option(
            "--graceful-timeout",
            type=_POSITIVE_SECONDS,
            default=30.0,
            envvar=_envvar("GRACEFUL_TIMEOUT"),
            help="After SIGTERM, seconds for in-flight consumers before they are cancelled.",
        ),
        click.option("--log-level", type=_LOG_LEVELS, default="info", envvar=_envvar("LOG_LEVEL")),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _startup_error(message: object) -> SystemExit:
    click.echo(f"Error: {_describe(message)}", err=True)
    return SystemExit(EXIT_STARTUP_FAILURE)


def _describe(error: object) -> object:
    """An error as a startup message; a syntax error says where."""
    if isinstance(error, SyntaxError):
        return f"SyntaxError in {error.filename}, line {error.lineno}: {error.msg}"
    return error


def _make_worker(layer: BaseChannelLayer, alias: str, *args: Any) -> Any:
    """The Worker for the options; SystemExit(3) with the reason when it cannot be made."""
    from towpath.worker.run import make_worker

    try:
        return make_worker(layer, alias, *args)
    except (ImportError, SyntaxError, ValueError, TypeError) as exc:
        raise _startup_error(exc) from None


def _pick_routing(routing: str | None, asgi_path: str | None, configured: str | None) -> str | None:
    if routing is not None and asgi_path is not None:
        raise click.UsageError("give --routing or --asgi, not both")
    if asgi_path is not None:
        return None
    routing = routing or configured
    if routing is None:
        raise _startup_error(
            "no routing: pass --routing module:attr (a route list) or --asgi module:app, or set "
            "ROUTING in the layer's CHANNEL_LAYERS entry"
        )
    return routing


def _logging(log_level: str) -> None:
    import logging

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.option(
    "--settings",
    envvar=_envvar("SETTINGS"),
    help="Settings module (dotted name or .py path) holding CHANNEL_LAYERS.",
)
@click.option("--layer", default="default", envvar=_envvar("LAYER"), help="Layer alias.")
@_worker_options
def runworker(
    settings: str | None,
    layer: str,
    routing: str | None,
    asgi_path: str | None,
    only_channels: tuple[str, ...],
    exclude_channels: tuple[str, ...],
    concurrency: int,
    graceful_timeout: float,
    log_level: str,
) -> None:
    """Run a worker: receive from the routed channels of the layer and run the consumers."""
    from towpath.layers.memory import InMemoryChannelLayer
    from towpath.worker import LifespanFailure
    from towpath.worker.run import run_worker

    _logging(log_level)
    try:
        loaded = load_settings(settings)
        layer_settings = loaded.layer(layer)
        channel_layer = configure_layers(loaded)[layer]
    except (ChannelLayerError, ImportError) as exc:
        raise _startup_error(exc) from None
    if isinstance(channel_layer, InMemoryChannelLayer):
        raise _startup_error(
            f"layer {layer!r} is an InMemoryChannelLayer: the in-memory layer cannot cross "
            "processes: use towpath runserver, or configure Redis/IPC"
        )
    chosen = _pick_routing(routing, asgi_path, layer_settings.routing)
    worker = _make_worker(
        channel_layer, layer, chosen, asgi_path, only_channels, exclude_channels,
        concurrency, graceful_timeout,
    )  # fmt: skip
    try:
        asyncio.run(run_worker(worker))
    except LifespanFailure as exc:
        raise _startup_error(exc) from None
    except KeyboardInterrupt:
        pass


@main.command()
@click.option(
    "--settings",
    envvar=_envvar("SETTINGS"),
    help="Settings module with CHANNEL_LAYERS. [default: an in-memory layer]",
)
@click.option("--layer", default="default", envvar=_envvar("LAYER"), help="Layer alias.")
@click.option("--host", default="127.0.0.1", envvar=_envvar("HOST"), help="Host to listen on.")
@click.option(
    "-p",
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    envvar=_envvar("PORT"),
    help="TCP port (0: any free port).",
)
@click.option(
    "--http-timeout",
    type=_POSITIVE_SECONDS,
    default=120.0,
    envvar=_envvar("HTTP_TIMEOUT"),
    help="Seconds to wait for a response before 503.",
)
@click.option(
    "--fd",
    type=click.IntRange(min=0),
    envvar=_envvar("FD"),
    help="Listen on this inherited socket instead of --host/--port (supervisord: --fd 0).",
)
@click.option(
    "--reload",
    is_flag=True,
    default=False,
    envvar=_envvar("RELOAD"),
    help="Restart when a *.py file under --reload-dir changes (development).",
)
@click.option(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar=_envvar("RELOAD_DIR"),
    help="Directory to watch with --reload (repeatable). [default: the working directory]",
)
@click.option(
    "--reload-delay",
    type=_POSITIVE_SECONDS,
    default=0.25,
    envvar=_envvar("RELOAD_DELAY"),
    help="Seconds between two looks at the watched files.",
)
@_worker_options
def runserver(
    settings: str | None,
    layer: str,
    host: str,
    port: int,
    http_timeout: float,
    fd: int | None,
    reload: bool,
    reload_dirs: tuple[Path, ...],
    reload_delay: float,
    routing: str | None,
    asgi_path: str | None,
    only_channels: tuple[str, ...],
    exclude_channels: tuple[str, ...],
    concurrency: int,
    graceful_timeout: float,
    log_level: str,
) -> None:
    """Development server: an interface server and a worker in one process, on the in-memory
    layer (or the configured one)."""
    import sys

    if reload:
        _logging(log_level)
        raise SystemExit(_run_reloader(host, port, fd, reload_dirs, reload_delay, graceful_timeout))

    from towpath.interface.config import ServerConfig, ServerConfigError
    from towpath.interface.server import address_url
    from towpath.layers.memory import InMemoryChannelLayer
    from towpath.layers.registry import register_channel_layer
    from towpath.worker import LifespanFailure
    from towpath.worker.run import run_server

    _logging(log_level)
    configured = None
    try:
        if settings is not None:
            loaded = load_settings(settings)
            configured = loaded.layer(layer).routing
            channel_layer = configure_layers(loaded)[layer]
        else:
            channel_layer = InMemoryChannelLayer()
            register_channel_layer(layer, channel_layer)
    except (ChannelLayerError, ImportError) as exc:
        raise _startup_error(exc) from None
    chosen = _pick_routing(routing, asgi_path, configured)
    worker = _make_worker(
        channel_layer, layer, chosen, asgi_path, only_channels, exclude_channels,
        concurrency, graceful_timeout,
    )  # fmt: skip
    try:
        config = ServerConfig(
            host=host, port=port, fd=fd, graceful_timeout_seconds=graceful_timeout
        )
    except ServerConfigError as exc:
        raise _config_error(exc) from None

    def ready(addresses: list[Any]) -> None:
        for address in addresses:
            click.echo(f"towpath serving on {address_url(address, tls=False)}")
        sys.stdout.flush()

    try:
        asyncio.run(
            run_server(
                channel_layer, worker, config, ready=ready, http_timeout_seconds=http_timeout
            )
        )
    except (LifespanFailure, ServerConfigError) as exc:
        raise _startup_error(exc) from None
    except OSError as exc:
        raise _startup_error(
            f"cannot listen: {exc}; choose another --port or free the address"
        ) from None
    except KeyboardInterrupt:
        pass


def _run_reloader(
    host: str,
    port: int,
    fd: int | None,
    dirs: tuple[Path, ...],
    delay: float,
    graceful_timeout: float,
) -> int:
    """``runserver --reload``: bind once here, run runserver as a child on ``--fd`` and
    restart it when the code changes (towpath/worker/reload.py)."""
    import os
    import sys

    from towpath.worker.reload import Reloader, child_args, listening_socket

    sock = None
    if fd is None:
        try:
            sock = listening_socket(host, port)
        except OSError as exc:
            raise _startup_error(
                f"cannot listen: {exc}; choose another --port or free the address"
            ) from None
        fd = sock.fileno()
    ctx = click.get_current_context()
    skip = ("host", "port", "fd", "reload", "reload_dirs", "reload_delay")
    command = [
        sys.executable,
        "-c",
        "from towpath.cli import main; main(prog_name='towpath')",
        "runserver",
        *child_args(ctx, skip),
        "--fd",
        str(fd),
    ]
    # the child must not reload in turn, whatever TOWPATH_RELOAD says; and it compiles the
    # project's sources afresh (a .pyc is trusted by mtime in whole seconds and size, so an edit
    # saved within the same second could otherwise run the old code)
    env = {**os.environ, _envvar("RELOAD"): "false", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop(_envvar("FD"), None)
    reloader = Reloader(
        command,
        [path.resolve() for path in dirs] or [Path.cwd()],
        delay=delay,
        # the server drains, then the worker finishes its consumers: two graceful periods
        stop_timeout=2 * graceful_timeout + 5.0,
        pass_fds=(fd,),
        env=env,
    )
    try:
        return reloader.run()
    finally:
        if sock is not None:
            sock.close()
