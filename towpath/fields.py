"""What the frozen config objects share (``ServerConfig``, ``WorkerConfig``,
``ForwardingSettings``): a copy with some fields changed, where a misspelt name is an error
suggesting the nearest real one; a field's default, its CLI option and its help (what a click
option's ``default=`` and ``help=`` take, so they live in one place and cannot drift); and the
option to blame for a :class:`~towpath.errors.ConfigError` naming a field."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, TypeVar

from towpath.errors import ConfigError

__all__ = ["default_of", "help_of", "option_of", "replace_known", "setting"]

Config = TypeVar("Config")


def setting(default: Any, *, option: str | None = None, help: str | None = None) -> Any:
    """A config field with its default, the CLI ``option`` that sets it, and its ``help``
    (the option's help text)."""
    return dataclasses.field(default=default, metadata={"option": option, "help": help})


def replace_known(
    config: Config, changes: dict[str, Any], error: type[ConfigError], what: str
) -> Config:
    """``dataclasses.replace(config, **changes)``; an unknown name raises ``error`` naming it
    (``unknown {what} setting 'x'; did you mean 'y'?``)."""
    known = [field.name for field in dataclasses.fields(config)]  # type: ignore[arg-type]
    for name in changes:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise error(f"unknown {what} setting {name!r}{hint}", field=name)
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def _field(config: type[Any], name: str, error: type[ConfigError]) -> dataclasses.Field[Any]:
    for field in dataclasses.fields(config):
        if field.name == name:
            return field
    raise error(f"{config.__name__} has no setting {name!r}", field=name)


def default_of(config: type[Any], name: str, error: type[ConfigError] = ConfigError) -> Any:
    """The default of the dataclass ``config``'s field ``name``."""
    return _field(config, name, error).default


def option_of(config: type[Any], name: str) -> str | None:
    """The CLI option that sets ``config``'s field ``name`` (``None``: no option, or no such
    field)."""
    for field in dataclasses.fields(config):
        if field.name == name:
            option: str | None = field.metadata.get("option")
            return option
    return None


def help_of(config: type[Any], name: str) -> str:
    """The help text of ``config``'s field ``name`` (what its CLI option shows)."""
    text: str | None = _field(config, name, ConfigError).metadata.get("help")
    if text is None:
        raise ConfigError(f"{config.__name__}.{name} has no help text", field=name)
    return text
