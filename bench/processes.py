"""Two processes talking over a layer: round trips and throughput across a real process boundary.

``python -m bench processes`` starts, for each layer, an *echo* process (``python -m
bench.processes --echo``) that receives on a normal channel and answers each message on the
process channel it names; this process then measures

* **round trip**: one message at a time, ``--count`` of them: p50 and p99 in ms;
* **throughput**: ``--window`` messages in flight at once, ``--count`` in all: messages/s
  (each one a send here, a receive there, a send back and a receive here).

Layers: ``ipc`` (towpath's IPC layer, no server) and ``redis`` (towpath's Redis layer on a
redis-server of its own, started on a free port). Runs are interleaved (ipc, redis, ipc, ...)
and the table shows medians of ``--repeat``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.report import format_number, markdown_table, text_table
from towpath.config import build_layer, parse_channel_layers
from towpath.layers.base import BaseChannelLayer
from towpath.testing.services import RedisServerFactory, find_redis_server

__all__ = ["add_arguments", "main"]

ECHO = "bench.echo"
LAYERS = ("ipc", "redis")


def _layer(spec: dict[str, Any]) -> BaseChannelLayer:
    return build_layer(parse_channel_layers({"default": spec}, source="bench").layer("default"))


def _spec(name: str, prefix: str, redis_url: str | None) -> dict[str, Any]:
    if name == "ipc":
        return {
            "BACKEND": "towpath.layers.ipc.IPCChannelLayer",
            "CONFIG": {"prefix": prefix, "capacity": 100_000},
        }
    return {
        "BACKEND": "towpath.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [redis_url], "prefix": prefix, "capacity": 100_000},
    }


async def _echo(spec: dict[str, Any]) -> None:
    """The other process: answer every message until told to stop."""
    layer = _layer(spec)
    print("ready", flush=True)
    try:
        while True:
            message = await layer.receive(ECHO)
            if message.get("stop"):
                return
            await layer.send(message["reply"], {"type": "pong", "n": message["n"]})
    finally:
        await layer.close()


async def _measure(spec: dict[str, Any], count: int, window: int) -> dict[str, float]:
    layer = _layer(spec)
    try:
        reply = await layer.new_channel()
        rtts = []
        for n in range(count):
            started = time.perf_counter()
            await layer.send(ECHO, {"type": "ping", "n": n, "reply": reply})
            await layer.receive(reply)
            rtts.append(time.perf_counter() - started)
        rtts.sort()
        started = time.perf_counter()
        sent = received = 0
        while sent < min(window, count):
            await layer.send(ECHO, {"type": "ping", "n": sent, "reply": reply})
            sent += 1
        while received < count:
            await layer.receive(reply)
            received += 1
            if sent < count:
                await layer.send(ECHO, {"type": "ping", "n": sent, "reply": reply})
                sent += 1
        elapsed = time.perf_counter() - started
        await layer.send(ECHO, {"type": "stop", "stop": True})
        return {
            "p50_ms": rtts[len(rtts) // 2] * 1e3,
            "p99_ms": rtts[int(len(rtts) * 0.99)] * 1e3,
            "throughput": count / elapsed,
        }
    finally:
        await layer.close()


def _run_one(
    name: str, run: int, redis_url: str | None, count: int, window: int
) -> dict[str, float]:
    spec = _spec(name, f"benchp{os.getpid()}r{run}", redis_url)
    echo = subprocess.Popen(
        [sys.executable, "-m", "bench.processes", "--echo", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert echo.stdout is not None
        if echo.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the echo process for {name} did not start")
        return asyncio.run(_measure(spec, count, window))
    finally:
        try:
            echo.wait(timeout=10)
        except subprocess.TimeoutExpired:
            echo.kill()
            echo.wait()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=5000, help="messages per measure")
    parser.add_argument("--window", type=int, default=50, help="messages in flight (throughput)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--echo", metavar="SPEC", help=argparse.SUPPRESS)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    if args.echo:
        asyncio.run(_echo(json.loads(args.echo)))
        return 0
    binary = find_redis_server()
    if binary is None:
        parser.error("redis-server is not installed (the redis layer needs one)")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in LAYERS}
    with RedisServerFactory(binary) as factory:
        redis_url = factory().url
        for run in range(args.repeat):
            for name in LAYERS:
                results[name].append(_run_one(name, run, redis_url, args.count, args.window))
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in results.items()
    }
    ipc, redis = medians["ipc"], medians["redis"]

    def row(measure: str, key: str, unit: str, lower: bool) -> list[str]:
        mine, theirs = ipc[key], redis[key]
        ratio = f"{theirs / mine:.2f}x lower" if lower else f"{mine / theirs:.2f}x"
        return [measure, unit, format_number(mine, unit), format_number(theirs, unit), ratio]

    rows = [
        row("round trip p50", "p50_ms", "ms", True),
        row("round trip p99", "p99_ms", "ms", True),
        row(f"throughput, {args.window} in flight", "throughput", "msgs/s", False),
    ]
    header = ["measure", "unit", "ipc", "redis", "ipc vs redis"]
    table = markdown_table(header, rows) if args.markdown else text_table(header, rows)
    print(table)
    print(
        f"\nmedians of {args.repeat} interleaved runs; two processes each (this one and an echo "
        f"process); {args.count} messages per measure"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"suite": "processes", "runs": results, "medians": medians}, out, indent=2)
    return 0


if __name__ == "__main__":  # the echo process
    echo_parser = argparse.ArgumentParser()
    add_arguments(echo_parser)
    sys.exit(main(echo_parser.parse_args(), echo_parser, sys.argv[1:]))
