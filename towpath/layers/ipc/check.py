"""Looking inside a store: is every file sound, and what does it hold.

``check_store(directory)`` is what the crash tests assert on after killing processes in a
loop: every queue file parses from head to tail with the count its metadata states, and
SQLite's ``PRAGMA integrity_check`` says ``ok``. ``python -m towpath.layers.ipc`` prints the
same, with what each queue holds.
"""

from __future__ import annotations

import os
import sqlite3
import time

from towpath.layers.ipc.format import (
    FLAG_DEAD,
    FLAG_SLEEPING,
    HEADER_SIZE,
    INBOX,
    KIND,
    MAGIC,
    NORMAL,
    PROBE,
    RECORD,
    SLOT,
    WAITER_SLOTS,
    WAITERS_AT,
    pick_meta,
    slot_token,
)
from towpath.layers.ipc.locks import lock, owner_alive, unlock

__all__ = ["check_store", "describe", "describe_store", "verify"]


def _inspect(fd: int, path: str) -> tuple[dict[str, object], list[str]]:
    problems: list[str] = []
    probe = os.pread(fd, PROBE, 0)
    info: dict[str, object] = {"file": os.path.basename(path)}
    if probe[:8] != MAGIC:
        info["state"] = "uninitialised"  # its creator died before finishing: harmless
        return info, problems
    (kind,) = KIND.unpack_from(probe, 8)
    meta = pick_meta(probe)
    info["kind"] = {NORMAL: "channel", INBOX: "inbox"}.get(kind, f"unknown {kind}")
    if kind not in (NORMAL, INBOX):
        problems.append(f"{path}: unknown kind {kind}")
    if meta is None:
        problems.append(f"{path}: no valid metadata slot")
        return info, problems
    size = os.fstat(fd).st_size
    info.update(messages=meta.count, bytes=meta.tail - meta.head)
    if kind == INBOX:
        info.update(dead=bool(meta.flags & FLAG_DEAD), sleeping=bool(meta.flags & FLAG_SLEEPING))
    if not HEADER_SIZE <= meta.head <= meta.tail <= size:
        problems.append(f"{path}: head {meta.head} / tail {meta.tail} / size {size} disagree")
        return info, problems
    buf = os.pread(fd, meta.tail - meta.head, meta.head)
    off = count = 0
    while off < len(buf):
        if off + RECORD.size > len(buf):
            problems.append(f"{path}: a record header is cut at byte {meta.head + off}")
            break
        length, names, _ = RECORD.unpack_from(buf, off)
        if off + RECORD.size + names + length > len(buf):
            problems.append(f"{path}: a record overruns the tail at byte {meta.head + off}")
            break
        if kind == INBOX and not names:
            problems.append(f"{path}: an inbox record names no channel")
        off += RECORD.size + names + length
        count += 1
    if count != meta.count:
        problems.append(f"{path}: {count} records, metadata says {meta.count}")
    if kind == NORMAL:
        raw = os.pread(fd, WAITER_SLOTS * SLOT, WAITERS_AT)
        live = [i for i in range(WAITER_SLOTS) if slot_token(raw[i * SLOT : (i + 1) * SLOT])]
        info["waiters"] = len(live)
        if live and live[-1] >= meta.hw:
            problems.append(f"{path}: waiter slot {live[-1]} beyond the high-water mark")
    else:
        info["owner_alive"] = owner_alive(fd)
    return info, problems


def _open_locked(path: str) -> tuple[dict[str, object], list[str]] | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        lock(fd, "queue.inspect")
        try:
            return _inspect(fd, path)
        finally:
            unlock(fd)
    finally:
        os.close(fd)


def verify(path: str) -> list[str]:
    """Check one queue file under its lock; returns the problems found (none: it is sound)."""
    found = _open_locked(path)
    return [] if found is None else found[1]


def describe(path: str) -> dict[str, object] | None:
    """What one queue file holds, and its problems if any."""
    found = _open_locked(path)
    if found is None:
        return None
    info, problems = found
    if problems:
        info["problems"] = problems
    return info


def _queue_files(directory: str) -> list[str]:
    with os.scandir(directory) as entries:
        names = sorted(entry.name for entry in entries if entry.name[:2] in ("q-", "i-"))
    return [os.path.join(directory, name) for name in names]


def _groups_database(directory: str) -> sqlite3.Connection | None:
    path = os.path.join(directory, "groups.sqlite3")
    if not os.path.exists(path):
        return None
    return sqlite3.connect(path, isolation_level=None, timeout=30.0)


def check_store(directory: str) -> list[str]:
    """Every problem in a store directory: malformed queue files, and what SQLite's
    ``PRAGMA integrity_check`` reports. Empty when the store is sound."""
    problems: list[str] = []
    for path in _queue_files(directory):
        problems += verify(path)
    db = _groups_database(directory)
    if db is not None:
        try:
            rows = db.execute("PRAGMA integrity_check").fetchall()
        finally:
            db.close()
        verdict = "; ".join(str(row[0]) for row in rows)
        if verdict != "ok":
            problems.append(f"groups.sqlite3: {verdict}")
    return problems


def describe_store(directory: str) -> dict[str, object]:
    """What a store holds: its queue files and its groups (with live member counts)."""
    queues = [info for path in _queue_files(directory) if (info := describe(path)) is not None]
    groups: dict[str, int] = {}
    db = _groups_database(directory)
    if db is not None:
        try:
            rows = db.execute(
                "SELECT grp, count(*) FROM members WHERE expires_at > ? GROUP BY grp ORDER BY grp",
                (time.time(),),
            ).fetchall()
            groups = {str(group): int(count) for group, count in rows}
        except sqlite3.OperationalError:
            pass  # no table yet
        finally:
            db.close()
    return {"store": directory, "queues": queues, "groups": groups}
