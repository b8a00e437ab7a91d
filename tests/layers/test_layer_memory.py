"""The conformance suite on the in-memory layer, plus what only this layer promises."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from towpath.layers import InMemoryChannelLayer
from towpath.testing import ChannelLayerConformance


class TestInMemoryConformance(ChannelLayerConformance):
    shared_between_instances = False

    async def make_layer(self, **config: Any) -> InMemoryChannelLayer:
        return InMemoryChannelLayer(**config)


async def test_channel_capacity_option_does_not_crash() -> None:
    # channels 4.3.2's in-memory layer raises as soon as channel_capacity is set.
    layer = InMemoryChannelLayer(channel_capacity={"http.*": 10, "websocket.*": 5})
    await layer.send("http.request", {"type": "x"})
    assert layer.get_capacity("http.request") == 10
    assert layer.get_capacity("websocket.receive") == 5
    assert layer.get_capacity("other") == 100


async def test_unread_channels_do_not_pile_up() -> None:
    layer = InMemoryChannelLayer(expiry=0.05)
    for n in range(50):
        await layer.send(f"nobody-reads-{n}", {"type": "x"})
    await asyncio.sleep(0.1)
    await layer.send("trigger", {"type": "x"})  # a send past the expiry sweeps the rest
    assert "channels=1 " in repr(layer)
    assert layer.stats.expired == 50


async def test_woken_then_cancelled_receiver_hands_the_message_on() -> None:
    layer = InMemoryChannelLayer()
    first = asyncio.ensure_future(layer.receive("relay"))
    second = asyncio.ensure_future(layer.receive("relay"))
    await asyncio.sleep(0)
    await layer.send("relay", {"type": "only"})
    first.cancel()  # woken by the send, cancelled before it could take the message
    assert await asyncio.wait_for(second, 5) == {"type": "only"}
    assert first.cancelled()


async def test_full_send_is_counted() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    await layer.send("c", {"type": "x"})
    with pytest.raises(Exception, match="c"):
        await layer.send("c", {"type": "x"})
    assert layer.stats.full == 1
