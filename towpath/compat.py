"""The internals of dependencies that towpath still uses, each behind one named function.

Everywhere else towpath uses its dependencies' public APIs. What is here has no public
equivalent that does the job; each function says why it exists and what it touches.
``tests/project/test_compat.py`` exercises every one against the installed library (a real h2
connection receiving a real GOAWAY, a real redis-py connection to a real ``redis-server``) and
fails naming the library and its version when an internal changed; it also fails when a private
attribute of a dependency is used anywhere in towpath outside this module. pyproject.toml caps
each library named in :data:`INTERNALS` below its next major release (``make test-latest``
shows what a new one breaks).

- h2: after a client's ``GOAWAY(NO_ERROR)`` h2 refuses every send, though RFC 9113 lets the
  streams in flight finish (:func:`h2_reopen_after_goaway`).
- redis-py (asyncio): a batch is written in the event-loop callback that formed it, without an
  await (:func:`redis_write`), on a connection first checked to be open at both ends
  (:func:`redis_usable`); a read in progress is broken from outside, at once
  (:func:`redis_abort`).

Nothing here imports those libraries (or asyncio) at run time: the sans-IO protocol modules
import this module, and it only touches the objects it is given.
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from h2.connection import H2Connection
    from redis.asyncio.connection import AbstractConnection

__all__ = [
    "INTERNALS",
    "InternalChanged",
    "h2_reopen_after_goaway",
    "internal_changed",
    "redis_abort",
    "redis_usable",
    "redis_write",
]

#: distribution name -> the internals of it used here (what a test failure names)
INTERNALS: dict[str, tuple[str, ...]] = {
    "h2": ("H2Connection.state_machine.state",),
    "redis": ("AbstractConnection._reader", "AbstractConnection._writer"),
}


class InternalChanged(RuntimeError):
    """A dependency no longer has an internal towpath relies on (a new release changed it)."""


def internal_changed(distribution: str, what: str) -> InternalChanged:
    """The error for ``distribution`` (installed version named) having lost ``what``."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "(version unknown)"
    return InternalChanged(
        f"towpath.compat: {distribution} {version} no longer has {what}; see towpath/compat.py"
    )


# -- h2 ----------------------------------------------------------------------------------------


def h2_reopen_after_goaway(connection: H2Connection) -> None:
    """Let ``connection`` send again after it received the client's ``GOAWAY(NO_ERROR)``.

    RFC 9113 (6.8) lets the streams at or below a GOAWAY's last stream id finish, but h2 moves
    its connection state machine to CLOSED on any GOAWAY received and then refuses every send
    (``ProtocolError``), so requests in flight could never be answered. h2 has no public way to
    keep sending; this puts its state machine (``H2Connection.state_machine``, an undocumented
    attribute) back to open for our side of the connection. Frames received later are processed
    as before.
    """
    from h2.connection import ConnectionState

    client = connection.config.client_side
    try:
        connection.state_machine.state = (
            ConnectionState.CLIENT_OPEN if client else ConnectionState.SERVER_OPEN
        )
    except AttributeError:
        raise internal_changed("h2", "H2Connection.state_machine.state") from None


# -- redis-py (asyncio) ------------------------------------------------------------------------


def redis_write(connection: AbstractConnection, data: bytes) -> None:
    """Write ``data`` (packed commands) on ``connection`` now, without awaiting.

    redis-py's public write, ``send_packed_command``, is a coroutine. The layer's ``Shard``
    writes each batch in the event-loop callback that formed it and starts the task that reads
    the replies after the write; writing in that task instead costs about 2 µs a round trip
    (5% on loopback with one command in flight; 12 µs with a ``socket_timeout``). The internal
    is the one :func:`redis_usable` needs anyway: this writes on the connection's
    ``asyncio.StreamWriter`` (``_writer``) directly. One batch in flight at a time bounds what
    the transport buffers, so no ``drain()`` is needed.

    Raises ``ConnectionError`` (an ``OSError``) when ``connection`` is not connected.
    """
    try:
        writer = connection._writer
    except AttributeError:
        raise internal_changed("redis", "AbstractConnection._writer") from None
    if writer is None:
        raise ConnectionError("the Redis connection is not connected")
    writer.write(data)


def redis_usable(connection: AbstractConnection) -> bool:
    """Whether ``connection`` is connected, writable, and not closed by the server.

    redis-py's ``is_connected`` only says that a socket was opened: a server that closed an idle
    connection (a restart) leaves it "connected" until a read fails. Its public probe of that,
    ``can_read_destructive`` (``can_read`` from redis-py 8), is a coroutine that reads or raises
    and varies between releases; the ``Shard`` needs the answer synchronously before it writes,
    so that it redials instead of writing commands into a dead socket (commands lost that way
    are not retried: they may have run). This asks the connection's stream reader and writer
    (``_reader``, ``_writer``) through asyncio's public ``at_eof()`` and ``is_closing()``.
    """
    try:
        reader, writer = connection._reader, connection._writer
    except AttributeError:
        raise internal_changed("redis", "AbstractConnection._reader/_writer") from None
    return (
        reader is not None
        and writer is not None
        and not writer.transport.is_closing()
        and not reader.at_eof()
    )


def redis_abort(connection: AbstractConnection | None) -> None:
    """Break ``connection`` at once from outside: a read in progress on it (a batch's replies,
    a BLPOP, a subscription) fails with a connection error in the task doing it, which then
    ends on its own instead of being cancelled deep inside redis-py.

    redis-py's ``disconnect()`` is a coroutine: it closes gracefully (a hung server can hold it
    while unsent data waits) and resets the connection's parser under the feet of the task
    reading. The callers here are timer callbacks (the command watchdog, the subscription
    keep-alive) and close paths that must not wait. This aborts the transport of the
    connection's stream writer (``_writer``); a connection that is not connected is left as is.
    """
    if connection is None:
        return
    try:
        writer = connection._writer
    except AttributeError:
        raise internal_changed("redis", "AbstractConnection._writer") from None
    if writer is not None:
        writer.transport.abort()
