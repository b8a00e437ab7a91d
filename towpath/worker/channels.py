"""Which channels a worker listens on: the routing's channels, narrowed by glob filters."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from towpath.errors import ConfigError

__all__ = ["WorkerConfigError", "filter_channels"]


class WorkerConfigError(ConfigError):
    """A worker cannot start as configured; the message says why and what to change, and
    ``field`` names the ``WorkerConfig`` setting at fault (``None``: the routing itself)."""


def filter_channels(
    channels: Iterable[str], only: Iterable[str] = (), exclude: Iterable[str] = ()
) -> list[str]:
    """``channels`` kept when they match any ``only`` glob (all when none are given), then
    dropped when they match any ``exclude`` glob (``fnmatchcase``); sorted. Raises
    ``WorkerConfigError`` explaining an empty result."""
    names = sorted(set(channels))
    only = tuple(only)
    exclude = tuple(exclude)
    if not names:
        raise WorkerConfigError(
            "the routing names no channels: add route(channel, consumer) entries, or host an "
            "ASGI app with --asgi module:app"
        )
    kept = [name for name in names if not only or any(fnmatchcase(name, g) for g in only)]
    if not kept:
        raise WorkerConfigError(
            f"no channel of the routing matches --only-channels {' '.join(only)}; the routing "
            f"names: {', '.join(names)}",
            field="only_channels",
        )
    result = [name for name in kept if not any(fnmatchcase(name, g) for g in exclude)]
    if not result:
        raise WorkerConfigError(
            f"--exclude-channels {' '.join(exclude)} drops every channel left "
            f"({', '.join(kept)}): nothing to listen on",
            field="exclude_channels",
        )
    return result
