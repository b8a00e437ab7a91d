"""A five-minute tour of a channel layer, run by `make run`.

Two "interface servers" and a "worker" share one in-memory layer: the worker receives requests
on a normal channel and answers on each request's reply channel, and a chat room is a group that
every connection joins. Swap the layer for `towpath.layers.redis.RedisChannelLayer` and the same
code runs across processes and machines.
"""

from __future__ import annotations

import asyncio

from towpath.layers import (
    BaseChannelLayer,
    InMemoryChannelLayer,
    get_channel_layer,
    register_channel_layer,
)


async def worker(layer: BaseChannelLayer, count: int) -> None:
    for _ in range(count):
        message = await layer.receive("http.request")
        name = message["body"].decode() or "world"
        await layer.send(
            message["reply_channel"],
            {"type": "http.response.body", "body": f"Hello, {name}!".encode()},
        )


async def client(layer: BaseChannelLayer, name: str) -> str:
    reply_channel = await layer.new_channel("interface")
    await layer.send(
        "http.request",
        {"type": "http.request", "reply_channel": reply_channel, "body": name.encode()},
    )
    response = await layer.receive(reply_channel)
    return str(response["body"].decode())


async def chat(layer: BaseChannelLayer) -> None:
    alice, bob = await layer.new_channel("ws"), await layer.new_channel("ws")
    for channel in (alice, bob):
        await layer.group_add("room-lobby", channel)
    await layer.group_send("room-lobby", {"type": "chat.message", "text": "hi all"})
    for who, channel in (("alice", alice), ("bob", bob)):
        message = await layer.receive(channel)
        print(f"  {who} got {message['type']}: {message['text']!r}")


async def main() -> None:
    register_channel_layer("default", InMemoryChannelLayer())
    layer = get_channel_layer()
    print(f"layer: {layer!r}")
    print("request/response through the layer:")
    names = ["ada", "grace", "linus"]
    serving = asyncio.create_task(worker(layer, len(names)))
    for reply in await asyncio.gather(*(client(layer, name) for name in names)):
        print(f"  {reply}")
    await serving
    print("a group_send to a chat room:")
    await chat(layer)
    await layer.close()


if __name__ == "__main__":
    asyncio.run(main())
