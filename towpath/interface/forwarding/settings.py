"""The forwarding app's settings: one frozen object, checked when it is made.

In ``ServerConfig``'s style: units in the names, each field's default, CLI option and help in
its metadata (``towpath serve``'s options take theirs from here: ``towpath.fields``), a
:class:`ForwardingConfigError` whose ``field`` names the setting at fault, and
:meth:`ForwardingSettings.replace`, which refuses an unknown name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from towpath.errors import ConfigError
from towpath.fields import replace_known, setting
from towpath.interface.delivery import DEFAULT_PROTOCOL_SEND_TIMEOUT

__all__ = ["ForwardingConfigError", "ForwardingSettings"]


class ForwardingConfigError(ConfigError):
    """A forwarding setting is invalid; ``field`` names it, the message what it accepts."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ForwardingSettings:
    """How the forwarding app forwards (``ForwardingApp``'s keyword arguments, which
    document each)."""

    http_timeout_seconds: float | None = setting(
        120.0,
        option="--http-timeout",
        help="Decoupled mode: seconds to wait for a response before 503.",
    )
    body_chunk_bytes: int = 256 * 1024
    max_body_bytes: int | None = setting(None, option="--max-body-bytes")
    heartbeat_timeout_seconds: float = setting(
        5.0,
        option="--heartbeat-timeout",
        help="Decoupled mode: seconds without a worker heartbeat before the worker is gone (its "
        "requests get 503, its WebSockets are re-dispatched).",
    )
    #: None: ``heartbeat_timeout_seconds``
    untaken_warning_seconds: float | None = setting(
        None,
        option="--untaken-warning",
        help="Decoupled mode: seconds a request may wait with no worker taking it before the "
        "server logs that no worker is taking requests (or that they wait for busy workers). "
        "[default: the heartbeat timeout]",
    )
    worker_command: str = "`towpath runworker` with the same settings"
    protocol_send_timeout_seconds: float = setting(
        DEFAULT_PROTOCOL_SEND_TIMEOUT,
        option="--protocol-send-timeout",
        help="Decoupled mode: seconds a protocol message (a disconnect notice, a resumed "
        "connect, a handback end, a heartbeat ack) is retried while its channel is full before "
        "it is given up (logged, counted).",
    )

    def __post_init__(self) -> None:
        timeout = self.http_timeout_seconds
        if timeout is not None and not timeout > 0:
            raise ForwardingConfigError(
                f"http_timeout_seconds must be > 0 or None, not {timeout!r}",
                field="http_timeout_seconds",
            )
        heartbeat = self.heartbeat_timeout_seconds
        if not heartbeat > 0:
            raise ForwardingConfigError(
                f"heartbeat_timeout_seconds must be > 0, not {heartbeat!r}",
                field="heartbeat_timeout_seconds",
            )
        untaken = self.untaken_warning_seconds
        if untaken is not None and not untaken > 0:
            raise ForwardingConfigError(
                f"untaken_warning_seconds must be > 0 or None, not {untaken!r}",
                field="untaken_warning_seconds",
            )
        chunk = self.body_chunk_bytes
        if type(chunk) is not int or chunk < 1:
            raise ForwardingConfigError(
                f"body_chunk_bytes must be a positive int, not {chunk!r}", field="body_chunk_bytes"
            )
        limit = self.max_body_bytes
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ForwardingConfigError(
                f"max_body_bytes must be an int >= 0 or None, not {limit!r}",
                field="max_body_bytes",
            )

    @property
    def untaken_warning(self) -> float:
        """Seconds before an untaken request is logged."""
        return self.untaken_warning_seconds or self.heartbeat_timeout_seconds

    def replace(self, **changes: Any) -> ForwardingSettings:
        """A copy with ``changes``; an unknown name is an error suggesting the nearest one."""
        return replace_known(self, changes, ForwardingConfigError, "forwarding")
