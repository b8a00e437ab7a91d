"""One Redis server as ``RedisPubSubChannelLayer`` sees it from one event loop.

Two connections:

* PUBLISHes go through a :class:`~towpath.layers.redis.connection.Shard`, like every command of
  the queue layer: those of one event-loop tick leave in one write, with its reconnect back-off,
  ``command_timeout`` and at-most-once rule. Its ``before_write`` hook holds a batch until the
  SUBSCRIBEs this process has issued for the batch's channels are confirmed: the two travel on
  different connections, and without that a ``send`` right after a ``receive`` started on the
  same channel could reach Redis first and be lost.
* a *subscription* connection with one reader task that blocks on it indefinitely (no socket
  timeout, so an idle subscription never times out), sends a PING every ``ping_interval``
  seconds to notice a half-open connection, and reconnects with exponential back-off and jitter
  when the connection is lost, subscribing every wanted channel and group again.

The shard knows Redis channel names (bytes) only; what they mean is the layer's business, told
through the ``on_message``, ``on_lost`` and ``on_restored`` callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from towpath.compat import redis_abort
from towpath.layers._readers import ReaderGuard
from towpath.layers.backoff import Backoff
from towpath.layers.base import LayerConnectionError
from towpath.layers.kernel import reconnect_backoff
from towpath.layers.redis.connection import Shard, dial, discard

__all__ = ["CLOSE_GRACE", "PubSubShard"]

logger = logging.getLogger("towpath.layers.redis.pubsub")

_SUBSCRIBE = b"SUBSCRIBE"
_UNSUBSCRIBE = b"UNSUBSCRIBE"
_PING = b"PING"
#: the payload of a barrier PING (see ``PubSubShard.barrier``), followed by a counter
_BARRIER = b"towpath-barrier:"
_MAX_NAMES_PER_COMMAND = 1000
#: How long closing waits for a task to finish before it cancels it (or gives up on it).
CLOSE_GRACE = 1.0


class PubSubShard:
    """PUBLISH through a pipelining ``Shard``; SUBSCRIBE/UNSUBSCRIBE/PING on a subscription
    connection kept by one reader task."""

    def __init__(
        self,
        commands: Shard,
        *,
        guard: ReaderGuard,
        ping_interval: float | None,
        on_message: Callable[[bytes, bytes], None],
        on_lost: Callable[[], None],
        on_restored: Callable[[], None],
    ) -> None:
        #: PUBLISH goes through it; its pool makes the subscription connections too
        self.commands = commands
        commands.before_write = self._before_publish
        self.pool: ConnectionPool = commands.pool
        self.label = commands.label
        self.retry_timeout = commands.retry_timeout
        self.ping_interval = ping_interval
        #: logs and restarts a reader task that died of an unexpected exception
        self.guard = guard
        self.on_message = on_message
        self.on_lost = on_lost
        self.on_restored = on_restored
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: Redis channels to be subscribed (now, and after every reconnect)
        self.wanted: set[bytes] = set()
        #: those whose subscription Redis has confirmed on the current connection
        self.active: set[bytes] = set()
        self._inflight: dict[bytes, int] = {}
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._outgoing: list[tuple[bytes, bytes | None]] = []
        self._writer: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reading = False
        self._awaiting_marker = False
        self._reconnected = False
        self._delays: Backoff | None = None
        self._pings_out = 0
        self._keepalive: asyncio.TimerHandle | None = None
        #: barrier PINGs in flight, by payload
        self._barriers: dict[bytes, asyncio.Future[None]] = {}
        self._barrier_count = 0

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, key: bytes, data: bytes) -> asyncio.Future[int]:
        """Queue a PUBLISH; the future resolves with the number of subscribers reached."""
        return self.commands.submit(b"PUBLISH", key, data)

    def _before_publish(self, commands: Sequence[Any]) -> Awaitable[None] | None:
        """The ``Shard`` hook: a batch waits (at most ``retry_timeout``, then it is written
        anyway) for this process's pending subscriptions to the channels it publishes to."""
        for command in commands:
            if self.confirmation(command[1]) is not None:
                return self._settled({other[1] for other in commands})
        return None

    async def _settled(self, keys: Iterable[bytes]) -> None:
        """Wait, at most ``retry_timeout``, until no subscription to ``keys`` is pending."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_timeout
        while True:
            pending = {future for key in keys if (future := self.confirmation(key)) is not None}
            left = deadline - loop.time()
            if not pending or left <= 0:
                return
            await asyncio.wait(pending, timeout=left)

    # -- subscribing ---------------------------------------------------------------------------

    def subscribe(self, key: bytes) -> None:
        """Want ``key`` subscribed (now, and after every reconnect)."""
        if key in self.wanted or self.closed:
            return
        self.wanted.add(key)
        self._queue(_SUBSCRIBE, key)
        if self._reader is None or self._reader.done():
            self._start_reader()

    def _start_reader(self) -> None:
        reader = self._reader = self._spawn(
            self._read_loop(), f"towpath-pubsub-reader-{self.label}"
        )
        self.guard.supervise(
            reader, f"Redis {self.label} subscription reader", lambda: self._restart(reader)
        )

    def _restart(self, dead: asyncio.Task[None]) -> bool:
        """The reader ``dead`` died of a bug: a new one connects and subscribes everything
        wanted again (what was published meanwhile is lost, as in an outage)."""
        if self.closed or self._reader is not dead or not self.wanted:
            return False
        connection = self._connection
        if connection is not None:  # it died between connecting and reading
            self._disconnected()
            redis_abort(connection)
            self._spawn(discard(connection), f"towpath-pubsub-discard-{self.label}")
        self._start_reader()
        return True

    def unsubscribe(self, key: bytes) -> None:
        if key not in self.wanted:
            return
        self.wanted.discard(key)
        self.active.discard(key)
        _resolve(self._confirmations.pop(key, None))
        self._queue(_UNSUBSCRIBE, key)

    def unsubscribe_all(self) -> None:
        for key in list(self.wanted):
            self.unsubscribe(key)

    def confirmation(self, key: bytes) -> asyncio.Future[None] | None:
        """A future resolved once the subscription to ``key`` is in effect; ``None`` when it is
        already, or when ``key`` is not wanted."""
        if key in self.active or key not in self.wanted:
            return None
        future = self._confirmations.get(key)
        if future is None:
            future = self._confirmations[key] = asyncio.get_running_loop().create_future()
        return future

    async def subscribed(self, key: bytes) -> None:
        """Wait until the subscription to ``key`` is in effect in Redis; raise
        ``LayerConnectionError`` when it is not within ``retry_timeout``."""
        await self._settled((key,))
        if self.confirmation(key) is not None:
            raise LayerConnectionError(
                f"Redis {self.label}: could not subscribe to {key.decode(errors='replace')!r} "
                f"within {self.retry_timeout:g} s"
            )

    async def barrier(self) -> None:
        """Wait (at most ``retry_timeout``) until everything Redis sent on the subscription
        connection before now has been read and dispatched: a PING with a unique payload goes
        after the commands queued so far, and its answer comes after every message published
        before it (``flush`` uses this, so that no message already on its way is delivered
        after it)."""
        if self._connection is None or self.closed:
            return
        self._barrier_count += 1
        token = _BARRIER + str(self._barrier_count).encode()
        future = self._barriers[token] = asyncio.get_running_loop().create_future()
        self._queue(_PING, token, confirmed=False)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.retry_timeout)
        except TimeoutError:
            logger.debug("Redis %s: no answer to a barrier PING", self.label)
        finally:
            self._barriers.pop(token, None)

    def _queue(self, command: bytes, key: bytes | None, *, confirmed: bool = True) -> None:
        """Queue a command for the subscription connection; dropped when there is none (the
        next connection subscribes everything wanted). ``confirmed``: ``key`` is a channel
        whose (un)subscribe reply is counted."""
        if self._connection is None:
            return
        self._outgoing.append((command, key))
        if key is not None and confirmed:
            self._inflight[key] = self._inflight.get(key, 0) + 1
        if self._writer is None:
            self._writer = self._spawn(self._write(), f"towpath-pubsub-writer-{self.label}")

    async def _write(self) -> None:
        try:
            while self._outgoing:
                batch, self._outgoing = self._outgoing, []
                connection = self._connection
                if connection is None or not connection.is_connected:
                    return
                try:
                    await connection.send_packed_command(
                        connection.pack_commands(_merge(batch)), check_health=False
                    )
                except Exception as exc:
                    # The reader notices the broken connection and reconnects.
                    logger.debug("Redis %s: subscription write failed: %s", self.label, exc)
                    redis_abort(connection)
                    return
        finally:
            self._writer = None

    async def _read_loop(self) -> None:
        """Keep a subscription connection: connect, subscribe everything wanted, dispatch what
        arrives; on a loss, back off (exponentially, with jitter) and do it again."""
        lost = False
        while not self.closed:
            if lost or self._delays is not None:
                self._delays = self._delays or reconnect_backoff()
                await asyncio.sleep(self._delays.pause())
                if self.closed:
                    return
            try:
                connection = await dial(self.pool)
            except Exception as exc:
                if not self.closed:
                    self._delays = self._delays or reconnect_backoff()
                    self.commands.outage.failed(exc, "subscribe")
                continue
            self.commands.outage.recovered()
            self._connected(connection, reconnected=lost)
            lost = False
            try:
                self._reading = True
                while True:
                    try:
                        reply = await connection.read_response(timeout=math.inf)
                    except ResponseError as exc:
                        logger.error("Redis %s: subscription error: %s", self.label, exc)
                        continue
                    self._pings_out = 0
                    self._handle(reply)
            except Exception as exc:
                if not self.closed:
                    self.commands.outage.failed(exc, "subscription connection lost")
                    lost = True
            finally:
                self._reading = False
                self._disconnected()
                await asyncio.shield(discard(connection))
            if lost:
                self.on_lost()

    def _connected(self, connection: AbstractConnection, *, reconnected: bool) -> None:
        self._connection = connection
        self.active.clear()
        self._inflight.clear()
        self._outgoing.clear()
        for key in self.wanted:
            self._queue(_SUBSCRIBE, key)
        # The PONG to this PING says every SUBSCRIBE before it is in effect.
        self._queue(_PING, None)
        self._awaiting_marker = True
        self._reconnected = reconnected
        self._pings_out = 0
        self._schedule_keepalive()

    def _disconnected(self) -> None:
        self._connection = None
        for future in self._barriers.values():  # nothing more will arrive on that connection
            _resolve(future)
        self.active.clear()
        self._inflight.clear()
        self._outgoing.clear()
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def _handle(self, reply: Any) -> None:
        if self._barriers:
            # a barrier PING's answer: [b"pong", payload] when subscribed, else the payload
            payload = reply[1] if isinstance(reply, list) and reply[0] == b"pong" else reply
            if isinstance(payload, bytes) and payload in self._barriers:
                _resolve(self._barriers.pop(payload))
                return
        # Outside subscribe mode (nothing subscribed) a PING is answered with a plain PONG.
        kind = reply[0] if isinstance(reply, list) else b"pong" if reply == b"PONG" else None
        if kind == b"message":
            self.on_message(reply[1], reply[2])
        elif kind in (b"subscribe", b"unsubscribe"):
            key = reply[1]
            remaining = self._inflight.get(key, 0) - 1
            if remaining > 0:
                self._inflight[key] = remaining
                return
            self._inflight.pop(key, None)
            if key in self.wanted:
                self.active.add(key)
                _resolve(self._confirmations.pop(key, None))
        elif kind == b"pong" and self._awaiting_marker:
            self._awaiting_marker = False
            self._delays = None  # a healthy connection: the next loss retries at once
            if self._reconnected:
                self._reconnected = False
                logger.info("Redis %s: subscriptions restored", self.label)
                self.on_restored()

    def _schedule_keepalive(self) -> None:
        if self.ping_interval is not None:
            loop = asyncio.get_running_loop()
            self._keepalive = loop.call_later(self.ping_interval, self._keepalive_tick)

    def _keepalive_tick(self) -> None:
        """PING an idle subscription; two PINGs without any reply mean the connection is dead
        (a half-open TCP connection never errors by itself): break it so the reader reconnects."""
        self._keepalive = None
        connection = self._connection
        if connection is None:
            return
        if self._pings_out >= 2:
            logger.warning("Redis %s: subscription connection does not answer", self.label)
            redis_abort(connection)
            return
        self._pings_out += 1
        self._queue(_PING, None)
        self._schedule_keepalive()

    # -- closing -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Unsubscribe, stop the reader, then close both connections and the pool."""
        self.closed = True
        if self._connection is not None and self.wanted:
            # Leave politely; the connection closes right after anyway.
            self.unsubscribe_all()
        self.wanted.clear()
        for future in self._confirmations.values():
            _resolve(future)
        self._confirmations.clear()
        reader = self._reader
        if reader is not None and not reader.done():
            if self._reading and self._connection is not None:
                # Wait for the UNSUBSCRIBEs to be written, then break the read from outside
                # rather than cancelling deep inside redis-py.
                if self._writer is not None:
                    await asyncio.wait([self._writer], timeout=CLOSE_GRACE)
                redis_abort(self._connection)
            else:
                reader.cancel()
            await asyncio.wait([reader], timeout=CLOSE_GRACE)
            if not reader.done():
                reader.cancel()
                await asyncio.wait([reader], timeout=CLOSE_GRACE)
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_GRACE)
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self._connection is not None:
            await discard(self._connection)
            self._connection = None
        await self.commands.close()  # its connection, then the pool and any Sentinel clients


def _merge(batch: list[tuple[bytes, bytes | None]]) -> list[list[bytes]]:
    """Consecutive (UN)SUBSCRIBEs become one command each (in order, so per-name order holds)."""
    commands: list[list[bytes]] = []
    for command, key in batch:
        if key is None:
            commands.append([command])
        elif command == _PING:  # a barrier: PING takes one payload
            commands.append([command, key])
        elif (
            commands and commands[-1][0] == command and len(commands[-1]) <= _MAX_NAMES_PER_COMMAND
        ):
            commands[-1].append(key)
        else:
            commands.append([command, key])
    return commands


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
