"""Channel-layer scenarios: a registry of async functions that each measure one thing.

A scenario takes a :class:`Layers` (how to build the layer under test, and whether to use one
instance or two) and the run's :class:`Sizes`, and returns its figures: a ``float`` for a
one-metric scenario, or a ``{metric key: float}`` dict when it reports several
(``group_send_*`` reports ``call``, ``waiting`` and ``sequential``). Only the Channels 2+ layer
API is used (``send``, ``receive``, ``new_channel``, ``group_add``, ``group_send``, ``flush``,
``close``), so any layer class can be measured.

**Two instances.** In a deployment the side that makes ``!`` channels and waits on them (an
interface server) and the side that sends to them (a worker, another server) are different
processes, each with its own layer. A networked layer may take a shortcut when both ends are in
one instance (towpath's Redis layer delivers to its own ``!`` channels in memory), so for such
layers :meth:`Layers.pair` builds two instances from the same factory (same config, separate
client prefixes, one shared server): the *receiving* side and the *sending* side. A layer whose
instances share nothing (in-memory) gets the same instance for both sides.

Adding a scenario::

    @scenario("my_case", "what it measures", Metric("throughput", "msgs/s", higher_is_better=True))
    async def my_case(layers: Layers, sizes: Sizes) -> float:
        async with layers.pair() as (receiving, sending):
            ...
            return figure
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeAlias

__all__ = [
    "SCENARIOS",
    "LayerFactory",
    "Layers",
    "Metric",
    "Scenario",
    "ScenarioError",
    "Sizes",
    "is_channel_full",
    "open_layer",
    "scenario",
]

#: Builds a fresh, unused layer. Each scenario run makes its own and closes it.
LayerFactory: TypeAlias = Callable[[], Any]
Figures: TypeAlias = "float | Mapping[str, float]"
ScenarioFunc: TypeAlias = Callable[["Layers", "Sizes"], Awaitable[Figures]]

#: Seconds allowed for a layer's flush()/close() at the end of a run.
CLOSE_TIMEOUT = 10.0
#: How often a readiness probe is repeated while the receiving side does not have it.
PROBE_INTERVAL = 0.5
#: concurrent_senders_*: give up when nothing arrives for this long after the last send.
STALL_TIMEOUT = 10.0
PROBE_TYPE = "bench.probe"


class ScenarioError(Exception):
    """A layer misbehaved in a scenario (lost or reordered a message, ...)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Metric:
    """One figure a scenario reports."""

    key: str
    unit: str
    higher_is_better: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    func: ScenarioFunc
    metrics: tuple[Metric, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each scenario run does. ``scaled`` shrinks or grows all counts at once."""

    messages: int = 20_000  # send_receive, concurrent_senders_64: messages through one channel
    roundtrips: int = 2_000  # process_roundtrip: ping-pongs on one pair of channels
    group_rounds: int = 5  # group_send_*: rounds per run (median of them)
    pairs: int = 50  # pingpong_50: concurrent ping-pong pairs (not scaled)
    pair_roundtrips: int = 200  # pingpong_50: ping-pongs per pair
    senders: int = 64  # concurrent_senders_64: sender tasks (not scaled)
    consumers: int = 4  # concurrent_senders_64: consumer tasks (not scaled)

    def scaled(self, factor: float) -> Sizes:
        def scale(n: int) -> int:
            return max(1, round(n * factor))

        return dataclasses.replace(
            self,
            messages=scale(self.messages),
            roundtrips=scale(self.roundtrips),
            pair_roundtrips=scale(self.pair_roundtrips),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Layers:
    """The layer under test: its factory, and whether a run uses two instances of it.

    ``two_instances`` is for networked layers, whose instances share a server: the receiving
    side (``new_channel()``, ``receive()``, ``group_add()`` of its own channels) and the sending
    side (``send()``, ``group_send()``) are then separate instances, as separate processes
    would be. Otherwise both sides are one instance.
    """

    factory: LayerFactory
    two_instances: bool = False

    @contextlib.asynccontextmanager
    async def pair(self) -> AsyncIterator[tuple[Any, Any]]:
        """``(receiving, sending)``: two fresh instances, or one instance twice."""
        if not self.two_instances:
            async with open_layer(self.factory) as layer:
                yield layer, layer
            return
        receiving = self.factory()
        sending: Any = None
        try:
            sending = self.factory()
            await _flush(receiving)  # one flush clears the shared server
            yield receiving, sending
        finally:
            await _close(receiving)
            if sending is not None:
                await _close(sending)


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, description: str, *metrics: Metric
) -> Callable[[ScenarioFunc], ScenarioFunc]:
    """Register the decorated function as scenario ``name``. The first metric is the main one."""
    if not metrics:
        raise ValueError(f"scenario {name!r} needs at least one Metric")

    def register(func: ScenarioFunc) -> ScenarioFunc:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} is already registered")
        SCENARIOS[name] = Scenario(name, description, func, tuple(metrics))
        return func

    return register


# -- helpers -----------------------------------------------------------------------------------


def is_channel_full(exc: BaseException) -> bool:
    """True for any library's ``ChannelFull`` (matched by class name, so no import is needed)."""
    return any(cls.__name__ == "ChannelFull" for cls in type(exc).__mro__)


async def _flush(layer: Any) -> None:
    flush = getattr(layer, "flush", None)
    if flush is not None:
        await flush()


async def _close(layer: Any) -> None:
    for name in ("flush", "close", "close_pools"):
        method = getattr(layer, name, None)
        if method is None:
            continue
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await method()
        if name != "flush":
            return


@contextlib.asynccontextmanager
async def open_layer(factory: LayerFactory) -> AsyncIterator[Any]:
    """A fresh layer from ``factory``, flushed first (a shared server may hold leftovers) and
    flushed and closed afterwards, whatever happened."""
    layer = factory()
    try:
        await _flush(layer)
        yield layer
    finally:
        await _close(layer)


async def _send(layer: Any, channel: str, message: dict[str, Any]) -> None:
    """Send, backing off while the channel is full (yield first, then sleep 1 ms)."""
    attempts = 0
    while True:
        try:
            await layer.send(channel, message)
        except Exception as exc:
            if not is_channel_full(exc):
                raise
            attempts += 1
            await asyncio.sleep(0 if attempts < 10 else 0.001)
        else:
            return


def _message(n: int) -> dict[str, Any]:
    return {"type": "test.message", "text": "hello", "n": n}


async def _receive(layer: Any, channel: str) -> dict[str, Any]:
    """The next message on ``channel`` that is not a readiness probe."""
    while True:
        message: dict[str, Any] = await layer.receive(channel)
        if message.get("type") != PROBE_TYPE:
            return message


async def _settle() -> None:
    """Let freshly created receiver tasks reach their first wait (a networked layer needs a
    round trip or so to be listening)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0.005)


async def _cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _until_received(
    deliver: Callable[[], Awaitable[None]], receivers: list[asyncio.Task[Any]]
) -> None:
    """Call ``deliver`` (which sends probes) every :data:`PROBE_INTERVAL` until every receiver
    task has a message. A pub/sub layer drops what is published before its receiver has
    subscribed, so the timed part starts only once the path is known to be open; as a bonus
    both sides are connected by then. Probes that arrive later are skipped by :func:`_receive`.
    """
    try:
        pending = set(receivers)
        while pending:
            await deliver()
            _, pending = await asyncio.wait(pending, timeout=PROBE_INTERVAL)
        for task in receivers:
            task.result()
    finally:
        await _cancel_all(receivers)


async def _connect(sending: Any, receiving: Any, channels: Iterable[str]) -> None:
    """Wait until ``receiving`` gets what ``sending`` sends to each of ``channels``."""
    channels = list(channels)
    receivers = [asyncio.create_task(receiving.receive(c)) for c in channels]

    async def deliver() -> None:
        await asyncio.gather(*(sending.send(c, {"type": PROBE_TYPE}) for c in channels))

    await _until_received(deliver, receivers)


# -- scenarios ---------------------------------------------------------------------------------


@scenario(
    "send_receive",
    "one normal channel; a producer task (sending side) and a consumer task (receiving side) "
    "run concurrently",
    Metric("throughput", "msgs/s", higher_is_better=True),
)
async def send_receive(layers: Layers, sizes: Sizes) -> float:
    n = sizes.messages
    channel = "bench.send_receive"
    async with layers.pair() as (receiving, sending):
        await _connect(sending, receiving, [channel])

        async def produce() -> None:
            for i in range(n):
                await _send(sending, channel, _message(i))

        async def consume() -> None:
            for i in range(n):
                message = await _receive(receiving, channel)
                if message["n"] != i:
                    raise ScenarioError(f"expected message {i}, received {message['n']}")

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(consume())
            tasks.create_task(produce())
        return n / (time.perf_counter() - start)


async def _echo(layer: Any, inbox: str, outbox: str, count: int) -> None:
    for _ in range(count):
        await layer.send(outbox, await _receive(layer, inbox))


async def _ping(layer: Any, outbox: str, inbox: str, count: int, latencies: list[float]) -> None:
    for i in range(count):
        start = time.perf_counter()
        await layer.send(outbox, _message(i))
        reply = await _receive(layer, inbox)
        latencies.append(time.perf_counter() - start)
        if reply["n"] != i:
            raise ScenarioError(f"expected reply {i}, received {reply['n']}")


async def _ping_pairs(receiving: Any, sending: Any, pairs: int) -> list[tuple[str, str]]:
    """``pairs`` of (ping, pong) channels: the pinging side's reply channel on ``receiving``,
    the echoing side's channel on ``sending``, both ways checked open."""
    pings = [await receiving.new_channel() for _ in range(pairs)]
    pongs = [await sending.new_channel() for _ in range(pairs)]
    await asyncio.gather(_connect(sending, receiving, pings), _connect(receiving, sending, pongs))
    return list(zip(pings, pongs, strict=True))


@scenario(
    "process_roundtrip",
    "ping-pong between a new_channel() of each side; median round trip",
    Metric("p50", "ms", higher_is_better=False),
)
async def process_roundtrip(layers: Layers, sizes: Sizes) -> float:
    n = sizes.roundtrips
    async with layers.pair() as (receiving, sending):
        [(ping, pong)] = await _ping_pairs(receiving, sending, 1)
        latencies: list[float] = []
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_echo(sending, pong, ping, n))
            tasks.create_task(_ping(receiving, pong, ping, n, latencies))
        return statistics.median(latencies) * 1000


def _group_send_scenario(members: int) -> None:
    @scenario(
        f"group_send_{members}",
        f"group_send (sending side) to {members} new_channel() members (receiving side): the "
        "call alone (nobody waiting); until every member already waiting in receive() has it; "
        "until receive() on each member in turn after the call has it",
        Metric("call", "ms", higher_is_better=False),
        Metric("waiting", "ms", higher_is_better=False),
        Metric("sequential", "ms", higher_is_better=False),
    )
    async def group_send(layers: Layers, sizes: Sizes) -> Mapping[str, float]:
        group = f"bench-group-{members}"
        calls: list[float] = []
        waiting: list[float] = []
        sequential: list[float] = []

        def check(received: list[dict[str, Any]], n: int) -> None:
            if any(message["n"] != n for message in received):
                raise ScenarioError("a member received a message from another group_send")

        async with layers.pair() as (receiving, sending):
            channels = [await receiving.new_channel() for _ in range(members)]
            # Consumers add their own channel (Channels' pattern; pub/sub layers insist).
            for channel in channels:
                await receiving.group_add(group, channel)
            await _until_received(
                lambda: sending.group_send(group, {"type": PROBE_TYPE}),
                [asyncio.create_task(receiving.receive(c)) for c in channels],
            )
            for round_ in range(sizes.group_rounds):
                # Receivers already waiting, as consumers of an interface server are.
                receivers = [asyncio.create_task(_receive(receiving, c)) for c in channels]
                try:
                    await _settle()
                    start = time.perf_counter()
                    await sending.group_send(group, _message(2 * round_))
                    received = await asyncio.gather(*receivers)
                    waiting.append(time.perf_counter() - start)
                finally:
                    await _cancel_all(receivers)
                check(received, 2 * round_)
                # Nobody waiting: the call alone, then one receive() per member in turn.
                await _settle()
                start = time.perf_counter()
                await sending.group_send(group, _message(2 * round_ + 1))
                calls.append(time.perf_counter() - start)
                received = [await _receive(receiving, c) for c in channels]
                sequential.append(time.perf_counter() - start)
                check(received, 2 * round_ + 1)
        return {
            "call": statistics.median(calls) * 1000,
            "waiting": statistics.median(waiting) * 1000,
            "sequential": statistics.median(sequential) * 1000,
        }


_group_send_scenario(100)
_group_send_scenario(1000)


@scenario(
    "pingpong_50",
    "50 process_roundtrip pairs at once; messages delivered per second",
    Metric("throughput", "msgs/s", higher_is_better=True),
)
async def pingpong_50(layers: Layers, sizes: Sizes) -> float:
    pairs, n = sizes.pairs, sizes.pair_roundtrips
    async with layers.pair() as (receiving, sending):
        channels = await _ping_pairs(receiving, sending, pairs)
        latencies: list[float] = []
        start = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for ping, pong in channels:
                tasks.create_task(_echo(sending, pong, ping, n))
                tasks.create_task(_ping(receiving, pong, ping, n, latencies))
        return pairs * n * 2 / (time.perf_counter() - start)


@scenario(
    "concurrent_senders_64",
    "one normal channel; 64 sender tasks (sending side) share the messages while 4 consumer "
    "tasks (receiving side) drain it; messages per second until all arrived, each exactly once",
    Metric("throughput", "msgs/s", higher_is_better=True),
)
async def concurrent_senders(layers: Layers, sizes: Sizes) -> float:
    n, senders = sizes.messages, sizes.senders
    channel = "bench.concurrent_senders"
    seen = bytearray(n)
    received = 0
    finished = 0.0
    all_in = asyncio.Event()

    async with layers.pair() as (receiving, sending):
        await _connect(sending, receiving, [channel])

        async def produce(first: int) -> None:
            for i in range(first, n, senders):
                await _send(sending, channel, _message(i))

        async def consume() -> None:
            nonlocal received, finished
            while received < n:
                number = (await _receive(receiving, channel))["n"]
                if seen[number]:
                    raise ScenarioError(f"message {number} was received twice")
                seen[number] = 1
                received += 1
                if received == n:
                    finished = time.perf_counter()
                    all_in.set()

        consumers = [asyncio.create_task(consume()) for _ in range(sizes.consumers)]
        try:
            start = time.perf_counter()
            async with asyncio.TaskGroup() as tasks:
                for first in range(min(senders, n)):
                    tasks.create_task(produce(first))
            while not all_in.is_set():
                before = received
                done = asyncio.create_task(all_in.wait())
                await asyncio.wait(
                    [done, *consumers], timeout=STALL_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
                )
                await _cancel_all([done])
                for task in consumers:
                    if task.done():
                        task.result()  # a consumer that failed raises here
                if received == before and not all_in.is_set():
                    raise ScenarioError(
                        f"{n - received} of {n} messages did not arrive within "
                        f"{STALL_TIMEOUT:g} s of the last send"
                    )
            return n / (finished - start)
        finally:
            await _cancel_all(consumers)
