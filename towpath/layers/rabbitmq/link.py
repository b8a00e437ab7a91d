"""One AMQP connection that redials by itself, and the AMQP channels opened on it.

aio-pika's ``connect_robust`` restores what was declared through it, at a fixed interval. The
layer needs more than that after a reconnect (bindings that *other* processes made to this
process's inbox queue, consumers that exist only while receivers wait), so it keeps its own
state and only needs a connection that comes back: :class:`Link` dials with
``aio_pika.connect``, redials with exponential back-off and jitter when the connection is lost,
and tells the layer when it is up again. Callers wait for it at most ``retry_timeout`` seconds,
then get ``LayerConnectionError`` naming the broker and the ``url`` setting.

An outage is logged once when it starts and once when it ends (:class:`OutageLog`); aiormq's own
ERROR line for every failed dial is dropped while towpath has already said the broker is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

try:
    import aio_pika
    import aiormq
    import aiormq.abc
    from aiormq.exceptions import (
        AMQPConnectionError,
        AuthenticationError,
        IncompatibleProtocolError,
        ProbableAuthenticationError,
        ProtocolSyntaxError,
    )
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "towpath.layers.rabbitmq needs aio-pika: pip install 'towpath[rabbitmq]'"
    ) from exc

from towpath.layers.backoff import Backoff
from towpath.layers.base import InvalidChannelLayerError, LayerConnectionError
from towpath.layers.kernel import OutageLog, reconnect_backoff

__all__ = [
    "CONNECTION_ERRORS",
    "FAILURES",
    "Link",
    "Slot",
    "describe",
]

logger = logging.getLogger("towpath.layers.rabbitmq")

#: Errors that mean "the connection is gone or never came", whichever library raised them.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    AMQPConnectionError,
    ConnectionError,
    OSError,
    TimeoutError,
    EOFError,
)
#: Everything a broker call may fail with that is not the call's own fault.
FAILURES: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, aiormq.exceptions.AMQPError)
_OPEN_FAILURES: tuple[type[BaseException], ...] = (*FAILURES, RuntimeError)
#: The broker answered but refused us: retrying will not help until the settings change.
REFUSALS: tuple[type[BaseException], ...] = (
    AuthenticationError,
    ProbableAuthenticationError,
    IncompatibleProtocolError,
    ProtocolSyntaxError,
)


def describe(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    parsed = aio_pika.connection.make_url(url)
    if parsed.password:
        parsed = parsed.with_password("***")
    return str(parsed)


class _QuietDuringOutage(logging.Filter):
    """Drops aiormq's ERROR line for each failed dial while a link is known to be down (its
    :class:`OutageLog` already said so, once)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = 0

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.down and record.getMessage().startswith("error when creating transport"))


_QUIET = _QuietDuringOutage()
logging.getLogger("aiormq.connection").addFilter(_QUIET)


class Link:
    """One AMQP connection, redialled with back-off until :meth:`close`.

    ``on_up(link)`` runs (synchronously) each time the connection is (re)established,
    ``on_down(link)`` each time it is lost; both run in the link's task.
    """

    def __init__(
        self,
        url: str,
        *,
        label: str,
        connect_timeout: float,
        retry_timeout: float,
        on_up: Callable[[Link], None],
        on_down: Callable[[Link], None],
        client_name: str,
    ) -> None:
        self.url = url
        self.label = label
        self.connect_timeout = connect_timeout
        self.retry_timeout = retry_timeout
        self.outage = OutageLog(label, "RabbitMQ", logger)
        self.on_up = on_up
        self.on_down = on_down
        self.client_name = client_name
        self.connection: aio_pika.abc.AbstractConnection | None = None
        #: how many times the connection came up
        self.epoch = 0
        #: the last dial failure, for error messages
        self.error: BaseException | None = None
        #: the broker refused the settings (credentials, virtual host): raised to waiters
        self.refused: InvalidChannelLayerError | None = None
        self.closing = False
        self._news = asyncio.Event()
        self._counted_down = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"towpath-rabbitmq-link-{label}"
        )

    @property
    def up(self) -> bool:
        return self.connection is not None

    def _announce(self) -> None:
        """Wake everyone waiting in :meth:`wait` so they look again."""
        self._news.set()
        self._news = asyncio.Event()

    def _mark_down(self, down: bool) -> None:
        if down != self._counted_down:
            self._counted_down = down
            _QUIET.down += 1 if down else -1

    async def wait(self) -> aio_pika.abc.AbstractConnection:
        """The connection, waiting up to ``retry_timeout`` for it to be (re)established."""
        connection = self.connection
        if connection is not None:
            return connection
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_timeout
        while True:
            connection = self.connection
            if connection is not None:
                return connection
            if self.refused is not None:
                raise self.refused
            if self.closing:
                raise LayerConnectionError(f"RabbitMQ {self.label}: the layer is closed")
            remaining = deadline - loop.time()
            if remaining <= 0:
                reason = f" ({self.error})" if self.error is not None else ""
                raise LayerConnectionError(
                    f"RabbitMQ {self.label} unreachable for {self.retry_timeout:g} s{reason}; "
                    "check the url setting and that RabbitMQ is running"
                )
            news = self._news
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await news.wait()

    async def _dial(self) -> aio_pika.abc.AbstractConnection:
        return await aio_pika.connect(
            self.url,
            timeout=self.connect_timeout,
            client_properties={"connection_name": self.client_name},
            connection_class=_ClosingConnection,
        )

    async def _run(self) -> None:
        delays: Backoff | None = None
        while not self.closing:
            try:
                connection = await self._dial()
            except REFUSALS as exc:
                self.refused = InvalidChannelLayerError(
                    f"RabbitMQ {self.label} refused the connection ({type(exc).__name__}: "
                    f"{exc}); check the user, password and virtual host in the url setting"
                )
                self.error = exc
            except Exception as exc:  # any failure to dial: the link never dies of it
                self.error = exc
            else:
                lost = asyncio.Event()
                connection.close_callbacks.add(lambda *_, lost=lost: lost.set())
                self.connection, self.refused, self.error = connection, None, None
                self.epoch += 1
                delays = None
                self._mark_down(False)
                self.outage.recovered()
                self._announce()
                try:
                    self.on_up(self)
                except Exception:  # pragma: no cover - a bug in the layer, not an outage
                    logger.exception("RabbitMQ %s: restoring after a reconnect failed", self.label)
                await lost.wait()
                self.connection = None
                await _close_quietly(connection, self.connect_timeout)
                self._announce()
                if self.closing:
                    return
                self.on_down(self)
                self._mark_down(True)
                self.outage.failed("connection lost")
                continue
            if self.closing:
                return
            self._mark_down(True)
            self.outage.failed(self.error or "unknown error", "connect")
            self._announce()
            if delays is None:
                delays = reconnect_backoff()
            await asyncio.sleep(delays.pause())

    async def close(self) -> None:
        self.closing = True
        self._announce()
        connection, self.connection = self.connection, None
        if connection is not None:
            await _close_quietly(connection, self.connect_timeout)
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._mark_down(False)


class _ClosingConnection(aio_pika.Connection):
    """A connection that closes itself when connecting fails. aio-pika leaves a failed
    connection open and closes it from ``__del__``, which, when the garbage collector runs in
    another thread, makes a ``close()`` coroutine that is never awaited."""

    async def connect(self, timeout: aiormq.abc.TimeoutType = None) -> None:  # noqa: ASYNC109 - the signature it overrides
        try:
            await super().connect(timeout)
        except BaseException:
            await _close_quietly(self, timeout if isinstance(timeout, int | float) else None)
            raise


async def _close_quietly(
    connection: aio_pika.abc.AbstractConnection, seconds: float | None
) -> None:
    """Close ``connection`` (also a lost one, so nothing is left for ``__del__`` to close),
    ignoring how it fails, within ``seconds``."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            await connection.close()


class Slot:
    """An AMQP channel on a :class:`Link`, opened on first use and again after it closed (a
    lost connection, or a channel error such as publishing to a missing exchange)."""

    __slots__ = ("_lock", "channel", "confirms", "link")

    def __init__(self, link: Link, *, confirms: bool) -> None:
        self.link = link
        self.confirms = confirms
        self.channel: aiormq.abc.AbstractChannel | None = None
        self._lock = asyncio.Lock()

    def ready(self) -> aiormq.abc.AbstractChannel | None:
        """The open channel, or None when it must be (re)opened with :meth:`get`."""
        channel = self.channel
        if channel is not None and not channel.is_closed:
            return channel
        return None

    async def get(self) -> aiormq.abc.AbstractChannel:
        channel = self.ready()
        if channel is not None:
            return channel
        async with self._lock:
            channel = self.ready()
            if channel is not None:
                return channel
            connection = await self.link.wait()
            try:
                wrapper = await connection.channel(
                    publisher_confirms=self.confirms, on_return_raises=self.confirms
                )
                channel = await wrapper.get_underlay_channel()
            except _OPEN_FAILURES as exc:
                raise LayerConnectionError(
                    f"RabbitMQ {self.link.label}: could not open a channel ({exc})"
                ) from exc
            self.channel = channel
            return channel

    async def close(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()


def closed_reason(exc: BaseException) -> str:
    """A short description of an AMQP failure for error messages."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def ignore(*_: Any) -> None:
    """A callback that does nothing (aiormq wants callables)."""
