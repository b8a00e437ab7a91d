"""Render what runs a towpath stack under a process manager: one supervisord file
(``towpath deploy supervisord``) or a set of systemd units (``towpath deploy systemd``).

:class:`DeployConfig` (``config.py``) holds and checks the options; :func:`render_supervisord`
and :func:`render_systemd` (``render.py``) fill in the templates under ``templates/``.
docs/deployment.md explains each choice the templates make; the files under ``deploy/`` in
the repository are renderings of them, and a test keeps the two in sync.
"""

from towpath.deploy.config import (
    DEFAULT_LOG_DIR,
    DEFAULT_REDIS_URL,
    DEFAULT_RUN_DIR,
    STOP_MARGIN_SECONDS,
    DeployConfig,
    DeployConfigError,
    WorkerPool,
    default_towpath,
)
from towpath.deploy.render import command_line, render_supervisord, render_systemd

__all__ = [
    "DEFAULT_LOG_DIR",
    "DEFAULT_REDIS_URL",
    "DEFAULT_RUN_DIR",
    "STOP_MARGIN_SECONDS",
    "DeployConfig",
    "DeployConfigError",
    "WorkerPool",
    "command_line",
    "default_towpath",
    "render_supervisord",
    "render_systemd",
]
