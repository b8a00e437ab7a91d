"""How an exchange's reply loop ended, or why it must stop.

A ``str`` enum: an outcome compares equal to its value and logs as it, so what was logged
before (``"timeout"``, ``"gone"``, ...) reads the same.
"""

from __future__ import annotations

import enum

__all__ = ["Outcome"]


class Outcome(enum.StrEnum):
    """Why a forwarded connection's reply loop ended (or must end)."""

    #: no answer (or no next step of a re-dispatch or handback) before the deadline
    TIMEOUT = "timeout"
    #: the client left
    GONE = "gone"
    #: the channel layer failed
    LAYER = "layer"
    #: HTTP: the response is complete
    COMPLETE = "complete"
    #: HTTP: the worker abandoned the response (``towpath.abort``)
    ABORT = "abort"
    #: HTTP: the worker handling the request was declared gone
    WORKER_LOST = "worker lost"
    #: HTTP: the body passed ``max_body_bytes``
    TOO_LARGE = "too large"
    #: HTTP: the worker's reply was not a valid ASGI event (answered 502)
    BAD_REPLY = "bad reply"
    #: WebSocket: a close (or the end of a denial) was sent to the client
    CLOSED = "closed"
    #: WebSocket: closed 1013 because the connection could not be (re-)dispatched
    LOST = "lost"
    #: WebSocket: closed 1013 because the client left too much output unread
    SLOW = "slow"
    #: WebSocket: closed 1013 because a channel (or the held frames) was full
    FULL = "full"
