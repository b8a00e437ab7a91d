"""What the frozen config objects share (``ServerConfig``, ``WorkerConfig``): a copy with some
fields changed, where a misspelt name is an error suggesting the nearest real one, and a field's
default (what a CLI option's ``default=`` takes, so defaults live in one place)."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, TypeVar

__all__ = ["default_of", "replace_known"]

Config = TypeVar("Config")


def replace_known(
    config: Config, changes: dict[str, Any], error: type[Exception], what: str
) -> Config:
    """``dataclasses.replace(config, **changes)``; an unknown name raises ``error`` naming it
    (``unknown {what} setting 'x'; did you mean 'y'?``)."""
    known = [field.name for field in dataclasses.fields(config)]  # type: ignore[arg-type]
    for name in changes:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise error(f"unknown {what} setting {name!r}{hint}")
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def default_of(config: type[Any], name: str, error: type[Exception] = KeyError) -> Any:
    """The default of the dataclass ``config``'s field ``name``."""
    for field in dataclasses.fields(config):
        if field.name == name:
            return field.default
    raise error(f"{config.__name__} has no setting {name!r}")
