"""``AsyncHttpConsumer``: Channels 4's HTTP consumer, plus responses that outlive ``handle()``.

As in Channels 4, the body is gathered and passed to ``handle(body)``, and the instance stops
when ``handle`` returns. Two differences: an exception in ``handle`` propagates (Channels
swallows it with ``StopConsumer`` raised from a ``finally``), so the server answers 500 and
logs it; and a response left open with ``send_body(..., more_body=True)`` keeps the instance
running, so a later event handler (``group_send`` to ``channel_name``) can finish it, which
is what the long-poll example in the Channels docs expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from towpath.consumers.base import AsyncConsumer, StopConsumer

__all__ = ["AsyncHttpConsumer"]

_OPEN, _STARTED, _STREAMING, _DONE = range(4)


class AsyncHttpConsumer(AsyncConsumer):
    """Async HTTP consumer: ``handle(body)`` with ``send_headers``/``send_body``/
    ``send_response``; ``disconnect()`` for clean-up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body: list[bytes] = []
        self._response = _OPEN
        self._handled = False

    async def send(self, message: dict[str, Any]) -> None:
        message_type = message.get("type")
        if message_type == "http.response.start":
            self._response = _STARTED
        elif message_type == "http.response.body":
            self._response = _STREAMING if message.get("more_body") else _DONE
        await super().send(message)

    async def send_headers(
        self,
        *,
        status: int = 200,
        headers: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Start the response. ``headers`` is a dict or a list of (name, value) bytes pairs.
        The server writes nothing until the first ``send_body``."""
        if headers is None:
            pairs: list[Any] = []
        elif isinstance(headers, Mapping):
            pairs = list(headers.items())
        else:
            pairs = list(headers)
        await self.send({"type": "http.response.start", "status": status, "headers": pairs})

    async def send_body(self, body: bytes, *, more_body: bool = False) -> None:
        """Send (part of) the body; ``more_body=True`` keeps the response open for more."""
        if not isinstance(body, bytes):
            raise TypeError(f"send_body() needs bytes, not {type(body).__name__}: {body!r:.60}")
        await self.send({"type": "http.response.body", "body": body, "more_body": more_body})

    async def send_response(self, status: int, body: bytes, **kwargs: Any) -> None:
        """``send_headers(status=status, **kwargs)`` then the whole ``body``; once."""
        await self.send_headers(status=status, **kwargs)
        await self.send_body(body)

    async def handle(self, body: bytes) -> None:
        """Answer the request whose whole body is ``body``."""
        raise NotImplementedError(
            f"{type(self).__name__} must define async def handle(self, body) to answer requests"
        )

    async def disconnect(self) -> None:
        """Clean-up when the request ends (answered or abandoned). Send nothing from here."""

    async def http_request(self, message: dict[str, Any]) -> None:
        """Gather body chunks; with the last, call ``handle`` and stop, unless the response is
        still streaming."""
        if "body" in message:
            self.body.append(message["body"])
        if message.get("more_body"):
            return
        try:
            await self.handle(b"".join(self.body))
        except BaseException:
            await self.disconnect()
            raise
        self._handled = True
        if self._response != _STREAMING:
            await self.disconnect()
            raise StopConsumer()

    async def dispatch(self, message: dict[str, Any]) -> None:
        await super().dispatch(message)
        if self._handled and self._response == _DONE:  # an event handler finished it
            await self.disconnect()
            raise StopConsumer()

    async def http_disconnect(self, message: dict[str, Any]) -> None:
        """The client left (or the server gave up): clean up and stop."""
        await self.disconnect()
        raise StopConsumer()
