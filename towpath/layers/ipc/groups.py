"""Group memberships in SQLite, and the store's lock that makes each group operation atomic.

Memberships live in ``groups.sqlite3`` in the store directory (WAL journal, ``synchronous=OFF``:
on a tmpfs there is no disk to sync, and a killed process loses nothing the next writer does
not roll back). Every group operation runs under one exclusive ``flock`` on the store's
``lock`` file, so SQLite never meets a concurrent writer and its sleep-and-retry busy handler
never runs; the kernel drops the lock with a killed holder, and SQLite rolls back the
transaction that holder left unfinished the next time anyone opens it.

``group_send`` holds the same lock while it reads the members and appends the message to each
member's queue: group messages are totally ordered, every member sees them in the same order,
and a ``group_add`` that returned before a ``group_send`` began is seen by it. Its retry for a
member it found full checks the membership and appends under the lock too, so a member
discarded meanwhile is never sent to.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator

from towpath.layers.ipc.locks import lock, unlock
from towpath.layers.ipc.queues import StoreFull

__all__ = ["GroupStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    grp TEXT NOT NULL,
    channel TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (grp, channel)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_expiry ON members (expires_at);
"""


class GroupStore:
    """The memberships of one store directory, and its lock."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "groups.sqlite3")
        self.lock_fd = os.open(
            os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        self._db: sqlite3.Connection | None = None
        self._next_purge = 0.0

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (group operations, sweeps)."""
        lock(self.lock_fd, "groups.locked")
        try:
            yield
        finally:
            unlock(self.lock_fd)

    def _connection(self) -> sqlite3.Connection:
        """The connection, opened (and the schema made) on first use, under the lock."""
        db = self._db
        if db is None:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")
                db.executescript(_SCHEMA)
            except BaseException:
                db.close()
                raise
            self._db = db
        return db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise StoreFull(
                    f"the IPC group store {self.path} is full ({exc}): free space on its file "
                    "system; the group was not changed"
                ) from exc
            raise

    # -- under locked() ------------------------------------------------------------------------

    def add(self, group: str, channel: str, expires_at: float, now: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO members (grp, channel, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (grp, channel) DO UPDATE SET expires_at = excluded.expires_at",
                (group, channel, expires_at),
            )
            if now >= self._next_purge:  # stale memberships of every group, now and then
                self._next_purge = now + 60.0
                db.execute("DELETE FROM members WHERE expires_at <= ?", (now,))

    def discard(self, group: str, channel: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM members WHERE grp = ? AND channel = ?", (group, channel))

    def members(self, group: str, now: float) -> list[str]:
        rows = self._connection().execute(
            "SELECT channel FROM members WHERE grp = ? AND expires_at > ?", (group, now)
        )
        return [row[0] for row in rows]

    def is_member(self, group: str, channel: str, now: float) -> bool:
        row = self._connection().execute(
            "SELECT 1 FROM members WHERE grp = ? AND channel = ? AND expires_at > ?",
            (group, channel, now),
        )
        return row.fetchone() is not None

    def clear(self) -> None:
        with self._write() as db:
            db.execute("DELETE FROM members")

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def abandon(self) -> object:
        """After a fork, in the child: drop the parent's descriptors without touching locks or
        the database. Returns the connection so the caller can keep it from being closed."""
        db, self._db = self._db, None
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1
        return db
