"""The ``towpath`` command. It only translates: flags become config objects and library calls
(``towpath.serve``, ``towpath.run_worker``, ...), library exceptions become exit codes. Every
option also reads a ``TOWPATH_<OPTION>`` environment variable, which suits supervisord program
sections.

The group and what the commands share live in :mod:`towpath.cli.base`; each command module
registers its commands on that group, and importing them here makes ``towpath.cli:main`` (the
console script, and the ``--reload`` child's command line) a complete command.
"""

from __future__ import annotations

from towpath.cli import check as check
from towpath.cli import deploy as deploy
from towpath.cli import serve as serve
from towpath.cli import workers as workers
from towpath.cli.base import (
    EXIT_STARTUP_FAILURE,
    STARTUP_ERRORS,
    describe_startup_error,
    main,
    report_startup_failure,
    startup_failure,
)

__all__ = [
    "EXIT_STARTUP_FAILURE",
    "STARTUP_ERRORS",
    "describe_startup_error",
    "main",
    "report_startup_failure",
    "startup_failure",
]
