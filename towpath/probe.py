"""``towpath check``: prove that every configured channel layer carries a message through its
server, and that the route list it names loads.

A probe sends one message on a **normal** channel with a unique name and receives it back. A
normal channel is stored where every process reads it (a Redis list, a RabbitMQ queue, an IPC
queue file), so the message crosses the server; a ``!`` channel would not do: a layer delivers
a message for its own process-specific channel in memory, and a check through one passes with
Redis stopped. Per layer:

* Redis (single, Sentinel): one channel; sharded: one channel on every shard (names are
  picked so each shard gets one). The list is empty, so gone, once the message is received.
* Redis Pub/Sub: the subscription is in effect (``subscribe``) before the PUBLISH.
* RabbitMQ: the channel's queue is declared by the probe and deleted after it.
* IPC: the channel's queue file is removed after it.
* in-memory: the round trip happens in this process, which proves nothing about other
  processes: the report carries a warning that ``towpath runworker`` cannot use it.

Every layer is probed at once, each bounded by ``timeout``, so a check of several layers takes
about as long as the slowest. A layer that cannot reach its server fails as soon as the layer
reports it (its first "unreachable" warning, which names the address), rather than after the
layer's own ``retry_timeout``. Nothing the layers log is printed: it becomes the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from towpath.config import LayerSettings, UserCodeError
from towpath.layers.base import BaseChannelLayer, ChannelLayerError

__all__ = ["LayerReport", "check_layer", "check_layers"]

#: seconds a layer's ``close()`` and the probe's clean-up may take after the probe itself
CLOSE_SECONDS = 2.0
#: the same after a failed probe: there is nothing to hand back to a server that cannot be
#: reached, and a layer may wait out its own timeouts before closing (RedisChannelLayer waits
#: for a fetcher stuck in its reconnect loop)
FAILED_CLOSE_SECONDS = 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class LayerReport:
    """The outcome of checking one layer."""

    alias: str
    #: the layer's class name
    backend: str
    #: ``(where, seconds)`` per round trip made, ``where`` naming the server (or store)
    round_trips: tuple[tuple[str, float], ...] = ()
    #: why the round trip failed (it names the address), or None
    failure: str | None = None
    #: why the layer's ROUTING does not load, or None (also when it has no ROUTING)
    routing_failure: str | None = None
    #: the ROUTING that was loaded
    routing: str | None = None
    warnings: tuple[str, ...] = ()
    #: the channels the probe used (gone from the server afterwards)
    channels: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failure is None and self.routing_failure is None


# -- where a probe goes, and what it leaves behind -----------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Target:
    channel: str
    #: the server (or store) the channel lives on, for the report
    where: str


@dataclasses.dataclass(slots=True)
class _Plan:
    targets: list[_Target]
    #: called after the layer is closed, with the channels used: removes what they left
    cleanup: Callable[[list[str]], Any] | None = None
    warnings: tuple[str, ...] = ()


def _module(name: str) -> Any:
    """A layer module, if it is loaded (a layer of its class exists only if it is)."""
    return sys.modules.get(name)


def _name(token: str, index: int) -> str:
    return f"towpath-check.{token}.{index}"


def _sharded_targets(
    token: str, shards: int, where: Callable[[int], str], key: Callable[[str], str]
) -> list[_Target]:
    """One channel per shard: names are tried until every shard has one."""
    from towpath.layers.redis.hosts import shard_for

    found: dict[int, _Target] = {}
    for index in range(64 * shards):
        name = _name(token, index)
        shard = shard_for(key(name), shards)
        if shard not in found:
            found[shard] = _Target(name, where(shard))
            if len(found) == shards:
                break
    return [found[shard] for shard in sorted(found)]


def _plan(layer: BaseChannelLayer, token: str) -> _Plan:
    redis_core = _module("towpath.layers.redis.core")
    if redis_core is not None and isinstance(layer, redis_core.RedisChannelLayer):
        from towpath.layers.redis.hosts import describe

        hosts = layer.hosts
        return _Plan(
            _sharded_targets(token, layer.ring_size, lambda i: describe(hosts[i]), lambda n: n)
        )
    pubsub = _module("towpath.layers.redis.pubsub")
    if pubsub is not None and isinstance(layer, pubsub.RedisPubSubChannelLayer):
        from towpath.layers.redis.hosts import describe

        hosts, prefix = layer.hosts, layer.prefix
        return _Plan(
            _sharded_targets(
                token,
                layer.ring_size,
                lambda i: describe(hosts[i]),
                lambda n: f"{prefix}__channel__{n}",  # the Redis channel the layer publishes to
            )
        )
    rabbitmq = _module("towpath.layers.rabbitmq.core")
    if rabbitmq is not None and isinstance(layer, rabbitmq.RabbitMQChannelLayer):
        url, queue_of = layer.url, layer.queue_of
        return _Plan(
            [_Target(_name(token, 0), layer.label)],
            cleanup=lambda channels: _delete_queues(url, [queue_of(c) for c in channels]),
        )
    ipc = _module("towpath.layers.ipc.core")
    if ipc is not None and isinstance(layer, ipc.IPCChannelLayer):
        store = layer.path
        existed = os.path.isdir(store)
        return _Plan(
            [_Target(_name(token, 0), store)],
            cleanup=lambda channels: _remove_queue_files(store, channels, existed),
        )
    from towpath.layers.memory import InMemoryChannelLayer

    if isinstance(layer, InMemoryChannelLayer):
        return _Plan(
            [_Target(_name(token, 0), "this process")],
            warnings=(
                "the in-memory layer carries messages inside one process only: `towpath "
                "runworker` cannot serve it (its workers are other processes); use it with "
                "`towpath runserver`, or configure the IPC or Redis layer",
            ),
        )
    return _Plan([_Target(_name(token, 0), repr(layer))])


async def _delete_queues(url: str, queues: list[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(url, timeout=CLOSE_SECONDS)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
    finally:
        await connection.close()


def _remove_queue_files(store: str, channels: list[str], existed: bool) -> None:
    from towpath.layers.ipc.format import NORMAL, queue_path

    for channel in channels:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(queue_path(store, channel, NORMAL))
    if not existed:
        # the probe made the store: take away what the layer keeps there unless another
        # process started using it meanwhile (its inbox or wake-up FIFO would be there)
        with contextlib.suppress(OSError):
            names = os.listdir(store)
            if not any(name.startswith(("q-", "i-", "w-")) for name in names):
                for name in names:
                    os.unlink(os.path.join(store, name))
                os.rmdir(store)


# -- what the layers log during a probe ------------------------------------------------------------


class _Capture:
    """The log records of one probe; the first warning from towpath's own loggers ends it."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self.failed = asyncio.Event()
        self.reason: str | None = None

    def add(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.reason is None and record.name.startswith("towpath"):
            self.reason = _reason(record.getMessage())
            self.failed.set()

    def last(self) -> str | None:
        return _reason(self.records[-1].getMessage()) if self.records else None


_CAPTURE: contextvars.ContextVar[_Capture | None] = contextvars.ContextVar(
    "towpath_check_capture", default=None
)


def _reason(message: str) -> str:
    # the layers' outage warnings go on to say what they do about it; a check stops there
    return _without_reprs(message.removesuffix("; retrying with back-off").splitlines()[0])


def _without_reprs(text: str, longest: int = 60) -> str:
    """``text`` with every ``<...>`` span longer than ``longest`` shortened to ``<...>``: redis-py
    puts whole connection-pool reprs in its Sentinel errors."""
    out: list[str] = []
    depth, start = 0, 0
    for position, char in enumerate(text):
        if char == "<":
            if depth == 0:
                start = position
            depth += 1
        elif char == ">" and depth:
            depth -= 1
            if depth == 0:
                span = text[start : position + 1]
                out.append(span if len(span) <= longest else "<...>")
        elif depth == 0:
            out.append(char)
    if depth:
        out.append(text[start:])
    return "".join(out)


def _quiet_layer_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler during a check: a layer's background task that died of a
    layer error (a refused login...) was already reported as the probe's failure."""
    if isinstance(context.get("exception"), ChannelLayerError):
        return
    loop.default_exception_handler(context)


class _Router(logging.Handler):
    """Hands a record logged inside a probe (or a task it started) to that probe's capture;
    other records go where they would have gone. On the root logger while a check runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.users = 0

    def emit(self, record: logging.LogRecord) -> None:
        capture = _CAPTURE.get()
        if capture is not None:
            capture.add(record)
        elif len(logging.getLogger().handlers) == 1 and logging.lastResort is not None:
            logging.lastResort.handle(record)


_ROUTER = _Router()


@contextlib.contextmanager
def _captured_logs() -> Iterator[None]:
    """Route log records to the probes while any check runs (checks may overlap)."""
    if _ROUTER.users == 0:
        logging.getLogger().addHandler(_ROUTER)
    _ROUTER.users += 1
    try:
        yield
    finally:
        _ROUTER.users -= 1
        if _ROUTER.users == 0:
            logging.getLogger().removeHandler(_ROUTER)


# -- the probe -------------------------------------------------------------------------------------


async def _round_trip(layer: BaseChannelLayer, target: _Target, token: str) -> float:
    """Send one message on ``target.channel`` and receive it; returns the seconds between."""
    receiving = asyncio.ensure_future(layer.receive(target.channel))
    try:
        subscribe = getattr(layer, "subscribe", None)
        if subscribe is not None:  # Pub/Sub: a PUBLISH reaches only existing subscriptions
            await subscribe(target.channel)
        started = time.perf_counter()
        await layer.send(target.channel, {"type": "towpath.check", "token": token})
        message = await receiving
        elapsed = time.perf_counter() - started
    finally:
        receiving.cancel()
    if message.get("token") != token:
        raise RuntimeError(f"received {message!r:.80} instead of the probe's message")
    return elapsed


async def _probe(
    layer: BaseChannelLayer, plan: _Plan, token: str, seconds: float
) -> tuple[list[tuple[str, float]], str | None]:
    capture = _Capture()
    # the layer's tasks started from here on inherit it, so what they log is this probe's
    reset = _CAPTURE.set(capture)
    try:
        return await _run_probe(layer, plan, token, seconds, capture)
    finally:
        _CAPTURE.reset(reset)


async def _run_probe(
    layer: BaseChannelLayer, plan: _Plan, token: str, seconds: float, capture: _Capture
) -> tuple[list[tuple[str, float]], str | None]:
    trips: list[tuple[str, float]] = []
    failure: str | None = None
    target = plan.targets[0]
    try:
        async with asyncio.timeout(seconds):
            failed = asyncio.ensure_future(capture.failed.wait())
            try:
                for target in plan.targets:
                    # twice: the first round trip also connects; the second is the one
                    # that tells what a message costs
                    for _ in range(2):
                        trip = asyncio.ensure_future(_round_trip(layer, target, token))
                        await asyncio.wait({trip, failed}, return_when=asyncio.FIRST_COMPLETED)
                        if not trip.done():
                            trip.cancel()
                            await asyncio.gather(trip, return_exceptions=True)
                            failure = capture.reason
                            break
                        elapsed = trip.result()
                    if failure is not None:
                        break
                    trips.append((target.where, elapsed))
            finally:
                failed.cancel()
    except TimeoutError:
        seen = capture.last()
        failure = f"no round trip within {seconds:g} s via {target.where}" + (
            f" ({seen})" if seen else ""
        )
    except Exception as exc:  # the layer's own error (LayerConnectionError...), or a bug
        failure = _without_reprs(f"{type(exc).__name__}: {exc}")
    close_seconds = CLOSE_SECONDS if failure is None else FAILED_CLOSE_SECONDS
    # a close that fails or takes too long does not change the outcome
    with contextlib.suppress(Exception):
        async with asyncio.timeout(close_seconds):
            await layer.close()
    if plan.cleanup is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(close_seconds):
                done = plan.cleanup([t.channel for t in plan.targets])
                if asyncio.iscoroutine(done):
                    await done
    return trips, failure


def _check_routing(routing: str | None) -> str | None:
    """Why ``routing`` does not load, or None."""
    if routing is None:
        return None
    from towpath.routing import Router

    try:
        Router(routing)
    except UserCodeError as exc:
        return str(exc.relabel(f"ROUTING {routing!r}"))
    except (ImportError, TypeError, ValueError) as exc:
        return f"ROUTING {routing!r}: {exc}"
    return None


async def check_layer(
    alias: str, layer: BaseChannelLayer, *, routing: str | None = None, seconds: float = 5.0
) -> LayerReport:
    """Check one layer: a round trip through its server (bounded by ``seconds``) and its
    ``routing``. The layer is closed afterwards."""
    token = secrets.token_hex(8)
    plan = _plan(layer, token)
    with _captured_logs():
        trips, failure = await _probe(layer, plan, token, seconds)
    return LayerReport(
        alias,
        type(layer).__name__,
        tuple(trips),
        failure,
        _check_routing(routing),
        routing,
        plan.warnings,
        tuple(target.channel for target in plan.targets),
    )


def check_layers(
    layers: Mapping[str, BaseChannelLayer],
    settings: Mapping[str, LayerSettings] | None = None,
    *,
    timeout: float = 5.0,
) -> list[LayerReport]:
    """Check every layer of ``layers`` at once (their ``ROUTING`` from ``settings``); one
    report per layer, in order. Takes about ``timeout + CLOSE_SECONDS`` at most."""
    settings = settings or {}

    async def run() -> list[LayerReport]:
        asyncio.get_running_loop().set_exception_handler(_quiet_layer_errors)
        return list(
            await asyncio.gather(
                *(
                    check_layer(
                        alias,
                        layer,
                        routing=settings[alias].routing if alias in settings else None,
                        seconds=timeout,
                    )
                    for alias, layer in layers.items()
                )
            )
        )

    with _captured_logs():
        return asyncio.run(run())
