"""The forwarding app's settings: one frozen object, checked when it is made."""

from __future__ import annotations

import dataclasses

from towpath.interface.delivery import DEFAULT_PROTOCOL_SEND_TIMEOUT

__all__ = ["ForwardingSettings"]


@dataclasses.dataclass(frozen=True, slots=True)
class ForwardingSettings:
    """How the forwarding app forwards (``ForwardingApp``'s keyword arguments, which
    document each)."""

    http_timeout_seconds: float | None = 120.0
    body_chunk_bytes: int = 256 * 1024
    max_body_bytes: int | None = None
    heartbeat_timeout_seconds: float = 5.0
    #: None: ``heartbeat_timeout_seconds``
    untaken_warning_seconds: float | None = None
    worker_command: str = "`towpath runworker` with the same settings"
    protocol_send_timeout_seconds: float = DEFAULT_PROTOCOL_SEND_TIMEOUT

    def __post_init__(self) -> None:
        timeout = self.http_timeout_seconds
        if timeout is not None and not timeout > 0:
            raise ValueError(f"http_timeout_seconds must be > 0 or None, not {timeout!r}")
        if not self.heartbeat_timeout_seconds > 0:
            raise ValueError(
                f"heartbeat_timeout_seconds must be > 0, not {self.heartbeat_timeout_seconds!r}"
            )
        untaken = self.untaken_warning_seconds
        if untaken is not None and not untaken > 0:
            raise ValueError(f"untaken_warning_seconds must be > 0 or None, not {untaken!r}")
        chunk = self.body_chunk_bytes
        if type(chunk) is not int or chunk < 1:
            raise ValueError(f"body_chunk_bytes must be a positive int, not {chunk!r}")
        limit = self.max_body_bytes
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError(f"max_body_bytes must be an int >= 0 or None, not {limit!r}")

    @property
    def untaken_warning(self) -> float:
        """Seconds before an untaken request is logged."""
        return self.untaken_warning_seconds or self.heartbeat_timeout_seconds
