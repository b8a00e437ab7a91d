"""The Redis layer's state per event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from towpath.layers._mailbox import Mailbox
from towpath.layers.kernel import OutageLog
from towpath.layers.redis.connection import BlockingReader, Shard

__all__ = ["Fetcher", "LoopState", "log_failure", "outage_logs"]

logger = logging.getLogger("towpath.layers.redis")


@dataclass(eq=False)
class Fetcher:
    """A task fetching the normal channels ``channels`` from one shard while receivers wait."""

    task: asyncio.Task[None]
    #: extra messages it may take; 0 when the receivers also wait on other shards, since
    #: messages prefetched from one shard would be served before another shard's arrive
    prefetch: int
    wanted: asyncio.Event = field(default_factory=asyncio.Event)
    #: its blocking connection, once made
    reader: BlockingReader | None = None
    #: ``stop_receiving`` was called: fetch nothing more
    stopping: bool = False


@dataclass(eq=False)
class LoopState:
    """Everything bound to one event loop: connections, readers and the local mailbox."""

    shards: list[Shard]
    mailbox: Mailbox[bytes]
    #: what ``new_channel()`` puts between the client id and the ``!`` in this loop: "" in the
    #: first event loop of the instance, ``-<n>`` in later ones, so that each event loop has
    #: inboxes of its own and two loops receiving at once never take each other's messages
    tag: str
    readers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    fetchers: dict[tuple[int, tuple[str, ...]], Fetcher] = field(default_factory=dict)
    # Messages of ``!`` channels taken (or dropped unread) here since the last RELEASE: their
    # backlog in Redis is lowered by that much at the end of the tick, or before the next send.
    released: dict[str, int] = field(default_factory=dict)
    release_scheduled: bool = False
    blocking: set[BlockingReader] = field(default_factory=set)
    # The readers' and fetchers' POPs in flight, with their shard and task: one not written yet
    # (its server unreachable) is withdrawn when they must stop, so they stop at once.
    pops: dict[asyncio.Future[Any], tuple[Shard, asyncio.Task[Any] | None]] = field(
        default_factory=dict
    )
    # Readers and fetchers pausing after a failure: nothing of theirs is in flight.
    backing_off: set[asyncio.Task[Any] | None] = field(default_factory=set)
    next_sweep: float = 0.0
    #: flush() calls in progress: what readers fetch meanwhile was in Redis when it began
    flushing: int = 0
    closing: bool = False


def outage_logs(states: Iterable[LoopState]) -> list[OutageLog]:
    """The outage logs of every shard of ``states`` (the layer's reachability)."""
    return [shard.outage for state in list(states) for shard in state.shards]


def log_failure(future: asyncio.Future[Any]) -> None:
    """A done-callback for a command nobody awaits (a count update): log its failure."""
    if not future.cancelled() and future.exception() is not None:
        logger.warning("Redis count update failed: %s", future.exception())
