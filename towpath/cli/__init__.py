"""The ``towpath`` command. It only translates: flags become library calls, library exceptions
become exit codes. Every option also reads a ``TOWPATH_<OPTION>`` environment variable, which
suits supervisord program sections."""

from __future__ import annotations

import os
import sys

import click

from towpath import __version__
from towpath.config import configure_layers, load_settings
from towpath.layers.base import ChannelLayerError

__all__ = [
    "EXIT_STARTUP_FAILURE",
    "STARTUP_ERRORS",
    "describe_startup_error",
    "main",
    "report_startup_failure",
    "startup_failure",
]

#: Exit status for a configuration or start-up failure, distinct from a crash (1), so a
#: process manager can tell "will never start" from "fell over".
EXIT_STARTUP_FAILURE = 3

#: What loading settings, layers, routing and apps raises for a problem the user must fix
#: (``UserCodeError``, an ImportError, covers any exception raised by importing user code).
STARTUP_ERRORS: tuple[type[Exception], ...] = (ChannelLayerError, ImportError, SyntaxError)


def describe_startup_error(error: object) -> str:
    """A start-up failure as the one line every command prints after ``Error: ``; a syntax
    error says where (``SyntaxError in <file>, line N: <msg>``)."""
    if isinstance(error, SyntaxError):
        return f"SyntaxError in {error.filename}, line {error.lineno}: {error.msg}"
    return str(error)


def report_startup_failure(error: object) -> int:
    """Print ``Error: <what is wrong>`` on stderr (one line, no traceback); returns
    ``EXIT_STARTUP_FAILURE``, the status every command exits with when it cannot start."""
    click.echo(f"Error: {describe_startup_error(error)}", err=True)
    return EXIT_STARTUP_FAILURE


def startup_failure(error: object) -> SystemExit:
    """``report_startup_failure`` for a command to ``raise ... from None``."""
    return SystemExit(report_startup_failure(error))


@click.group(context_settings={"auto_envvar_prefix": "TOWPATH", "show_default": True})
@click.version_option(__version__, prog_name="towpath", allow_from_autoenv=False)
def main() -> None:
    """towpath: ASGI interface servers, channel layers and workers."""


@main.command()
@click.option(
    "--settings",
    envvar="TOWPATH_SETTINGS",
    help="Settings module (dotted name or .py path) holding CHANNEL_LAYERS. [default: the IPC "
    "layer, as for serve and runworker]",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    help="Seconds each layer's round trip may take (all layers are checked at once).",
)
def check(settings: str | None, timeout: float) -> None:
    """Load the settings, build every channel layer, send one message through each layer's
    server and receive it back, and load each layer's ROUTING. Prints `<alias>: ok (...)` or
    `<alias>: FAILED <reason>` per layer; exits 1 when one failed."""
    from towpath.check import check_layers

    if os.getcwd() not in sys.path:  # ROUTING imports from the project root, as in runworker
        sys.path.insert(0, os.getcwd())
    try:
        loaded = load_settings(settings, embedded=True)
        layers = configure_layers(loaded)
    except STARTUP_ERRORS as exc:
        raise startup_failure(exc) from None
    failed = False
    for report in check_layers(layers, loaded.channel_layers, timeout=timeout):
        if report.failure is None:
            trips = ", ".join(f"{s * 1e3:.2f} ms via {where}" for where, s in report.round_trips)
            routing = (
                f"; ROUTING {report.routing!r} loads"
                if report.routing and report.routing_failure is None
                else ""
            )
            click.echo(f"{report.alias}: ok ({report.backend}, round trip {trips}{routing})")
        else:
            click.echo(f"{report.alias}: FAILED {report.failure}", err=True)
        if report.routing_failure is not None:
            click.echo(f"{report.alias}: FAILED {report.routing_failure}", err=True)
        for warning in report.warnings:
            click.echo(f"{report.alias}: warning: {warning}", err=True)
        failed = failed or not report.ok
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
    "max_header_count": "--max-header-count",
    "h2_reset_burst": "--h2-reset-burst",
    "h2_resets_per_second": "--h2-resets-per-second",
    "h2_control_frame_burst": "--h2-control-frame-burst",
    "h2_control_frames_per_second": "--h2-control-frames-per-second",
    "ws_allowed_origins:": "--ws-allowed-origins",
    "max_body_bytes": "--max-body-bytes",
    "max_websocket_message_bytes": "--ws-max-size",
    "keep_alive_timeout_seconds": "--keep-alive-timeout",
    "header_timeout_seconds": "--header-timeout",
    "graceful_timeout_seconds": "--graceful-timeout",
    "ws_ping_interval_seconds": "--ping-interval",
    "ws_ping_timeout_seconds": "--ping-timeout",
    "websocket_timeout_seconds": "--websocket-timeout",
    "ws_output_limit_bytes": "--ws-output-limit",
}


def _config_error(exc: Exception) -> click.UsageError:
    message = str(exc)
    setting = message.split(" ", 1)[0]
    option = _OPTION_FOR_SETTING.get(setting)
    return click.UsageError(f"{option}: {message}" if option else message)


# the commands live in submodules and register themselves on ``main`` when imported; importing
# them here keeps ``towpath.cli:main`` (the console script, and the ``--reload`` child's command
# line) a complete command
from towpath.cli import deploy as deploy  # noqa: E402
from towpath.cli import serve as serve  # noqa: E402
from towpath.cli import workers as workers  # noqa: E402
