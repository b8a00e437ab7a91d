"""The ``towpath`` command. It only translates: flags become library calls, library exceptions
become exit codes. Every option also reads a ``TOWPATH_<OPTION>`` environment variable, which
suits supervisord program sections."""

from __future__ import annotations

import asyncio
import time

import click

from towpath import __version__
from towpath.config import configure_layers, load_settings
from towpath.layers.base import BaseChannelLayer, ChannelLayerError

__all__ = ["main"]

#: Exit status for a configuration or start-up failure, distinct from a crash (1), so a
#: process manager can tell "will never start" from "fell over".
EXIT_STARTUP_FAILURE = 3


@click.group(context_settings={"auto_envvar_prefix": "TOWPATH", "show_default": True})
@click.version_option(__version__, prog_name="towpath", allow_from_autoenv=False)
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
        layers = configure_layers(load_settings(settings, embedded=True))
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


def _config_error(exc: Exception) -> click.UsageError:
    message = str(exc)
    setting = message.split(" ", 1)[0]
    option = _OPTION_FOR_SETTING.get(setting)
    return click.UsageError(f"{option}: {message}" if option else message)


def _startup_error(message: object) -> SystemExit:
    click.echo(f"Error: {_describe(message)}", err=True)
    return SystemExit(EXIT_STARTUP_FAILURE)


def _describe(error: object) -> object:
    """An error as a startup message; a syntax error says where."""
    if isinstance(error, SyntaxError):
        return f"SyntaxError in {error.filename}, line {error.lineno}: {error.msg}"
    return error


# the commands live in submodules and register themselves on ``main`` when imported; importing
# them here keeps ``towpath.cli:main`` (the console script, and the ``--reload`` child's command
# line) a complete command
from towpath.cli import deploy as deploy  # noqa: E402
from towpath.cli import serve as serve  # noqa: E402
from towpath.cli import workers as workers  # noqa: E402
