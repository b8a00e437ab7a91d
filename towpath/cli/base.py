"""What every ``towpath`` command shares: the ``main`` group the commands register on (each
command module imports this one; ``towpath.cli`` imports the command modules, so nothing imports
back), and how library exceptions become exit statuses and messages: a
:class:`~towpath.errors.ConfigError` found while translating options is a usage error (2) led by
the option its class and ``field`` name; a start-up failure is ``EXIT_STARTUP_FAILURE`` (3)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from towpath import __version__
from towpath.errors import ConfigError
from towpath.fields import default_of, help_of, option_of
from towpath.interface.config import ServerConfig, ServerConfigError
from towpath.interface.forwarding.settings import ForwardingConfigError, ForwardingSettings
from towpath.layers.base import ChannelLayerError, LayerOptionError, LayerOptions
from towpath.worker.channels import WorkerConfigError
from towpath.worker.config import WorkerConfig

__all__ = [
    "EXIT_STARTUP_FAILURE",
    "POSITIVE_INT",
    "POSITIVE_SECONDS",
    "STARTUP_ERRORS",
    "announce",
    "describe_startup_error",
    "envvar",
    "field_option",
    "given",
    "main",
    "option_for",
    "report_startup_failure",
    "startup_failure",
    "usage_error",
]

Command = TypeVar("Command", bound=Callable[..., Any])

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


def envvar(name: str) -> str:
    """The environment variable of an option (``TOWPATH_<NAME>``)."""
    return f"TOWPATH_{name}"


POSITIVE_SECONDS = click.FloatRange(min=0, min_open=True)
POSITIVE_INT = click.IntRange(min=1)


def option_for(error: ConfigError) -> str | None:
    """The option to blame for ``error``: the one it names itself, else the option of its
    ``field`` in the config object its class belongs to (``ServerConfigError`` ->
    ``ServerConfig``, ...: each field's ``option`` metadata); never read from the message."""
    if error.option is not None:
        return error.option
    if error.field is None:
        return None
    for kind in type(error).__mro__:
        config = _CONFIG_OF_ERROR.get(kind)
        if config is not None:
            return option_of(config, error.field)
    return None


def usage_error(error: ConfigError) -> click.UsageError:
    """A config error found while translating options: exit status 2 (click's usage error),
    the message led by the option to change (``--port: port must be ...``)."""
    option = option_for(error)
    return click.UsageError(f"{option}: {error}" if option else str(error))


#: each config error class -> the config object whose field metadata names the options
_CONFIG_OF_ERROR: dict[type[ConfigError], type[Any]] = {
    ServerConfigError: ServerConfig,
    WorkerConfigError: WorkerConfig,
    ForwardingConfigError: ForwardingSettings,
    LayerOptionError: LayerOptions,
}


def field_option(
    *names: str, config: type[Any], field: str, **kwargs: Any
) -> Callable[[Command], Command]:
    """``click.option(*names, ...)`` for ``config``'s field ``field``: its default and help
    come from the field (``towpath.fields.setting``), so they cannot drift from the config."""
    return click.option(
        *names, default=default_of(config, field), help=help_of(config, field), **kwargs
    )


def given(name: str) -> bool:
    """The current command's option ``name`` was given (on the command line or in its
    environment variable), not left at its default."""
    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT)


def announce(*, tls: bool) -> Callable[[list[Any]], None]:
    """The ``ready`` callback of serve and runserver: one ``towpath serving on URL`` line per
    address on stdout (what process managers and tests wait for), flushed."""
    from towpath.interface.server import address_url

    def ready(addresses: list[Any]) -> None:
        for address in addresses:
            click.echo(f"towpath serving on {address_url(address, tls=tls)}")
        sys.stdout.flush()

    return ready
