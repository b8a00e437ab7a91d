"""``towpath runworker`` and ``towpath runserver``, and the ``runserver --reload`` wiring."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from towpath.cli.base import (
    POSITIVE_INT,
    POSITIVE_SECONDS,
    announce,
    envvar,
    field_option,
    main,
    startup_failure,
    usage_error,
)
from towpath.config import UserCodeError
from towpath.errors import ConfigError
from towpath.layers.base import InvalidChannelLayerError
from towpath.worker import LifespanFailure
from towpath.worker.channels import WorkerConfigError
from towpath.worker.config import WorkerConfig

#: what ``towpath.run_worker``/``run_server`` raise for a worker that cannot start: settings,
#: layers or user code that do not load, a bad --routing/--asgi/filter (a ConfigError), a
#: malformed route list (a TypeError), an app whose lifespan start-up failed. Of the layer
#: errors only a misconfiguration counts: another, raised while the worker runs, is a crash.
_WORKER_ERRORS: tuple[type[Exception], ...] = (
    ImportError,
    SyntaxError,
    InvalidChannelLayerError,
    ConfigError,
    TypeError,
    LifespanFailure,
)

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
        field_option(
            "--only-channels",
            config=WorkerConfig,
            field="only_channels",
            multiple=True,
            envvar=envvar("ONLY_CHANNELS"),
        ),
        field_option(
            "--exclude-channels",
            config=WorkerConfig,
            field="exclude_channels",
            multiple=True,
            envvar=envvar("EXCLUDE_CHANNELS"),
        ),
        field_option(
            "--concurrency",
            config=WorkerConfig,
            field="concurrency",
            type=POSITIVE_INT,
            envvar=envvar("CONCURRENCY"),
        ),
        field_option(
            "--graceful-timeout",
            config=WorkerConfig,
            field="graceful_timeout",
            type=POSITIVE_SECONDS,
            envvar=envvar("GRACEFUL_TIMEOUT"),
        ),
        field_option(
            "--heartbeat-interval",
            config=WorkerConfig,
            field="heartbeat_interval",
            type=POSITIVE_SECONDS,
            envvar=envvar("HEARTBEAT_INTERVAL"),
        ),
        field_option(
            "--handback-timeout",
            config=WorkerConfig,
            field="handback_timeout",
            type=POSITIVE_SECONDS,
            envvar=envvar("HANDBACK_TIMEOUT"),
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


def _worker_config(alias: str) -> WorkerConfig:
    """The current command's ``WorkerConfig``: its settings taken from the options of the same
    names; a bad one is a usage error naming its option."""
    params = click.get_current_context().params
    settings = {
        field.name: params[field.name]
        for field in dataclasses.fields(WorkerConfig)
        if field.name in params
    }
    try:
        return WorkerConfig(layer_alias=alias, **settings)
    except WorkerConfigError as exc:
        raise usage_error(exc) from None


def _relabelled(exc: Exception, asgi_path: str | None) -> Exception:
    """A failure importing user code, saying which option named that code."""
    if isinstance(exc, UserCodeError) and exc.target is not None:
        if exc.target == asgi_path:
            return exc.relabel(f"--asgi {asgi_path!r}")
        return exc.relabel(f"ROUTING {exc.target!r}")  # --routing, or the layer's ROUTING
    return exc


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
    import towpath

    _logging(log_level)
    if routing is not None and asgi_path is not None:
        raise click.UsageError("give --routing or --asgi, not both")
    config = _worker_config(layer)
    try:
        towpath.run_worker(settings, layer=layer, routing=routing, asgi=asgi_path, config=config)
    except _WORKER_ERRORS as exc:  # the IPC store unusable, ...
        raise startup_failure(_relabelled(exc, asgi_path)) from None


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
    if reload:
        _logging(log_level)
        raise SystemExit(_run_reloader(host, port, fd, reload_dirs, reload_delay, graceful_timeout))

    import towpath
    from towpath.interface.config import ServerConfig, ServerConfigError

    _logging(log_level)
    if routing is not None and asgi_path is not None:
        raise click.UsageError("give --routing or --asgi, not both")
    worker = _worker_config(layer)
    try:
        config = ServerConfig(
            host=host, port=port, fd=fd, graceful_timeout_seconds=graceful_timeout
        )
    except ServerConfigError as exc:
        raise usage_error(exc) from None

    try:
        towpath.run_server(
            settings,
            layer=layer,
            routing=routing,
            asgi=asgi_path,
            config=config,
            worker=worker,
            http_timeout_seconds=http_timeout,
            ready=announce(tls=False),
        )
    except _WORKER_ERRORS as exc:
        raise startup_failure(_relabelled(exc, asgi_path)) from None
    except OSError as exc:
        raise startup_failure(
            f"cannot listen: {exc}; choose another --port or free the address"
        ) from None


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
