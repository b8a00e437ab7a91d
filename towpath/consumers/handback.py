"""A consumer's part in a handback: the *cut* between a WebSocket's old and new consumer.

When a worker stops gracefully it hands its WebSockets back and another worker resumes each of
them (``docs/affinity.md``). For a while both consumers are in the connection's groups, so
both receive its group messages: the old one since before the handback, the new one since it
re-joined them in ``websocket_connect``. The new consumer then sends one *cut* message,
``towpath.cut``, to a two-member group of its own making (the old consumer's channel and its
own): a layer delivers a ``group_send`` to every member in one step (single Redis, in-memory),
so the cut falls at the same place in the stream of group messages both channels receive.

- The old consumer handles every group message before the cut and drops the ones after it;
  once its host has given it the client's last frame (``websocket.disconnect``, 1012, with
  ``handed_back``) and the cut has come, it leaves its groups and ends.
- The new consumer drops every message before the cut (the old one handled those) and handles
  the ones after it.

So each group message is handled exactly once, by one of the two, and the interface server
writes the old consumer's output before the new one's. If the cut does not come within the
host's ``timeout`` (the layer dropped it: a full channel), each side goes on alone and says so
in the log. The consumer takes part only when its host offers the ``towpath.handback`` scope
extension (a ``towpath runworker``); under any other server nothing here runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from towpath.layers.base import BaseChannelLayer
from towpath.wire import CUT_EVENT, HANDBACK_EXTENSION

__all__ = ["Handback"]

logger = logging.getLogger("towpath.consumers")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]


class Handback:
    """One consumer instance's side of the cut (old, new, or both over its life)."""

    __slots__ = (
        "abandoned",
        "catch_up_until",
        "channel",
        "cut_id",
        "cut_seen",
        "dropped",
        "layer",
        "lost_from",
        "resumed_from",
        "timeout",
    )

    def __init__(self, extension: dict[str, Any], layer: BaseChannelLayer, channel: str) -> None:
        extension["channel"] = channel  # the host names it in its handback
        self.layer = layer
        self.channel = channel
        resumed_from = extension.get("resumed_from")
        self.resumed_from = resumed_from if isinstance(resumed_from, str) else None
        lost_from = extension.get("lost_from")
        #: the consumer channel of a predecessor whose worker was lost (no cut: it is dead)
        self.lost_from = lost_from if isinstance(lost_from, str) else None
        timeout = extension.get("timeout")
        self.timeout = float(timeout) if isinstance(timeout, int | float) and timeout > 0 else 10.0
        abandoned = extension.get("abandoned")
        #: set by the host when the connection's server is gone: no successor will cut over
        self.abandoned = abandoned if isinstance(abandoned, asyncio.Event) else None
        #: the new side: the cut this instance sent and still waits for (None: caught up)
        self.cut_id: str | None = None
        self.catch_up_until = 0.0
        #: the old side: the successor's cut arrived; later group messages are its
        self.cut_seen = asyncio.Event()
        #: channel messages not handled here because the other consumer handled them
        self.dropped = 0

    @classmethod
    def offered(
        cls, scope: Any, layer: BaseChannelLayer | None, channel: str | None
    ) -> Handback | None:
        """The handback of a consumer whose host offers the extension, else None."""
        extensions = scope.get("extensions") if layer is not None and channel else None
        extension = extensions.get(HANDBACK_EXTENSION) if isinstance(extensions, dict) else None
        if not isinstance(extension, dict) or layer is None or channel is None:
            return None
        return cls(extension, layer, channel)

    async def cut_over(self) -> None:
        """A resumed connection, its groups joined: send the cut to the predecessor and to
        this instance in one ``group_send``, then drop the group."""
        old = self.resumed_from
        if old is None:
            return
        layer = self.layer
        group = f"towpath.cut.{secrets.token_hex(12)}"
        self.cut_id = group
        self.catch_up_until = asyncio.get_running_loop().time() + self.timeout
        try:
            await asyncio.gather(layer.group_add(group, old), layer.group_add(group, self.channel))
            await layer.group_send(group, {"type": CUT_EVENT, "cut": group})
        except Exception as exc:  # its predecessor gives up waiting after its timeout
            logger.warning("Could not send the handback cut from %s: %r", self.channel, exc)
            self.cut_id = None
        finally:
            with contextlib.suppress(Exception):
                await asyncio.gather(
                    layer.group_discard(group, old), layer.group_discard(group, self.channel)
                )

    async def take_place(self, groups: Any) -> None:
        """A connection resumed after its worker was lost: its groups joined, drop the dead
        predecessor's memberships of the same ``groups`` (they would stay for
        ``group_expiry``, each one a message sent to nobody per ``group_send``)."""
        old = self.lost_from
        if old is None or not groups or not isinstance(groups, list | tuple | set):
            return
        try:
            await asyncio.gather(*(self.layer.group_discard(group, old) for group in groups))
        except Exception as exc:  # they expire with group_expiry
            logger.warning("Could not take %s's place in its groups: %r", old, exc)

    def channel_source(self, receive: Receive) -> Receive:
        """``receive`` of the consumer's channel, without the messages the other side of a
        cut handles (and without the cut itself)."""
        loop = asyncio.get_running_loop()

        async def source() -> Message:
            while True:
                message = await receive()
                if message.get("type") == CUT_EVENT:
                    if self.cut_id is not None and message.get("cut") == self.cut_id:
                        self.cut_id = None  # caught up: from here on the messages are ours
                    else:
                        self.cut_seen.set()  # the successor's: the rest are its
                    continue
                if self.cut_seen.is_set():
                    self.dropped += 1
                    continue
                if self.cut_id is not None:
                    if loop.time() < self.catch_up_until:
                        self.dropped += 1  # the predecessor handled it
                        continue
                    logger.warning(
                        "%s: the handback cut did not come within %.3g s; handling every "
                        "message from now on",
                        self.channel,
                        self.timeout,
                    )
                    self.cut_id = None
                return message

        return source

    def client_source(self, receive: Receive, on_handed_back: Callable[[], None]) -> Receive:
        """``receive`` of the ASGI events: a handed-back disconnect waits for the successor's
        cut (up to ``timeout``) so that no group message falls between the two consumers."""

        async def source() -> Message:
            message = await receive()
            if message.get("type") == "websocket.disconnect" and message.get("handed_back"):
                on_handed_back()
                if not self.cut_seen.is_set():
                    try:
                        async with asyncio.timeout(self.timeout):
                            await self._successor_or_abandoned()
                    except TimeoutError:
                        logger.warning(
                            "%s: no successor took over within %.3g s; leaving its groups "
                            "anyway (group messages sent from now until a successor joins "
                            "them are not delivered to this connection)",
                            self.channel,
                            self.timeout,
                        )
            return message

        return source

    async def _successor_or_abandoned(self) -> None:
        """Until the successor's cut has come, or the host says none will (its server is
        gone)."""
        abandoned = self.abandoned
        if abandoned is None:
            await self.cut_seen.wait()
            return
        waits = {
            asyncio.ensure_future(self.cut_seen.wait()),
            asyncio.ensure_future(abandoned.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
