"""towpath.layers.backoff: the shared wait for room in a full channel."""

from __future__ import annotations

import pytest

from towpath.layers.backoff import Backoff, send_when_room
from towpath.layers.base import ChannelFull
from towpath.layers.memory import InMemoryChannelLayer

pytestmark = pytest.mark.timeout(10)


def test_pauses_double_up_to_the_cap_with_jitter() -> None:
    draws = iter([0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5])
    backoff = Backoff(0.01, 0.04, rand=lambda: next(draws))
    pauses = [backoff.pause() for _ in range(5)]
    # nominal 0.01, 0.02, 0.04, 0.04, 0.04; each between half and 1.5 times that
    assert pauses == pytest.approx([0.005, 0.03, 0.04, 0.04, 0.04])
    assert backoff.pause(at_most=0.001) == 0.001
    assert backoff.pause(at_most=-1.0) == 0.0


async def test_a_full_channel_is_waited_for_until_its_reader_takes_one() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    await layer.send("chan", {"type": "first"})
    taken: list[str] = []

    async def sleep(seconds: float) -> None:  # the reader catches up during the 3rd pause
        if len(pauses) == 2:
            taken.append((await layer.receive("chan"))["type"])
        pauses.append(seconds)

    pauses: list[float] = []
    sent = await send_when_room(layer.send, "chan", {"type": "second"}, lambda: True, sleep=sleep)
    assert sent and taken == ["first"] and len(pauses) == 3
    assert (await layer.receive("chan"))["type"] == "second"


async def test_keep_trying_false_gives_up_without_sending() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    await layer.send("chan", {"type": "first"})
    attempts = iter([True, True, False])

    async def sleep(seconds: float) -> None:
        pass

    sent = await send_when_room(
        layer.send, "chan", {"type": "second"}, lambda: next(attempts), sleep=sleep
    )
    assert not sent
    with pytest.raises(ChannelFull):
        await layer.send("chan", {"type": "third"})
    assert (await layer.receive("chan"))["type"] == "first"
    await layer.send("chan", {"type": "third"})  # the second never went in
    assert (await layer.receive("chan"))["type"] == "third"
