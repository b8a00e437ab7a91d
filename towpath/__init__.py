"""towpath: run ASGI applications as a decoupled stack of interface servers, channel layers and
workers, or in-process as an ordinary ASGI 3 server.

The entry points the ``towpath`` command calls are here for code too (:mod:`towpath.serving`):
``towpath.serve``, ``towpath.run_worker``, ``towpath.run_server`` and ``towpath.check``. They
are imported on first use, so ``import towpath`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "check", "run_server", "run_worker", "serve"]

if TYPE_CHECKING:
    from towpath.serving import check, run_server, run_worker, serve

_ENTRY_POINTS = frozenset({"check", "run_server", "run_worker", "serve"})


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        from towpath import serving

        return getattr(serving, name)
    raise AttributeError(f"module 'towpath' has no attribute {name!r}")
