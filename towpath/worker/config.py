"""``WorkerConfig``: every setting of a worker, in one frozen object.

``towpath runworker``/``runserver``, plain code and tests build this one object and pass it to
:class:`~towpath.worker.loop.Worker`; each default lives here alone (the CLI options take
theirs, and their help, from the fields: :func:`default_of`, ``towpath.fields.help_of``).
``__post_init__`` rejects impossible values with a ``WorkerConfigError`` (a
``towpath.errors.ConfigError``) whose ``field`` names the setting; its message also names the CLI
option that sets it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from towpath import fields
from towpath.fields import option_of, replace_known, setting
from towpath.worker.channels import WorkerConfigError

__all__ = ["WorkerConfig", "default_of"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    #: ``fnmatchcase`` globs narrowing the routed channels; any iterable of str is kept as a
    #: tuple
    only_channels: tuple[str, ...] = setting(
        (),
        option="--only-channels",
        help="Listen only on the routed channels matching this glob (repeatable).",
    )
    exclude_channels: tuple[str, ...] = setting(
        (),
        option="--exclude-channels",
        help="Do not listen on channels matching this glob (repeatable).",
    )
    #: messages in flight (a WebSocket counts until its handshake is answered)
    concurrency: int = setting(100, option="--concurrency", help="Messages handled at once.")
    #: seconds :meth:`Worker.stop` lets in-flight work finish before cancelling it
    graceful_timeout: float = setting(
        30.0,
        option="--graceful-timeout",
        help="After SIGTERM, seconds for in-flight consumers before they are cancelled.",
    )
    #: the alias the worker registers its layer under
    layer_alias: str = setting("default", option="--layer", help="Layer alias.")
    #: back-off after a lost layer connection: first delay, doubled up to ``retry_max``
    retry_initial: float = 0.1
    retry_max: float = 5.0
    #: seconds between two heartbeats to each interface server
    heartbeat_interval: float = setting(
        1.0,
        option="--heartbeat-interval",
        help="Seconds between two heartbeats to each interface server the worker serves.",
    )
    #: on a graceful stop, seconds a handed-back WebSocket's consumer waits for its successor
    handback_timeout: float = setting(
        10.0,
        option="--handback-timeout",
        help="On a graceful stop, seconds a handed-back WebSocket's consumer waits for its "
        "successor to take over its groups before it leaves them anyway.",
    )

    def __post_init__(self) -> None:
        for name in ("only_channels", "exclude_channels"):
            value = getattr(self, name)
            globs = () if isinstance(value, str) else tuple(value)
            if isinstance(value, str) or not all(isinstance(g, str) for g in globs):
                option = option_of(WorkerConfig, name)
                raise WorkerConfigError(
                    f"{name} must be an iterable of str globs, not {value!r} ({option} GLOB)",
                    field=name,
                )
            object.__setattr__(self, name, globs)
        concurrency = self.concurrency
        if type(concurrency) is not int or concurrency < 1:
            raise WorkerConfigError(
                f"concurrency must be an int >= 1, not {concurrency!r} (--concurrency N)",
                field="concurrency",
            )
        for name in ("graceful_timeout", "heartbeat_interval", "handback_timeout"):
            value = getattr(self, name)
            if not value > 0:
                option = option_of(WorkerConfig, name)
                raise WorkerConfigError(
                    f"{name} must be > 0, not {value!r} ({option} SECONDS)", field=name
                )

    def replace(self, **changes: Any) -> WorkerConfig:
        """A copy with ``changes``; an unknown name is an error suggesting the nearest one."""
        return replace_known(self, changes, WorkerConfigError, "worker")


def default_of(config: type[WorkerConfig], name: str) -> Any:
    """The default of ``config``'s field ``name`` (what a CLI option's ``default=`` takes)."""
    return fields.default_of(config, name, WorkerConfigError)
