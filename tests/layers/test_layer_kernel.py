"""The layers' shared kernel: options checked once, per-loop state, outage log, back-off."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from towpath.layers.base import INBOX_CAPACITY_FACTOR, InvalidChannelLayerError, LayerOptions
from towpath.layers.kernel import LoopStates, OutageLog, reconnect_backoff
from towpath.layers.outages import RECONNECT_BACKOFF_MAX

pytestmark = pytest.mark.timeout(10)


def _layer_classes() -> list[Any]:
    from towpath.layers.ipc import IPCChannelLayer
    from towpath.layers.rabbitmq import RabbitMQChannelLayer
    from towpath.layers.redis import RedisChannelLayer

    return [IPCChannelLayer, RedisChannelLayer, RabbitMQChannelLayer]


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "10"])
@pytest.mark.parametrize("index", range(3))
def test_every_layer_refuses_a_bad_inbox_capacity_the_same_way(index: int, bad: object) -> None:
    layer_class = _layer_classes()[index]
    with pytest.raises(InvalidChannelLayerError, match=r"inbox_capacity must be a positive int"):
        layer_class(inbox_capacity=bad)


@pytest.mark.parametrize("index", range(3))
def test_inbox_capacity_defaults_to_a_multiple_of_capacity(index: int) -> None:
    layer = _layer_classes()[index](capacity=7)
    assert layer.inbox_capacity == INBOX_CAPACITY_FACTOR * 7
    assert _layer_classes()[index](inbox_capacity=3).inbox_capacity == 3


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"expiry": 0}, "expiry"),
        ({"group_expiry": -1}, "group_expiry"),
        ({"capacity": 0}, "capacity"),
        ({"capacity": True}, "capacity"),
        ({"channel_capacity": {"x.*": 0}}, r"channel_capacity\['x\.\*'\]"),
    ],
)
def test_options_name_the_bad_one(options: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidChannelLayerError, match=names):
        LayerOptions(**options)


def test_options_are_frozen_and_coerce_seconds() -> None:
    options = LayerOptions(expiry=5)
    assert options.expiry == 5.0 and isinstance(options.expiry, float)
    with pytest.raises(AttributeError):
        options.expiry = 1  # type: ignore[misc]


class _Owner:
    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


def test_loop_states_one_per_loop_and_closed_with_it() -> None:
    owner = _Owner()
    made: list[asyncio.AbstractEventLoop] = []

    def make(loop: asyncio.AbstractEventLoop) -> list[asyncio.AbstractEventLoop]:
        made.append(loop)
        return [loop]

    states: LoopStates[list[asyncio.AbstractEventLoop]] = LoopStates(owner, make)

    async def use() -> list[asyncio.AbstractEventLoop]:
        first = states.current()
        assert states.current() is first  # made once per loop
        assert states.get() is first
        return first

    one = asyncio.new_event_loop()
    two = asyncio.new_event_loop()
    try:
        a = one.run_until_complete(use())
        b = two.run_until_complete(use())
        assert a == [one] and b == [two] and made == [one, two]
        assert len(states) == 2 and set(states) == {one, two}
    finally:
        one.close()
    assert owner.closed == 1  # closing the loop closed the layer
    states.forget_closed()
    assert list(states) == [two]
    try:

        async def drop() -> None:
            assert states.pop() is b
            assert states.get() is None
            assert states.current() is not b  # a fresh one, not the cached one

        two.run_until_complete(drop())
    finally:
        two.close()


def test_reconnect_backoff_draws_between_half_and_whole_of_a_doubling_pause() -> None:
    backoff = reconnect_backoff()
    nominal = 0.05
    for _ in range(10):
        pause = backoff.pause()
        assert nominal / 2 <= pause <= nominal
        nominal = min(nominal * 2, RECONNECT_BACKOFF_MAX)


def test_outage_log_is_two_lines_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    log = OutageLog("db:6379", "Redis", logging.getLogger("towpath.layers.redis"))
    caplog.set_level(logging.INFO, "towpath.layers.redis")
    log.failed(OSError("refused"), "reader")
    log.failed(OSError("refused"))
    assert log.since is not None and log.count == 1
    log.recovered()
    log.recovered()
    assert log.since is None and log.count == 1
    assert [r.getMessage() for r in caplog.records] == [
        "Redis db:6379 unreachable (reader): refused; retrying with back-off",
        caplog.records[1].getMessage(),
    ]
    assert caplog.records[1].getMessage().startswith("Redis db:6379 reachable again after ")
