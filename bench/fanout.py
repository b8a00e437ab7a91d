"""Fan-out to thousands of WebSockets: one event to a whole group, towpath beside Channels 4.

``python -m bench fanout`` opens ``--clients`` WebSocket clients (2,000) to one app whose every
client joins the group ``fanout`` (``bench/fanout_app.py``), then a publisher process sends one
event to the group ``R`` times a second (each of ``--rates``, default 5, 10 and 20) for
``--duration`` seconds (20). Each set-up runs on its own ``redis-server`` (started on a free
port) and serves the clients from ``--servers`` (2) processes, client ``i`` on server
``i mod 2``:

* ``towpath-workers``: 2 ``towpath serve`` + ``--workers`` (2) ``towpath runworker`` on the
  Redis layer; each client's consumer, in a worker, joins the group and forwards each event
  with ``self.send`` (consumers in workers, the Channels way);
* ``towpath-members``: the same processes; the connections' **reply channels** are the
  group's members, so the publisher's ``group_send`` goes straight to the servers, no worker in
  the path (the worker only accepts, joins and leaves);
* ``uvicorn-channels``, ``daphne-channels``: 2 uvicorn / daphne processes serving the same
  consumer as a Django Channels 4 app over channels_redis' core layer;
* ``daphne-pubsub``: daphne with channels_redis' Pub/Sub layer.

The load (``bench/fanout_load.py``) runs in ``--client-procs`` (2) processes of many clients
each (uvloop), so the load generator is not the bottleneck (its CPU is a column). Every event
carries its sequence number and send time; each client records its latency and gaps. A client
never reconnects. After the last event the clients get up to ``--drain`` s to receive what is
on its way, then all close at once and the group's members left in Redis are counted for up to
10 s (ZCARD of ``asgi:group:fanout``: the key of towpath's Redis layer and of channels_redis'
core layer; the Pub/Sub layer keeps no members in Redis).

Columns: offered deliveries/s (clients x rate), delivered/s (deliveries received / first send
to last receipt), lost (deliveries missed by clients the server never closed), clients closed
by the server and their close codes, memberships left, latency p50/p99 (send to receipt), CPU %
of one core of the servers, workers, redis-server and clients over publish + drain, and peak
RSS of the servers and the workers. Scenario switches, each run as its own row:

* ``--pause-server S``: server 0 is stopped (SIGSTOP) for S s at half time;
* ``--mass-disconnect``: at half time 1,000 clients (at most half; of those still open) close
  at once; the memberships of those clients still in Redis 10 s later are counted;
* ``--stalled-client S``: at a quarter of the time client 0 stops reading for S s (its receive
  buffer is 4 KiB, so the stall reaches the server); did it get its events after, or a close?
* ``--kill-worker``: at a third of the time worker 0 (about half the connections) is killed
  (SIGKILL); its connections are re-dispatched (a second ``ready`` frame shows a resumed
  consumer) or closed (1013: refused). Channels has no workers: its server 0 is killed.

Loopback only. The machine's load average is in the notes: on a shared machine the figures move.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import os
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.fanout_report import render
from bench.fanout_stack import (
    ANSWER_TIMEOUT,
    SETUPS,
    Load,
    Setup,
    Stack,
    kill_loads,
    members,
    members_left,
)
from bench.procs import _cpu_seconds, _rss_kib
from bench.restarts import RunError, missing, run_reported
from towpath.testing.services import RedisServer, RedisServerError

__all__ = ["SETUPS", "Setup", "add_arguments", "main", "run_one"]

MASS_DISCONNECT = 1000

# -- one run -----------------------------------------------------------------------------------


class Meter:
    """CPU of each role over a window, and each role's peak RSS (sampled every 0.5 s)."""

    def __init__(self, stack: Stack, loads: Sequence[Load], redis_pid: int) -> None:
        self.stack = stack
        self.loads = loads
        self.redis_pid = redis_pid
        self.peaks = {"serve": 0, "worker": 0}
        self.cpu0 = self._cpu()
        self.began = time.monotonic()
        self.task = asyncio.create_task(self._sample())

    def _cpu(self) -> dict[str, float]:
        return {
            "serve": sum(p.cpu_seconds() for p in self.stack.servers),
            "worker": sum(p.cpu_seconds() for p in self.stack.workers),
            "redis": _cpu_seconds([self.redis_pid]),
            "client": sum(load.cpu_seconds() for load in self.loads[1:]),
            "publisher": self.loads[0].cpu_seconds(),
        }

    async def _sample(self) -> None:
        while True:
            for role, kib in _rss_by_role(self.stack).items():
                self.peaks[role] = max(self.peaks[role], kib)
            await asyncio.sleep(0.5)  # the sampling period

    async def figures(self) -> dict[str, float]:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        wall = time.monotonic() - self.began
        cpu = self._cpu()
        figures = {f"{role}_cpu_pct": 100 * (cpu[role] - self.cpu0[role]) / wall for role in cpu}
        figures["stack_cpu_s"] = cpu["serve"] - self.cpu0["serve"] + cpu["worker"]
        figures["stack_cpu_s"] -= self.cpu0["worker"]
        figures.update({f"{role}_rss_mib": kib / 1024 for role, kib in self.peaks.items()})
        return figures


def _rss_by_role(stack: Stack) -> dict[str, int]:
    """KiB of RSS of all the servers, and of all the workers, together."""
    return {
        "serve": _rss_kib([p.pid for p in stack.servers if p.pid]),
        "worker": _rss_kib([p.pid for p in stack.workers if p.pid]),
    }


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def _scenario(
    scenario: str, stack: Stack, clients: Sequence[Load], sizes: Sequence[int], options: Any
) -> dict[str, Any]:
    """The scenario's event, at its time after the first event; what it saw."""
    duration, redis_url = options.duration, stack.redis.url
    began = time.monotonic()

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, began + fraction * duration - time.monotonic()))  # schedule

    if scenario == "pause-server":
        await at(0.5)
        stack.servers[0].send_signal(signal.SIGSTOP)
        await asyncio.sleep(options.pause_server)  # the scenario: a server stopped this long
        stack.servers[0].send_signal(signal.SIGCONT)
        return {
            "paused": stack.servers[0].name,
            "seconds": options.pause_server,
            "at_s": duration / 2,
        }
    if scenario == "stalled-client":
        await at(0.25)
        await clients[0].ask(f"stall {options.stalled_client}")
        return {"client": 0, "seconds": options.stalled_client, "at_s": duration / 4}
    if scenario == "mass-disconnect":
        await at(0.5)
        leaving = _split(min(MASS_DISCONNECT, sum(sizes) // 2), len(clients))
        answers = await asyncio.gather(
            *(c.ask(f"leave {k}") for c, k in zip(clients, leaving, strict=True))
        )
        leavers = {member for answer in answers for member in answer["left"]}
        details: dict[str, Any] = {
            "left": len(leavers),
            "at_s": duration / 2,
            "close_seconds": max(answer["seconds"] for answer in answers),
        }
        if stack.setup.members_key is not None:
            left, zero = await members_left(redis_url, stack.setup.members_key, leavers)
            details.update(memberships_left=left, memberships_gone_after_s=zero)
        return details
    if scenario == "kill-worker":
        await at(1 / 3)
        victim = stack.workers[0] if stack.workers else stack.servers[0]
        seen = [len(serve.lines) for serve in stack.servers]
        await victim.stop(signal.SIGKILL)
        details = {"killed": victim.name, "at_s": round(duration / 3, 1)}
        if stack.workers:  # each towpath serve says when it has declared the worker gone
            try:
                async with asyncio.timeout(30):
                    said = await asyncio.gather(
                        *(
                            s.wait_for("it is gone", n)
                            for s, n in zip(stack.servers, seen, strict=True)
                        )
                    )
                details["serve_said"] = [line.partition("WARNING")[2].strip() for line in said]
                details["declared_gone_after_s"] = round(time.monotonic() - began, 1)
            except TimeoutError:
                details["serve_said"] = ["not declared gone within 30 s"]
        return details
    return {}


async def run_one(
    setup: Setup, rate: float, scenario: str, options: argparse.Namespace
) -> dict[str, Any]:
    """One row: a fresh redis-server, the stack, the clients, the publisher; its figures."""
    try:
        redis = RedisServer().start()
    except RedisServerError as exc:
        raise RunError(str(exc)) from exc
    with redis, tempfile.TemporaryDirectory(prefix="towpath-fanout-") as directory:
        stack = Stack(setup, redis, options)
        stack.extra["run"] = f"{setup.name}-{rate:g}-{scenario}"
        loads: list[Load] = []
        try:
            await stack.start(Path(directory))
            figures = await _measure(stack, rate, scenario, options, loads, Path(directory))
        finally:
            for load in loads:
                await load.stop()
            await stack.close()
    figures.update(stack.extra)
    return figures


async def _measure(
    stack: Stack,
    rate: float,
    scenario: str,
    options: argparse.Namespace,
    loads: list[Load],
    directory: Path,
) -> dict[str, Any]:
    setup, duration = stack.setup, options.duration
    load_start = [round(x, 2) for x in os.getloadavg()]
    publisher = Load(
        "publisher",
        [
            *("publish", "--backend", setup.publisher, "--redis", stack.redis.url),
            *("--rate", f"{rate:g}", "--duration", f"{duration:g}", "--kind", setup.kind),
            *("--pad", str(options.pad)),
        ],
    )
    loads.append(publisher)
    await publisher.start()
    await publisher.answer()
    sizes = _split(options.clients, options.client_procs)
    first = 0
    for index, size in enumerate(sizes):
        argv = [
            *("clients", "--urls", ",".join(stack.urls), "--first", str(first)),
            *("--count", str(size), "--latencies", str(directory / f"latencies-{index}")),
        ]
        if scenario == "stalled-client" and index == 0:
            argv.append("--stall-client")
        loads.append(Load(f"clients {index}", argv))
        first += size
    clients = loads[1:]
    idle = _rss_by_role(stack)
    await asyncio.gather(*(load.start() for load in clients))
    opened = await asyncio.gather(*(c.answer(within=60 + size / 10) for c in clients))
    ready = sum(answer["ready"] for answer in opened)
    # what each open, idle connection costs the servers (and the workers that hold them)
    per_connection = {
        f"{role}_kib_per_connection": (kib - idle[role]) / ready
        for role, kib in _rss_by_role(stack).items()
        if ready and kib
    }
    errors: Counter[str] = Counter()
    for answer in opened:
        errors.update(answer["errors"])
    if ready == 0:
        raise RunError(f"no client connected: {dict(errors)}")
    members_at_start = None
    if setup.members_key is not None:
        members_at_start = len(await members(stack.redis.url, setup.members_key))
    meter = Meter(stack, loads, stack.redis.pid or 0)
    publisher.tell("go")
    events = asyncio.create_task(_scenario(scenario, stack, clients, sizes, options))
    published = await publisher.answer(within=3 * duration + ANSWER_TIMEOUT)
    details = await events
    count = published["published"]
    drained = await asyncio.gather(
        *(c.ask(f"drain {count - 1} {options.drain:g}", options.drain + 30) for c in clients)
    )
    figures: dict[str, Any] = dict(await meter.figures())
    reports = await asyncio.gather(*(c.ask(f"report {count}") for c in clients))
    await asyncio.gather(*(c.ask("close", within=ANSWER_TIMEOUT) for c in clients))
    left = zero = None
    if setup.members_key is not None:
        left, zero = await members_left(stack.redis.url, setup.members_key, None)
    latencies: array.array[float] = array.array("d")
    for index in range(len(clients)):
        latencies.frombytes((directory / f"latencies-{index}").read_bytes())
    per_client = [client for report in reports for client in report["clients"]]
    figures.update(
        _figures(per_client, sorted(latencies), published, rate),
        setup=setup.name,
        rate=rate,
        scenario=scenario,
        clients=options.clients,
        ready=ready,
        connect_errors=dict(errors),
        connect_retries=sum(answer["retries"] for answer in opened),
        connect_seconds=max(answer["seconds"] for answer in opened),
        members_at_start=members_at_start,
        memberships_left=left,
        memberships_gone_after_s=zero,
        drained=all(answer["drained"] for answer in drained),
        publisher=published,
        details=details,
        **per_connection,
        load_average=[load_start, [round(x, 2) for x in os.getloadavg()]],
    )
    if figures["delivered"]:
        figures["stack_cpu_us_per_delivery"] = 1e6 * figures["stack_cpu_s"] / figures["delivered"]
    if scenario == "stalled-client":
        details.update(next((c for c in per_client if c["index"] == 0), {}))
    return figures


def _figures(
    clients: list[dict[str, Any]], latencies: list[float], published: dict[str, Any], rate: float
) -> dict[str, Any]:
    ready = [c for c in clients if c["ready"]]
    stayed = [c for c in ready if c["close_code"] is None and not c["left"]]
    closed = [c for c in ready if c["close_code"] is not None]
    delivered = sum(c["received"] for c in ready)
    last_ns = max((c["last_ns"] for c in ready), default=0)
    # first send to last receipt, plus the last event's period: N x rate when all arrive
    span = (last_ns - published["first_ns"]) / 1e9 + 1 / rate
    codes = Counter(str(c["close_code"]) for c in closed)

    def percentile(q: float) -> float:
        return latencies[min(len(latencies) - 1, round(q * (len(latencies) - 1)))]

    return {
        "published": published["published"],
        "offered_per_s": len(ready) * rate,
        "delivered": delivered,
        "delivered_per_s": delivered / span if span > 0 else 0.0,
        "lost": sum(c["missing"] for c in stayed),
        "stayed": len(stayed),
        "missed_by_closed": sum(c["missing"] for c in closed),
        "closed": len(closed),
        "close_codes": dict(codes.most_common()),
        "resumed": sum(c["ready"] > 1 for c in ready),
        "duplicates": sum(c["duplicates"] for c in ready),
        "out_of_order": sum(c["out_of_order"] for c in ready),
        "p50_ms": percentile(0.50) if latencies else float("nan"),
        "p99_ms": percentile(0.99) if latencies else float("nan"),
        "max_ms": latencies[-1] if latencies else float("nan"),
    }


# -- command line ------------------------------------------------------------------------------

SWITCHES = ("pause_server", "mass_disconnect", "stalled_client", "kill_worker")


# fmt: off
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--clients", type=int, default=2000, help="WebSocket clients, all in one group (2000)")
    add("--rates", default="5,10,20", help="events per second to the group, comma-separated")
    add("--duration", type=float, default=20.0, help="seconds of publishing per row (20)")
    add("--setups", default=",".join(SETUPS), help=f"comma-separated: {', '.join(SETUPS)}")
    add("--pause-server", type=float, metavar="S", help="scenario: SIGSTOP server 0 for S s")
    add("--mass-disconnect", action="store_true",
        help=f"scenario: {MASS_DISCONNECT:,} clients (at most half) close at once")
    add("--stalled-client", type=float, metavar="S",
        help="scenario: client 0 stops reading for S s")
    add("--kill-worker", action="store_true", help="scenario: SIGKILL worker 0 (or server 0)")
    add("--servers", type=int, default=2, help="server processes per set-up (2)")
    add("--workers", type=int, default=2, help="towpath runworker processes (2)")
    add("--client-procs", type=int, default=2, help="client processes (2)")
    add("--drain", type=float, default=60.0,
        help="at most this many seconds for the last events to arrive; the drain ends "
        "sooner once every open client has the last event or none got one for 3 s (60)")
    add("--pad", type=int, default=64, help="bytes of padding in each event (64)")
    add("--json", metavar="FILE", help="also write every row's figures here")
    add("--markdown", action="store_true", help="print a Markdown table too")
    add("--logs", metavar="DIR", help="write every server's and worker's output here")
    add("--quiet", action="store_true", help="no per-row progress on stderr")
# fmt: on


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Setup]:
    names = [n for n in args.setups.split(",") if n]
    unknown = [n for n in names if n not in SETUPS]
    if unknown:
        parser.error(f"unknown set-up: {', '.join(unknown)} (known: {', '.join(SETUPS)})")
    try:
        args.rate_list = [float(r) for r in args.rates.split(",") if r]
    except ValueError:
        parser.error(f"--rates must be numbers separated by commas, not {args.rates!r}")
    if not args.rate_list or min(args.rate_list) <= 0 or args.duration <= 0:
        parser.error("--rates and --duration must be positive")
    if min(args.clients, args.servers, args.workers, args.client_procs) < 1:
        parser.error("--clients, --servers, --workers and --client-procs must be positive")
    if args.client_procs > args.clients:
        parser.error("--client-procs cannot exceed --clients")
    return [SETUPS[n] for n in names]


def main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    from bench.restarts import package_versions

    setups = _check(args, parser)
    scenarios = [s.replace("_", "-") for s in SWITCHES if getattr(args, s)] or ["steady"]
    results: dict[str, Any] = {
        "suite": "fanout",
        "meta": {
            "command": "python -m bench " + shlex.join(argv),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "versions": package_versions(),
            **{k: getattr(args, k) for k in ("clients", "duration", "servers", "workers")},
            "client_procs": args.client_procs,
        },
        "rows": [],
    }

    if run_reported(_run_all(setups, scenarios, args, results), results, render, args, kill_loads):
        return 130
    return 0 if any("error" not in row for row in results["rows"]) else 1


async def _run_all(
    setups: list[Setup], scenarios: list[str], args: argparse.Namespace, results: dict[str, Any]
) -> None:
    for setup in setups:
        reason = missing(setup.needs)
        for scenario in scenarios:
            for rate in args.rate_list:
                row: dict[str, Any] = {"setup": setup.name, "rate": rate, "scenario": scenario}
                if reason:
                    row["error"] = f"skipped: {reason}"
                else:
                    try:
                        row = await run_one(setup, rate, scenario, args)
                    except RunError as exc:
                        row["error"] = str(exc)
                    except Exception as exc:  # a row that broke the harness: the next one runs
                        row["error"] = f"{type(exc).__name__}: {exc}"
                results["rows"].append(row)
                if not args.quiet:
                    print(f"{setup.name} {rate:g}/s {scenario}: {_progress(row)}", file=sys.stderr)


def _progress(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"FAILED: {row['error']}"
    keys = ("delivered_per_s", "lost", "closed", "memberships_left", "p99_ms")
    return ", ".join(f"{key} {row[key]:,.0f}" for key in keys if row.get(key) is not None)
