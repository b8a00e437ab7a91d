"""Channel-layer scenarios: a registry of async functions that each measure one thing.

A scenario takes a :data:`LayerFactory` (a no-argument callable returning a fresh layer) and
the run's :class:`Sizes`, and returns its figures: a ``float`` for a one-metric scenario, or a
``{metric key: float}`` dict when it reports several (``group_send_*`` reports ``call`` and
``delivered``). Only the Channels 2+ layer API is used (``send``, ``receive``, ``new_channel``,
``group_add``, ``group_send``, ``flush``, ``close``), so any layer class can be measured.

Adding a scenario::

    @scenario("my_case", "what it measures", Metric("throughput", "msgs/s", higher_is_better=True))
    async def my_case(factory: LayerFactory, sizes: Sizes) -> float:
        async with open_layer(factory) as layer:
            ...
            return figure
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeAlias

__all__ = [
    "SCENARIOS",
    "LayerFactory",
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
ScenarioFunc: TypeAlias = Callable[[LayerFactory, "Sizes"], Awaitable[Figures]]

#: Seconds allowed for a layer's flush()/close() at the end of a run.
CLOSE_TIMEOUT = 10.0


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

    messages: int = 20_000  # send_receive: messages through one channel
    roundtrips: int = 2_000  # process_roundtrip: ping-pongs on one pair of channels
    group_rounds: int = 5  # group_send_*: rounds per run (median of them)
    pairs: int = 50  # pingpong_50: concurrent ping-pong pairs (not scaled)
    pair_roundtrips: int = 200  # pingpong_50: ping-pongs per pair

    def scaled(self, factor: float) -> Sizes:
        def scale(n: int) -> int:
            return max(1, round(n * factor))

        return Sizes(
            messages=scale(self.messages),
            roundtrips=scale(self.roundtrips),
            group_rounds=self.group_rounds,
            pairs=self.pairs,
            pair_roundtrips=scale(self.pair_roundtrips),
        )


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
        flush = getattr(layer, "flush", None)
        if flush is not None:
            await flush()
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


async def _settle() -> None:
    """Let freshly created receiver tasks reach their first wait (a networked layer needs a
    round trip or so to be listening)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0.005)


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- scenarios ---------------------------------------------------------------------------------


@scenario(
    "send_receive",
    "one normal channel; a producer task and a consumer task run concurrently",
    Metric("throughput", "msgs/s", higher_is_better=True),
)
async def send_receive(factory: LayerFactory, sizes: Sizes) -> float:
    n = sizes.messages
    channel = "bench.send_receive"
    async with open_layer(factory) as layer:

        async def produce() -> None:
            for i in range(n):
                await _send(layer, channel, _message(i))

        async def consume() -> None:
            for i in range(n):
                message = await layer.receive(channel)
                if message["n"] != i:
                    raise ScenarioError(f"expected message {i}, received {message['n']}")

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(consume())
            tasks.create_task(produce())
        return n / (time.perf_counter() - start)


async def _echo(layer: Any, inbox: str, outbox: str, count: int) -> None:
    for _ in range(count):
        await layer.send(outbox, await layer.receive(inbox))


async def _ping(layer: Any, outbox: str, inbox: str, count: int, latencies: list[float]) -> None:
    for i in range(count):
        start = time.perf_counter()
        await layer.send(outbox, _message(i))
        reply = await layer.receive(inbox)
        latencies.append(time.perf_counter() - start)
        if reply["n"] != i:
            raise ScenarioError(f"expected reply {i}, received {reply['n']}")


@scenario(
    "process_roundtrip",
    "ping-pong between two new_channel() channels; median round trip",
    Metric("p50", "ms", higher_is_better=False),
)
async def process_roundtrip(factory: LayerFactory, sizes: Sizes) -> float:
    n = sizes.roundtrips
    async with open_layer(factory) as layer:
        ping, pong = await layer.new_channel(), await layer.new_channel()
        latencies: list[float] = []
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_echo(layer, pong, ping, n))
            tasks.create_task(_ping(layer, pong, ping, n, latencies))
        return statistics.median(latencies) * 1000


def _group_send_scenario(members: int) -> None:
    @scenario(
        f"group_send_{members}",
        f"group_send to {members} new_channel() members: the call alone (nobody waiting); until "
        "every member already waiting in receive() has it; until receive() on each member in "
        "turn after the call has it",
        Metric("call", "ms", higher_is_better=False),
        Metric("waiting", "ms", higher_is_better=False),
        Metric("sequential", "ms", higher_is_better=False),
    )
    async def group_send(factory: LayerFactory, sizes: Sizes) -> Mapping[str, float]:
        group = f"bench-group-{members}"
        calls: list[float] = []
        waiting: list[float] = []
        sequential: list[float] = []

        def check(received: list[dict[str, Any]], n: int) -> None:
            if any(message["n"] != n for message in received):
                raise ScenarioError("a member received a message from another group_send")

        async with open_layer(factory) as layer:
            channels = [await layer.new_channel() for _ in range(members)]
            for channel in channels:
                await layer.group_add(group, channel)
            for round_ in range(sizes.group_rounds):
                # Receivers already waiting, as consumers of an interface server are.
                receivers = [asyncio.create_task(layer.receive(c)) for c in channels]
                try:
                    await _settle()
                    start = time.perf_counter()
                    await layer.group_send(group, _message(2 * round_))
                    received = await asyncio.gather(*receivers)
                    waiting.append(time.perf_counter() - start)
                finally:
                    await _cancel_all(receivers)
                check(received, 2 * round_)
                # Nobody waiting: the call alone, then one receive() per member in turn.
                await _settle()
                start = time.perf_counter()
                await layer.group_send(group, _message(2 * round_ + 1))
                calls.append(time.perf_counter() - start)
                received = [await layer.receive(c) for c in channels]
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
    "50 ping-pong pairs of new_channel() channels at once; messages delivered per second",
    Metric("throughput", "msgs/s", higher_is_better=True),
)
async def pingpong_50(factory: LayerFactory, sizes: Sizes) -> float:
    pairs, n = sizes.pairs, sizes.pair_roundtrips
    async with open_layer(factory) as layer:
        channels = [(await layer.new_channel(), await layer.new_channel()) for _ in range(pairs)]
        latencies: list[float] = []
        start = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for ping, pong in channels:
                tasks.create_task(_echo(layer, pong, ping, n))
                tasks.create_task(_ping(layer, pong, ping, n, latencies))
        return pairs * n * 2 / (time.perf_counter() - start)
