"""``towpath runworker`` and ``towpath runserver``, and the ``runserver --reload`` wiring."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import click

from towpath.cli.base import (
    POSITIVE_INT,
    POSITIVE_SECONDS,
    STARTUP_ERRORS,
    envvar,
    main,
    startup_failure,
    usage_error,
)
from towpath.config import UserCodeError, configure_layers, load_settings
from towpath.layers.base import BaseChannelLayer, InvalidChannelLayerError
from towpath.worker.channels import WorkerConfigError
from towpath.worker.config import WorkerConfig, default_of

#: what making a worker raises for a bad --routing/--asgi/filter (WorkerConfigError is a
#: ValueError; a malformed route list a TypeError)
_WORKER_ERRORS: tuple[type[Exception], ...] = (*STARTUP_ERRORS, ValueError, TypeError)

_LOG_LEVELS = click.Choice(["critical", "error", "warning", "info", "debug"])


def _worker_options(command: Any) -> Any:
    """Options runworker and runserver share."""
    options = [
        click.option(
            "--routing",
            envvar=envvar("ROUTING"),
            help="Route list as module:attr. [default: the layer's ROUTING setting]",
        ),
        click.option(
            "--asgi",
            "asgi_path",
            envvar=envvar("ASGI"),
            help="Host this ASGI app (module:attr) for every HTTP request and WebSocket.",
        ),
        click.option(
            "--only-channels",
            multiple=True,
            envvar=envvar("ONLY_CHANNELS"),
            help="Listen only on the routed channels matching this glob (repeatable).",
        ),
        click.option(
            "--exclude-channels",
            multiple=True,
            envvar=envvar("EXCLUDE_CHANNELS"),
            help="Do not listen on channels matching this glob (repeatable).",
        ),
        click.option(
            "--concurrency",
            type=POSITIVE_INT,
            default=default_of(WorkerConfig, "concurrency"),
            envvar=envvar("CONCURRENCY"),
            help="Messages handled at once.",
        ),
        click.option(
            "--graceful-timeout",
            type=POSITIVE_SECONDS,
            default=default_of(WorkerConfig, "graceful_timeout"),
            envvar=envvar("GRACEFUL_TIMEOUT"),
            help="After SIGTERM, seconds for in-flight consumers before they are cancelled.",
        ),
        click.option(
            "--heartbeat-interval",
            type=POSITIVE_SECONDS,
            default=default_of(WorkerConfig, "heartbeat_interval"),
            envvar=envvar("HEARTBEAT_INTERVAL"),
            help="Seconds between two heartbeats to each interface server the worker serves.",
        ),
        click.option(
            "--handback-timeout",
            type=POSITIVE_SECONDS,
            default=default_of(WorkerConfig, "handback_timeout"),
            envvar=envvar("HANDBACK_TIMEOUT"),
            help="On a graceful stop, seconds a handed-back WebSocket's consumer waits for its "
            "successor to take over its groups before it leaves them anyway.",
        ),
        click.option(
            "--log-level",
            type=_LOG_LEVELS,
            default="info",
            envvar=envvar("LOG_LEVEL"),
            help="Log level; logs go to stderr. SIGUSR1 logs the counters (a `stats {...}` line).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _make_worker(
    layer: BaseChannelLayer, alias: str, routing: str | None, asgi_path: str | None
) -> Any:
    """The Worker for the current command's options (one ``WorkerConfig``, its settings taken
    from the options of the same names); SystemExit(3) with the reason when it cannot be
    made."""
    from towpath.worker.run import make_worker

    params = click.get_current_context().params
    settings = {
        field.name: params[field.name]
        for field in dataclasses.fields(WorkerConfig)
        if field.name in params
    }
    try:
        config = WorkerConfig(layer_alias=alias, **settings)
    except WorkerConfigError as exc:
        raise usage_error(exc) from None
    try:
        return make_worker(layer, config, routing, asgi_path)
    except _WORKER_ERRORS as exc:
        if isinstance(exc, UserCodeError) and exc.target is not None:
            if exc.target == asgi_path:
                exc = exc.relabel(f"--asgi {asgi_path!r}")
            elif exc.target == routing:
                exc = exc.relabel(f"ROUTING {routing!r}")
        raise startup_failure(exc) from None


def _pick_routing(routing: str | None, asgi_path: str | None, configured: str | None) -> str | None:
    if routing is not None and asgi_path is not None:
        raise click.UsageError("give --routing or --asgi, not both")
    if asgi_path is not None:
        return None
    routing = routing or configured
    if routing is None:
        raise startup_failure(
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
    envvar=envvar("SETTINGS"),
    help="Settings module (dotted name or .py path) holding CHANNEL_LAYERS.",
)
@click.option("--layer", default="default", envvar=envvar("LAYER"), help="Layer alias.")
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
    heartbeat_interval: float,
    handback_timeout: float,
    log_level: str,
) -> None:
    """Run a worker: receive from the routed channels of the layer and run the consumers."""
    from towpath.layers.memory import InMemoryChannelLayer
    from towpath.worker import LifespanFailure
    from towpath.worker.run import run_worker

    _logging(log_level)
    try:
        loaded = load_settings(settings, embedded=True)
        layer_settings = loaded.layer(layer)
        channel_layer = configure_layers(loaded)[layer]
    except STARTUP_ERRORS as exc:
        raise startup_failure(exc) from None
    if isinstance(channel_layer, InMemoryChannelLayer):
        raise startup_failure(
            f"layer {layer!r} is an InMemoryChannelLayer: the in-memory layer cannot cross "
            "processes: use towpath runserver, or configure Redis/IPC"
        )
    chosen = _pick_routing(routing, asgi_path, layer_settings.routing)
    worker = _make_worker(channel_layer, layer, chosen, asgi_path)
    try:
        asyncio.run(run_worker(worker))
    except (LifespanFailure, InvalidChannelLayerError) as exc:  # the IPC store unusable, ...
        raise startup_failure(exc) from None
    except KeyboardInterrupt:
        pass


@main.command()
@click.option(
    "--settings",
    envvar=envvar("SETTINGS"),
    help="Settings module with CHANNEL_LAYERS. [default: an in-memory layer]",
)
@click.option("--layer", default="default", envvar=envvar("LAYER"), help="Layer alias.")
@click.option("--host", default="127.0.0.1", envvar=envvar("HOST"), help="Host to listen on.")
@click.option(
    "-p",
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    envvar=envvar("PORT"),
    help="TCP port (0: any free port).",
)
@click.option(
    "--http-timeout",
    type=POSITIVE_SECONDS,
    default=120.0,
    envvar=envvar("HTTP_TIMEOUT"),
    help="Seconds to wait for a response before 503.",
)
@click.option(
    "--fd",
    type=click.IntRange(min=0),
    envvar=envvar("FD"),
    help="Listen on this inherited socket instead of --host/--port (supervisord: --fd 0).",
)
@click.option(
    "--reload",
    is_flag=True,
    default=False,
    envvar=envvar("RELOAD"),
    help="Restart when a *.py file under --reload-dir changes (development).",
)
@click.option(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar=envvar("RELOAD_DIR"),
    help="Directory to watch with --reload (repeatable). [default: the working directory]",
)
@click.option(
    "--reload-delay",
    type=POSITIVE_SECONDS,
    default=0.25,
    envvar=envvar("RELOAD_DELAY"),
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
    heartbeat_interval: float,
    handback_timeout: float,
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
    from towpath.runserver import run_server
    from towpath.worker import LifespanFailure

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
    except STARTUP_ERRORS as exc:
        raise startup_failure(exc) from None
    chosen = _pick_routing(routing, asgi_path, configured)
    worker = _make_worker(channel_layer, layer, chosen, asgi_path)
    try:
        config = ServerConfig(
            host=host, port=port, fd=fd, graceful_timeout_seconds=graceful_timeout
        )
    except ServerConfigError as exc:
        raise usage_error(exc) from None

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
        raise startup_failure(exc) from None
    except OSError as exc:
        raise startup_failure(
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
            raise startup_failure(
                f"cannot listen: {exc}; choose another --port or free the address"
            ) from None
        fd = sock.fileno()
    ctx = click.get_current_context()
    skip = ("host", "port", "fd", "reload", "reload_dirs", "reload_delay")
    command = [
        sys.executable,
        "-c",
        "from towpath.cli.base import main; main(prog_name='towpath')",
        "runserver",
        *child_args(ctx, skip),
        "--fd",
        str(fd),
    ]
    # the child must not reload in turn, whatever TOWPATH_RELOAD says; and it compiles the
    # project's sources afresh (a .pyc is trusted by mtime in whole seconds and size, so an edit
    # saved within the same second could otherwise run the old code)
    env = {**os.environ, envvar("RELOAD"): "false", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop(envvar("FD"), None)
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
