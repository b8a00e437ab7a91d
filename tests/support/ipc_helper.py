"""Real processes holding an IPCChannelLayer, for the IPC tests (tests/layers/test_layer_ipc*.py).

Run as a script, it is one of two roles:

``agent``
    A layer driven over stdin/stdout: one JSON command per line in
    (``{"id": 1, "op": "send", "channel": "c", "message": {...}}``), one JSON reply per line
    out (``{"id": 1, "ok": result}`` or ``{"id": 1, "error": "ChannelFull: c"}``). Commands
    run concurrently, each as its own task, so a pending ``receive`` does not block a
    ``send``. ``hold`` makes the process stop dead (the whole process, the lock held) at the
    next checkpoint of that name inside a critical section, after saying so on stdout.

``crash-worker``
    Works the layer in a loop (sends, receives, group operations) and reports progress, so
    that a test can kill such workers at random moments and watch the others go on. Every
    operation is bounded: one that does not finish within ``OP_TIMEOUT`` (a deadlock) makes
    the worker say ``stuck`` and exit 3.

In messages, ``{"__blob__": n}`` stands for ``n`` bytes of a fixed pattern on the way in;
received bytes values come back as ``{"__blob__": n, "sha256": ...}``.

The test side imports :class:`Agent` and :func:`start_crash_worker` from here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

HELPER = str(Path(__file__).resolve())
OP_TIMEOUT = 5.0
CRASH_GROUP = "crash-all"
CRASH_CHANNEL = "crash.work"


def blob(size: int) -> bytes:
    pattern = bytes(range(256))
    return (pattern * (size // 256 + 1))[:size]


def _inbound(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__blob__"}:
            return blob(int(value["__blob__"]))
        return {key: _inbound(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_inbound(item) for item in value]
    return value


def _outbound(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"__blob__": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, dict):
        return {key: _outbound(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_outbound(item) for item in value]
    return value


def _say(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _layer(args: argparse.Namespace) -> Any:
    from towpath.layers.ipc import IPCChannelLayer

    config = json.loads(args.config)
    return IPCChannelLayer(prefix=args.prefix, directory=args.directory, **config)


# -- the agent role --------------------------------------------------------------------------


async def _command(layer: Any, command: dict[str, Any]) -> Any:
    op = command["op"]
    timeout = float(command.get("timeout", 10.0))
    if op == "pid":
        return os.getpid()
    if op == "new_channel":
        return await layer.new_channel(command.get("prefix", "specific"))
    if op == "send":
        await layer.send(command["channel"], _inbound(command["message"]))
        return None
    if op == "receive":
        message = await asyncio.wait_for(layer.receive(command["channel"]), timeout)
        return _outbound(message)
    if op == "receive_timed":  # [message, time.monotonic() when it returned]
        message = await asyncio.wait_for(layer.receive(command["channel"]), timeout)
        return [_outbound(message), time.monotonic()]
    if op == "receive_many":
        channel, message = await asyncio.wait_for(layer.receive_many(command["channels"]), timeout)
        return [channel, _outbound(message)]
    if op == "receive_n":  # `count` messages of one channel: the values of their `field`
        values = []
        async with asyncio.timeout(timeout):
            for _ in range(int(command["count"])):
                message = await layer.receive(command["channel"])
                values.append(_outbound(message.get(command["field"])))
        return values
    if op == "receive_until":  # the values of `field` until one equals `stop` (not included)
        values = []
        async with asyncio.timeout(timeout):
            while True:
                message = await layer.receive(command["channel"])
                if message.get(command["field"]) == command["stop"]:
                    return values
                values.append(_outbound(message.get(command["field"])))
    if op == "group_add":
        await layer.group_add(command["group"], command["channel"])
        return None
    if op == "group_discard":
        await layer.group_discard(command["group"], command["channel"])
        return None
    if op == "group_send":
        await layer.group_send(command["group"], _inbound(command["message"]))
        return None
    if op == "group_send_many":  # `count` messages with ids "<tag>:<n>", as fast as it can
        tag = command["tag"]
        for n in range(int(command["count"])):
            await layer.group_send(command["group"], {"type": "storm", "id": f"{tag}:{n}"})
        return None
    if op == "stats":
        return dataclasses.asdict(layer.stats)
    if op == "hold":
        label = command["label"]
        from towpath.layers.ipc.locks import set_checkpoint_hook

        def hold(reached: str) -> None:
            if reached == label:
                _say({"event": "holding", "label": label})
                while True:  # the whole process stops here, lock held, until it is killed
                    time.sleep(3600)

        set_checkpoint_hook(hold)
        return None
    if op == "close":
        await layer.close()
        return None
    raise ValueError(f"unknown op {op!r}")


async def _run_one(layer: Any, command: dict[str, Any]) -> None:
    try:
        result = await _command(layer, command)
    except Exception as exc:
        _say({"id": command["id"], "error": f"{type(exc).__name__}: {exc}"})
    else:
        _say({"id": command["id"], "ok": result})


async def agent(args: argparse.Namespace) -> None:
    layer = _layer(args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    _say({"event": "ready", "pid": os.getpid()})
    while line := await reader.readline():
        command = json.loads(line)
        if command["op"] == "exit":
            break
        task = asyncio.create_task(_run_one(layer, command))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await layer.close()


# -- the crash-worker role -------------------------------------------------------------------


async def crash_worker(args: argparse.Namespace) -> None:
    from towpath.layers.base import ChannelFull

    layer = _layer(args)
    me = await layer.new_channel("crash")
    rng = random.Random(args.index)
    ops = 0

    async def bounded(what: str, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, OP_TIMEOUT)
        except TimeoutError:
            _say({"event": "stuck", "op": what, "after": ops})
            os._exit(3)

    await bounded("group_add", layer.group_add(CRASH_GROUP, me))
    _say({"event": "ready", "pid": os.getpid(), "channel": me})
    while True:
        ops += 1
        choice = rng.random()
        if choice < 0.3:
            with contextlib.suppress(ChannelFull):
                await bounded("send", layer.send(CRASH_CHANNEL, {"type": "work", "n": ops}))
        elif choice < 0.5:  # a normal channel shared by every worker: maybe empty, that is fine
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(layer.receive(CRASH_CHANNEL), 0.01)
        elif choice < 0.65:
            await bounded(
                "group_send", layer.group_send(CRASH_GROUP, {"type": "all", "from": args.index})
            )
        elif choice < 0.75:
            group = f"crash-temp-{rng.randrange(4)}"
            await bounded("group_add", layer.group_add(group, me))
            await bounded("group_send", layer.group_send(group, {"type": "temp"}))
            await bounded("group_discard", layer.group_discard(group, me))
        else:
            # A round trip through this process's own inbox must always complete; group
            # messages from the others arrive on the same channel and are skipped.
            token = f"{args.index}-{ops}"
            try:
                await bounded("send-self", layer.send(me, {"type": "self", "token": token}))
            except ChannelFull:
                pass
            else:

                async def until_mine(token: str) -> None:
                    while (await layer.receive(me)).get("token") != token:
                        pass

                await bounded("receive-self", until_mine(token))
        if ops % 25 == 0:
            _say({"event": "progress", "ops": ops})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["agent", "crash-worker"])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--directory", required=True)
    parser.add_argument("--config", default="{}", help="JSON keyword arguments of the layer")
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(agent(args) if args.role == "agent" else crash_worker(args))


# -- the test side ---------------------------------------------------------------------------


class AgentError(Exception):
    """A command failed in the agent; the text is ``Class: message``."""


class Agent:
    """A running ``agent`` process and the replies it owes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = iter(range(1, 1 << 62))
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, prefix: str, directory: str, config: dict[str, Any] | None = None
    ) -> Agent:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            HELPER,
            "agent",
            "--prefix",
            prefix,
            "--directory",
            directory,
            "--config",
            json.dumps(config or {}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        agent = cls(process)
        ready = await agent.event(15.0)
        assert ready["event"] == "ready", ready
        return agent

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            reply = json.loads(line)
            if "id" not in reply:
                await self.events.put(reply)
                continue
            future = self._pending.pop(reply["id"])
            if "error" in reply:
                future.set_exception(AgentError(reply["error"]))
            else:
                future.set_result(reply["ok"])
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AgentError(f"agent {self.pid} exited"))

    def submit(self, op: str, **args: Any) -> asyncio.Future[Any]:
        """Send a command now; the future resolves with its reply."""
        assert self.process.stdin is not None
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        self.process.stdin.write(json.dumps({"id": ident, "op": op, **args}).encode() + b"\n")
        return future

    async def call(self, op: str, *, wait: float = 15.0, **args: Any) -> Any:
        return await asyncio.wait_for(self.submit(op, **args), wait)

    async def event(self, wait: float = 15.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), wait)

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        await self._reader

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                assert self.process.stdin is not None
                self.process.stdin.write(b'{"op": "exit"}\n')
                await self.process.stdin.drain()
            try:
                await asyncio.wait_for(self.process.wait(), 10.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reader


async def start_crash_worker(
    prefix: str, directory: str, index: int, config: dict[str, Any] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        HELPER,
        "crash-worker",
        "--prefix",
        prefix,
        "--directory",
        directory,
        "--index",
        str(index),
        "--config",
        json.dumps(config or {}),
        stdout=asyncio.subprocess.PIPE,
    )


if __name__ == "__main__":
    main()
