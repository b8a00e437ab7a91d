"""An import shim, not channels_redis: ``channels_redis.*`` names mapped to towpath's classes.

tests/peers/channels_redis_suite.py puts the directory holding this package first on the
``PYTHONPATH`` of the pytest run of channels_redis 4.3.0's own test suite, so its
``from channels_redis.core import RedisChannelLayer`` gets towpath's layer even though the real
channels_redis is installed in the same venv (it is a benchmark peer). The run's plugin
(towpath_peer_plugin.py) checks that this package, not the real one, was imported.

Names towpath has no counterpart for are placeholders (see ``_missing``): they let the test
modules import, so their tests are listed and left out by name, and fail loudly if called.
"""

from __future__ import annotations

from typing import Any, NoReturn

__version__ = "4.3.0"  # the suite this shim stands in for


def _missing(name: str, why: str) -> Any:
    """A stand-in for channels_redis's ``name``, which towpath does not provide (``why``)."""

    def missing(*args: object, **kwargs: object) -> NoReturn:
        raise NotImplementedError(f"channels_redis {name} has no towpath counterpart: {why}")

    missing.__name__ = missing.__qualname__ = name
    return missing
