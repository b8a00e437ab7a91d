"""The broker calls of the RabbitMQ layer: names, publishing with confirms, declarations.

:class:`Broker` is what :class:`~towpath.layers.rabbitmq.core.RabbitMQChannelLayer` says to
RabbitMQ, given to the sending side (``core.py``) and to the receiving side (``receiving.py``):

* ``publish`` waits for the broker's confirm and tells the outcomes apart: confirmed, refused
  (a queue at its length limit: ``ChannelFull`` to the caller), returned (no such queue), or
  unknown (the connection broke after the frame was written: never resent, at most once);
* ``admin`` runs declarations, bindings and deletions one at a time on a channel of their own,
  shielded from the caller's cancellation (aiormq closes a channel whose call was cancelled
  half-way), so a channel error such as ``NOT_FOUND`` fails only the call that caused it;
* :class:`BrokerErrors` is the boundary: what aiormq or aio-pika raise leaves the layer's
  public calls as ``LayerConnectionError`` or ``ChannelLayerError``, never as their own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiormq.abc
from aiormq import spec
from aiormq.exceptions import (
    AMQPChannelError,
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
)

from towpath.layers.base import ChannelLayerError, LayerConnectionError, LayerStats
from towpath.layers.kernel import ExceptionMap
from towpath.layers.rabbitmq import wire
from towpath.layers.rabbitmq.link import CONNECTION_ERRORS, FAILURES, Slot
from towpath.layers.rabbitmq.state import LoopState

__all__ = ["MEMBER", "Broker", "BrokerErrors", "RabbitMQStats"]

logger = logging.getLogger("towpath.layers.rabbitmq")

#: The binding argument naming the ``!`` member a binding of an inbox stands for.
MEMBER = "towpath-member"

#: what the broker library raises, as towpath raises it to a caller: a broken or unreachable
#: connection is ``LayerConnectionError``, any other AMQP failure ``ChannelLayerError``
_ERRORS: tuple[tuple[tuple[type[BaseException], ...], type[ChannelLayerError]], ...] = (
    (CONNECTION_ERRORS, LayerConnectionError),
    ((AMQPError, ChannelInvalidStateError), ChannelLayerError),
)

_T = TypeVar("_T")

#: the layer's counters (one stats type for every layer; the name stays importable)
RabbitMQStats = LayerStats


class BrokerErrors(ExceptionMap):
    """``with layer.errors:`` around a public call: aiormq's and aio-pika's exceptions leave
    it as towpath's (see :class:`~towpath.layers.kernel.ExceptionMap`)."""

    def __init__(self, label: str) -> None:
        super().__init__(_ERRORS, f"RabbitMQ {label}")


class Broker:
    """The calls to RabbitMQ of one layer instance, and the names of its queues.

    ``capacity_of`` gives a normal channel's capacity (its queue's length limit)."""

    def __init__(
        self,
        *,
        prefix: str,
        label: str,
        capacity_of: Callable[[str], int],
        inbox_capacity: int,
        expiry: float,
        queue_expiry: float,
    ) -> None:
        self.prefix = prefix
        self.label = label
        self.capacity_of = capacity_of
        self.inbox_capacity = inbox_capacity
        self.queue_expiry = queue_expiry
        #: every message's ``expiration`` property: ``expiry`` in milliseconds
        self.expiration = str(max(1, int(expiry * 1000)))
        #: the direct exchange whose routing keys are the groups
        self.groups = f"{prefix}:groups"
        self._queues: dict[str, str] = {}
        self._inboxes: dict[str, str] = {}
        self._message_ids = itertools.count(1)

    # -- names ---------------------------------------------------------------------------------

    def queue_of(self, channel: str) -> str:
        """The queue of a normal channel."""
        queue = self._queues.get(channel)
        if queue is None:
            if len(self._queues) >= 65536:
                self._queues.clear()
            queue = self._queues[channel] = f"{self.prefix}:{channel}"
        return queue

    def inbox_of(self, channel: str) -> str:
        """The inbox queue of a ``!`` channel: that of the process named in it."""
        inbox = self._inboxes.get(channel)
        if inbox is None:
            if len(self._inboxes) >= 65536:
                self._inboxes.clear()
            inbox = self._inboxes[channel] = self.inbox_of_segment(wire.inbox_segment(channel))
        return inbox

    def inbox_of_segment(self, segment: str) -> str:
        return f"{self.prefix}@{segment}"

    def queue_arguments(self, channel: str) -> dict[str, Any]:
        return {
            "x-max-length": self.capacity_of(channel),
            "x-overflow": "reject-publish",
            "x-expires": max(1, int(self.queue_expiry * 1000)),
        }

    def inbox_arguments(self) -> dict[str, Any]:
        return {
            "x-max-length": self.inbox_capacity,
            "x-overflow": "reject-publish",
            # Removed by auto-delete when its consumer goes; this is for one never consumed.
            "x-expires": max(1, int(self.queue_expiry * 1000)),
        }

    # -- broker calls --------------------------------------------------------------------------

    async def publish(
        self,
        slot: Slot,
        exchange: str,
        routing_key: str,
        payload: bytes,
        *,
        mandatory: bool,
        expiration: str | None,
    ) -> None:
        """Publish and wait for the broker's confirm.

        Raises aiormq's ``PublishError`` (unroutable, with ``mandatory``), ``DeliveryError``
        (refused: a queue at its length limit), ``AMQPChannelError`` (e.g. a missing exchange;
        nothing was routed) or ``LayerConnectionError`` (unreachable, or the connection broke
        before the confirm: the message may or may not be on the broker, so it is not resent).
        """
        properties = spec.Basic.Properties(
            delivery_mode=1, expiration=expiration, message_id=str(next(self._message_ids))
        )
        for _ in range(5):
            channel = slot.ready()
            if channel is None:
                channel = await slot.get()
            try:
                await channel.basic_publish(
                    payload,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=mandatory,
                )
                return
            except (DeliveryError, AMQPChannelError):
                raise
            except ChannelInvalidStateError:
                continue  # closed before anything was written: on a new channel
            except FAILURES as exc:
                raise LayerConnectionError(
                    f"RabbitMQ {slot.link.label}: the connection broke before the broker "
                    f"confirmed a message to {routing_key!r}; it may or may not have been "
                    f"delivered ({type(exc).__name__}: {exc})"
                ) from exc
        raise LayerConnectionError(f"RabbitMQ {slot.link.label}: no usable channel to publish on")

    async def admin(
        self, state: LoopState, call: Callable[[aiormq.abc.AbstractChannel], Awaitable[_T]]
    ) -> _T:
        """Run one declaration/binding/deletion on the admin channel, one at a time.

        Shielded from the caller's cancellation: aiormq closes a channel whose call was
        cancelled half-way. AMQP errors caused by the call (``NOT_FOUND``...) are raised as
        they are (the channel closes; the next call opens another)."""
        task = asyncio.get_running_loop().create_task(self._admin(state, call))
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _admin(
        self, state: LoopState, call: Callable[[aiormq.abc.AbstractChannel], Awaitable[_T]]
    ) -> _T:
        async with state.admin_lock:
            for _ in range(5):
                channel = await state.admin.get()
                try:
                    return await call(channel)
                except AMQPChannelError:
                    raise
                except ChannelInvalidStateError:
                    continue
                except FAILURES as exc:
                    raise LayerConnectionError(
                        f"RabbitMQ {self.label}: {type(exc).__name__}: {exc}"
                    ) from exc
        raise LayerConnectionError(f"RabbitMQ {self.label}: no usable channel")

    async def declare(self, state: LoopState, channel: str) -> str:
        """Make sure the queue of normal ``channel`` exists (declared once per process, renewed
        every ``queue_expiry / 2``); returns its name."""
        queue = self.queue_of(channel)
        when = state.declared.get(queue)
        now = asyncio.get_running_loop().time()
        if when is not None and now - when < self.queue_expiry / 2:
            return queue
        task = state.declaring.get(queue)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._declare(state, channel, queue))
            state.declaring[queue] = task
            task.add_done_callback(lambda _: state.declaring.pop(queue, None))
            task.add_done_callback(_retrieve)
        await asyncio.shield(task)
        return queue

    async def _declare(self, state: LoopState, channel: str, queue: str) -> int:
        """Declare the queue now; returns how many messages it holds."""
        arguments = self.queue_arguments(channel)
        try:
            ok = await self.admin(
                state, lambda ch: ch.queue_declare(queue, durable=True, arguments=arguments)
            )
        except ChannelPreconditionFailed as exc:
            logger.warning(
                "RabbitMQ queue %r exists with other arguments than %r (%s); using it as it is. "
                "Give capacity, channel_capacity and queue_expiry the same values in every "
                "process",
                queue,
                arguments,
                exc,
            )
            ok = await self.admin(state, lambda ch: ch.queue_declare(queue, passive=True))
        state.declared[queue] = asyncio.get_running_loop().time()
        return ok.message_count or 0

    async def declare_now(self, state: LoopState, channel: str) -> int:
        """Declare the queue of ``channel`` whether or not it was; returns its length."""
        return await self._declare(state, channel, self.queue_of(channel))

    async def ensure_exchange(self, state: LoopState) -> None:
        link = state.links[0]
        if state.groups_epoch and state.groups_epoch == link.epoch:
            return
        await self.admin(
            state,
            lambda ch: ch.exchange_declare(self.groups, exchange_type="direct", durable=True),
        )
        state.groups_epoch = link.epoch

    async def bind(
        self, state: LoopState, queue: str, group: str, member: str | None, *, unbind: bool = False
    ) -> bool:
        """Bind (or unbind) ``queue`` to the groups exchange for ``group``; ``member`` names
        the ``!`` member a binding to an inbox stands for. False when the queue is gone."""
        arguments: dict[str, Any] | None = {MEMBER: member} if member is not None else None
        for attempt in range(2):
            await self.ensure_exchange(state)
            try:
                if unbind:
                    await self.admin(
                        state,
                        lambda ch: ch.queue_unbind(
                            queue, self.groups, routing_key=group, arguments=arguments
                        ),
                    )
                else:
                    await self.admin(
                        state,
                        lambda ch: ch.queue_bind(
                            queue, self.groups, routing_key=group, arguments=arguments
                        ),
                    )
                return True
            except ChannelNotFoundEntity as exc:
                if "exchange" in str(exc) and attempt == 0:
                    state.groups_epoch = 0  # deleted by a flush elsewhere: declare it again
                    continue
                return False
        return False


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
