"""The accept path: file-descriptor limits and our own accept loop.

Every connection costs a file descriptor. At start-up :func:`raise_fd_limit` lifts the soft
``RLIMIT_NOFILE`` to the hard one (``ulimit -n`` is often 1024 while the hard limit is far
higher), and :func:`connection_limit` keeps the default ``max_connections`` below it, with
room for what else the process opens (listeners, the layer's sockets, logs): past it a new
connection is answered 503 rather than left unaccepted.

When descriptors run out anyway (``EMFILE``/``ENFILE``; other processes, a limit lowered by
hand), asyncio's own accept loop logs one traceback per pending connection and re-arms itself
as many times (megabytes of log and seconds of CPU a second under a flood). :class:`Listener`
accepts instead: on exhaustion it stops accepting for ``ACCEPT_PAUSE_SECONDS``, logs one
warning per episode, tries again, and logs once more when the episode is over (connections
accepted for ``EPISODE_QUIET_SECONDS`` with no refusal).
uvloop's accept loop (C) pauses by itself and is used as it is.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
import time
from collections.abc import Callable

__all__ = [
    "ACCEPT_PAUSE_SECONDS",
    "Listener",
    "connection_limit",
    "fd_limit",
    "raise_fd_limit",
]

logger = logging.getLogger("towpath.interface")

#: how long a closing listener waits for the sockets it accepted to get their protocol
CONNECT_WAIT_SECONDS = 1.0
#: how long accepting stops when the process is out of file descriptors
ACCEPT_PAUSE_SECONDS = 0.5
#: an exhaustion episode ends once connections were accepted for this long without a refusal
EPISODE_QUIET_SECONDS = 2.0
#: connections accepted in one loop turn at most (the rest wait in the kernel's backlog)
ACCEPT_BATCH = 128
#: file descriptors kept for things other than client connections (at most a quarter)
FD_RESERVE = 64
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def fd_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` of this process."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_fd_limit() -> tuple[int, int]:
    """Lift the soft ``RLIMIT_NOFILE`` to the hard limit; returns ``(before, after)``. A limit
    that cannot be raised is left as it is (and logged at debug level)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        logger.debug("cannot raise the file-descriptor limit from %d to %d: %s", soft, target, exc)
        return soft, soft
    return soft, target


def connection_limit(limit: int | None = None) -> int:
    """The default ``max_connections`` for a soft descriptor limit (this process's when None):
    the limit less ``FD_RESERVE``, or less a quarter of a small one."""
    if limit is None:
        limit = fd_limit()
    return max(1, limit - min(FD_RESERVE, limit // 4))


class Listener:
    """One listening socket served by our accept loop on asyncio's own event loop; looks like
    the ``asyncio.Server`` it replaces where :class:`~towpath.interface.server.Server` uses one
    (``sockets``, ``close``)."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.sockets = [sock]
        self._factory = factory
        self._ssl = ssl_context
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._paused: asyncio.TimerHandle | None = None
        self._quiet: asyncio.TimerHandle | None = None
        #: monotonic time the current exhaustion episode began, and accepts refused in it
        self._exhausted_since: float | None = None
        self._refused = 0
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._quiet is not None:
            self._quiet.cancel()
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        else:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    async def wait_closed(self) -> None:
        """Until the sockets accepted before :meth:`close` have their protocol (each is one
        loop turn or a TLS handshake away): a shutdown that begins right after must find them
        among the connections, or they would be dropped unanswered (``FIRST_REQUEST_GRACE``)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CONNECT_WAIT_SECONDS)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while it waited in the backlog
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._exhausted(exc)
                else:
                    logger.warning("accept() on %s failed: %s", self._where(), exc)
                return
            if self._exhausted_since is not None and self._quiet is None:
                self._quiet = self.loop.call_later(EPISODE_QUIET_SECONDS, self._recovered)
            conn.setblocking(False)
            task = self.loop.create_task(self._connect(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            # a TLS handshake that failed or timed out, a client gone already
            logger.debug("connection from an accepted socket failed: %r", exc)
            conn.close()

    def _exhausted(self, exc: OSError) -> None:
        """Out of descriptors: stop accepting for a while; one warning per episode."""
        self._refused += 1
        if self._quiet is not None:  # the episode goes on
            self._quiet.cancel()
            self._quiet = None
        if self._exhausted_since is None:
            self._exhausted_since = self._clock()
            self._refused = 1
            logger.warning(
                "out of file descriptors (%s, limit %d): not accepting connections on %s for "
                "%.1f s at a time until some close; raise the limit (ulimit -n, LimitNOFILE=, "
                "minfds=) or lower --max-connections",
                errno.errorcode.get(exc.errno or 0, exc.errno), fd_limit(), self._where(),
                ACCEPT_PAUSE_SECONDS,
            )  # fmt: skip
        self.loop.remove_reader(self.sock.fileno())
        self._paused = self.loop.call_later(ACCEPT_PAUSE_SECONDS, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self._accept()

    def _recovered(self) -> None:
        """Accepts went through for ``EPISODE_QUIET_SECONDS``: the episode is over."""
        self._quiet = None
        since, self._exhausted_since = self._exhausted_since, None
        assert since is not None
        logger.warning(
            "accepting connections again on %s (file descriptors ran out for %.1f s; %d "
            "accept(s) deferred)", self._where(),
            self._clock() - since - EPISODE_QUIET_SECONDS, self._refused,
        )  # fmt: skip

    def _where(self) -> str:
        try:
            name = self.sock.getsockname()
        except OSError:
            return "a closed socket"
        if isinstance(name, tuple):
            return f"{name[0]}:{name[1]}"
        return str(name) or "a unix socket"
