"""The forwarding app's HTTP exchange: one request forwarded (body in chunks), its reply
written out, a client that left early reported (``docs/protocol.md``)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from towpath.interface.forwarding.context import ExchangeContext
from towpath.interface.forwarding.exchange import Message, Receive, Send, _Exchange
from towpath.interface.forwarding.outcome import Outcome
from towpath.layers.base import ChannelFull, ChannelLayerError
from towpath.wire import ABORT_EVENT, HTTP_REQUEST_CHANNEL, REQUEST_BODY_PREFIX, TEXT_PLAIN

logger = logging.getLogger("towpath.interface.forwarding")

#: the 503 of a request whose worker died: the request is not sent again by the server (it may
#: have had effects, or killed its worker), but the client may retry it: another worker may
#: take it (HTTP clients that honour ``Retry-After``, urllib3's ``Retry`` for one, retry
#: idempotent methods on it)
_RETRY_SOON = [*TEXT_PLAIN, (b"retry-after", b"1")]


class _HTTPExchange(_Exchange):
    """One HTTP request: forward it (body in chunks), write out the reply, report a client
    that left early."""

    __slots__ = ("body_bytes", "request_channel", "started", "trailers")

    def __init__(
        self, ctx: ExchangeContext, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> None:
        super().__init__(ctx, scope, receive, send)
        self.request_channel = ""
        self.body_bytes = 0
        self.started = False
        #: the response announced trailers: it ends with them, not with its last body
        self.trailers = False

    async def _answer(
        self, status: int, text: bytes, headers: list[tuple[bytes, bytes]] = TEXT_PLAIN
    ) -> None:
        if self.started:
            return
        self.started = True
        try:
            await self.send({"type": "http.response.start", "status": status, "headers": headers})
            await self.send({"type": "http.response.body", "body": text})
        except OSError:  # the client is gone (ASGI: send raises an OSError then)
            pass

    def _declared_too_large(self) -> bool:
        limit = self.ctx.settings.max_body_bytes
        if limit is None:
            return False
        for name, value in self.scope["headers"]:
            if name.lower() == b"content-length":
                try:
                    return int(value) > limit
                except ValueError:
                    return False
        return False

    async def _read_chunk(self, more: bool, pending: bytes) -> tuple[bytes, bool, bool]:
        """Read client body until a chunk is full or the body ends: (chunk, client's
        more_body, client gone). The chunk may be longer than a chunk: the caller splits it."""
        size = self.ctx.settings.body_chunk_bytes
        if not more or len(pending) >= size:
            return pending, more, False
        parts = [pending] if pending else []
        have = len(pending)
        while more and have < size:
            message = await self.receive()
            if message["type"] != "http.request":
                return b"", False, True
            body = message.get("body", b"")
            if body:
                parts.append(body)
                have += len(body)
            more = message.get("more_body", False)
        chunk = parts[0] if len(parts) == 1 else b"".join(parts)
        return chunk, more, False

    def _over_limit(self, chunk: bytes) -> bool:
        self.body_bytes += len(chunk)
        limit = self.ctx.settings.max_body_bytes
        return limit is not None and self.body_bytes > limit

    async def run(self) -> None:
        ctx = self.ctx
        stats = self.stats
        if self._declared_too_large():
            stats.http_413 += 1
            await self._answer(413, b"Request body too large")
            return
        first = await self.receive()
        if first["type"] != "http.request":
            return  # gone before its request was read: nothing to forward
        chunk, client_more, gone = await self._read_chunk(
            first.get("more_body", False), first.get("body", b"")
        )
        if gone:
            return
        size = ctx.settings.body_chunk_bytes
        rest = b""
        if len(chunk) > size:
            chunk, rest = chunk[:size], chunk[size:]
        if self._over_limit(chunk):
            stats.http_413 += 1
            await self._answer(413, b"Request body too large")
            return
        control_channel = await self.open()
        if control_channel is None:
            stats.http_503_layer += 1
            await self._answer(503, b"Service Unavailable: the channel layer is unreachable")
            return
        affinity = ctx.affinity
        self.request_channel = REQUEST_BODY_PREFIX + os.urandom(12).hex()
        affinity.add(self)
        try:
            await self._forward(chunk, client_more, rest, control_channel)
        finally:
            affinity.remove(self)

    async def _forward(
        self, chunk: bytes, client_more: bool, rest: bytes, control_channel: str
    ) -> None:
        if not await self._send_request(chunk, client_more or bool(rest), control_channel):
            return
        client_side = asyncio.get_running_loop().create_task(self._client_side(client_more, rest))
        try:
            reason = await self._replies()
        finally:
            client_side.cancel()
        await self._conclude(reason)

    async def _send_request(self, chunk: bytes, more_body: bool, control_channel: str) -> bool:
        """The request's first message to ``http.request``; False if it could not go (the
        client answered 503)."""
        ctx = self.ctx
        stats = self.stats
        try:
            await self.layer.send(
                HTTP_REQUEST_CHANNEL,
                {
                    "type": "http.request",
                    "reply_channel": self.reply_channel,
                    "request_channel": self.request_channel,
                    "control_channel": control_channel,
                    "scope": ctx.scope_to_wire(self.scope),
                    "body": chunk,
                    "more_body": more_body,
                    **ctx.affinity.stamp(ctx.settings.http_timeout_seconds),
                },
            )
        except ChannelFull:
            stats.http_503_full += 1
            await self._answer(503, b"Service Unavailable: the server is overloaded")
            return False
        except (ChannelLayerError, OSError) as exc:
            ctx.layer_failed("Could not forward a request to the channel layer", exc)
            stats.http_503_layer += 1
            await self._answer(503, b"Service Unavailable: the channel layer is unreachable")
            return False
        stats.http_requests += 1
        ctx.layer_works()
        self.sent_to(HTTP_REQUEST_CHANNEL)
        return True

    async def _replies(self) -> Outcome:
        """The reply loop (a client gone: ``Outcome.GONE``); a failure before the response
        started is answered 503 (the layer) or 502 (a reply the server refused)."""
        stats = self.stats
        try:
            return await self.reply_loop()
        except (ChannelLayerError, OSError) as exc:  # reading the reply channel
            if self.started:
                raise
            self.ctx.layer_failed("Could not receive a reply from the channel layer", exc)
            stats.http_503_layer += 1
            await self._answer(503, b"Service Unavailable: the channel layer is unreachable")
            return Outcome.LAYER
        except Exception as exc:  # the server refused a reply (ASGI: send raised)
            if self.started:
                raise
            logger.warning("Invalid reply on %s: %s", self.reply_channel, exc)
            stats.http_502 += 1
            await self._answer(502, b"Bad Gateway: invalid response from the worker")
            return Outcome.BAD_REPLY

    async def _conclude(self, reason: Outcome) -> None:
        """Answer for what ended the reply loop, and tell the worker if the request ended
        without its response."""
        ctx = self.ctx
        stats = self.stats
        if reason is Outcome.COMPLETE or reason is Outcome.ABORT:
            ctx.untaken.answered()  # its worker is alive, even if no heartbeat lists it now
        if reason is Outcome.COMPLETE or reason is Outcome.LAYER:
            return  # done; or the layer is down and would not take a disconnect either
        if reason is Outcome.ABORT:
            # the worker gave up mid-response: returning now leaves the response unfinished,
            # which the server answers with a reset (or a 500 if nothing was sent yet)
            stats.http_aborts += 1
            return
        if reason is Outcome.WORKER_LOST:
            # started: returning leaves the response unfinished, reset as for ``towpath.abort``
            if self.started:
                stats.http_aborts += 1
            else:
                stats.http_503_worker_lost += 1
                await self._answer(
                    503, b"Service Unavailable: the worker handling it was lost", _RETRY_SOON
                )
        elif reason is Outcome.TIMEOUT:
            stats.http_503_timeout += 1
            await self._answer(503, b"Service Unavailable: no response in time")
        elif reason is Outcome.TOO_LARGE:
            stats.http_413 += 1
            await self._answer(413, b"Request body too large")
        # The request ended without its response: whoever works on it should stop.
        stats.http_disconnects += 1
        await self.send_quietly(self.request_channel, {"type": "http.disconnect"}, background=True)

    async def handle(self, message: Message) -> Outcome | None:
        kind = message.get("type")
        if kind == ABORT_EVENT:
            return Outcome.ABORT
        if kind == "http.response.body":
            await self.send(message)
            if not message.get("more_body", False) and not self.trailers:
                return Outcome.COMPLETE
            return None
        if kind == "http.response.start":
            self.no_timeout()
            await self.send(message)
            self.started = True
            self.trailers = bool(message.get("trailers", False))
            return None
        await self.send(message)  # trailers, or something the server refuses
        if kind == "http.response.trailers" and not message.get("more_trailers", False):
            return Outcome.COMPLETE
        return None

    async def _client_side(self, more: bool, pending: bytes) -> None:
        """The rest of the body to the request channel, in order; then wait for the client
        to leave."""
        send = self.layer.send
        channel = self.request_channel
        size = self.ctx.settings.body_chunk_bytes
        while more or pending:
            chunk, more, gone = await self._read_chunk(more, pending)
            if gone:
                self.interrupt(Outcome.GONE)
                return
            pending = b""
            if len(chunk) > size:
                chunk, pending = chunk[:size], chunk[size:]
            if self._over_limit(chunk):
                self.interrupt(Outcome.TOO_LARGE)
                return
            message = {"type": "http.request", "body": chunk, "more_body": more or bool(pending)}
            if not await self._send_body(send, channel, message):
                return
            self.stats.http_body_chunks += 1
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.interrupt(Outcome.GONE)
                return

    async def _send_body(
        self, send: Callable[[str, Message], Awaitable[None]], channel: str, message: Message
    ) -> bool:
        """Send one body chunk; a full request channel is back-pressure (the worker reads it
        slower than the client uploads), so retry, backing off, until the request's deadline."""
        delay = 0.005
        loop = asyncio.get_running_loop()
        timeout = self.ctx.settings.http_timeout_seconds
        give_up = None if timeout is None else loop.time() + timeout
        while True:
            try:
                await send(channel, message)
                return True
            except ChannelFull:
                if give_up is not None and loop.time() + delay > give_up:
                    self.interrupt(Outcome.TIMEOUT)
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except (ChannelLayerError, OSError) as exc:
                self.ctx.layer_failed("Could not forward a request body chunk", exc)
                self.interrupt(Outcome.TIMEOUT)
                return False
