"""Redeploying the code behind a live chat: what its clients see, towpath beside Channels 4.

``python -m bench restarts`` runs the same WebSocket group chat (``bench/restarts_app.py``:
group ``chat``, every message echoed to every member as ``"<text> via <TAG>"``) and redeploys
its code while N clients (``--clients``, 100) talk through it at a fixed total rate
(``--rate``, 40 messages/s; each client every N/rate seconds, jittered, each message
``sender:seq``). Each scenario starts a fresh ``redis-server`` on a free port, warms up
(``--warmup`` s), redeploys, keeps chatting (``--after`` s), stops sending and waits (at most
``--drain`` s) until every client has what it should have got. Scenarios:

* ``towpath-sigterm``: ``towpath serve --settings S`` + ``--workers`` (3) ``towpath
  runworker`` over the Redis layer; the redeploy restarts every worker one at a time, twice
  (SIGTERM, the worker exits, its replacement starts; the next once it logs "worker
  listening"), as ``supervisorctl restart`` does.
* ``towpath-sigkill``: the same stack; one worker is killed with SIGKILL (a crash) and
  replaced; the redeploy ends once the replacement listens and ``towpath serve`` has declared
  the dead worker gone (after its ``--heartbeat-timeout``, by default 5 s).
* ``towpath-sigkill-1s``: the same with ``serve --heartbeat-timeout 1`` and ``runworker
  --heartbeat-interval 0.2`` (the settings of the project's own test of a killed worker).
* ``daphne``: daphne serving the Channels 4 chat (``AsyncWebsocketConsumer`` over
  ``channels_redis``): the consumers live in the server process, so the redeploy restarts
  daphne (SIGTERM, then again on the same port).
* ``uvicorn``: the same Channels app under uvicorn, redeployed the same way.

Clients reconnect when dropped (``bench/restarts_clients.py``: back-off from 50 ms doubling to
1 s; the consumer re-joins the group on connect), so the chat goes on and its losses can be
counted. Figures per scenario: messages sent, the redeploy's duration, disconnects, a dropped
client's longest time offline; *lost*: deliveries (receiver x message) a client missed
although it was connected when the message was sent; *heard by none*: messages no client got;
*missed offline*: deliveries of messages sent while the receiver was reconnecting;
duplicates; out-of-order deliveries (a seq below one heard before from the same sender);
latency (send to receive, one clock) p50 and p99 of messages sent outside the redeploy window
(its start to its end + 1 s) and p99 inside it; the CPU of the servers and workers. With
``--repeat`` the counts are summed over the runs (marked *), the rest are medians. Loopback
only; about 10 s per scenario. ``--logs DIR`` keeps every process's output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from bench.procs import BIN, ROOT, _cpu_seconds
from bench.report import format_number, markdown_table, text_table
from bench.restarts_clients import OPEN_TIMEOUT, Client, analyse, drained, first
from towpath.testing.processes import READY_PREFIX
from towpath.testing.services import RedisServer, RedisServerError, find_redis_server, free_port

__all__ = [
    "SCENARIOS",
    "Proc",
    "Scenario",
    "add_arguments",
    "main",
    "missing",
    "package_versions",
    "run_reported",
    "run_scenario",
]

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0  # a graceful stop (handback, drain) longer than this is cut with SIGKILL
WINDOW_GRACE = 1.0  # seconds after the redeploy still counted as inside its window


class RunError(Exception):
    """A scenario could not be run (a process did not start, a client could not connect)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    stack: str  # "towpath" or an ASGI server command ({bin}, {port})
    redeploy: str  # "sigterm-workers", "sigkill-worker", "restart-server"
    ready: str = ""  # the log line that says the ASGI server listens
    needs: tuple[str, ...] = ()
    serve_args: tuple[str, ...] = ()  # towpath serve's, beside --settings and -p
    worker_args: tuple[str, ...] = ()  # towpath runworker's, beside --settings

    def missing(self) -> str | None:
        return missing(self.needs)


def missing(needs: Sequence[str]) -> str | None:
    """Why a scenario that needs redis-server and the packages ``needs`` cannot run, if so."""
    if find_redis_server() is None:
        return "redis-server not found"
    for need in needs:
        try:
            importlib.metadata.version(need)
        except importlib.metadata.PackageNotFoundError:
            return f"{need} is not installed"
    return None


_CHANNELS = ("channels", "channels_redis", "django")
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "towpath-sigterm",
            "towpath serve + N runworker; every worker restarted (SIGTERM), twice",
            "towpath",
            "sigterm-workers",
        ),
        Scenario(
            "towpath-sigkill",
            "towpath serve + N runworker; one worker killed (SIGKILL) and replaced",
            "towpath",
            "sigkill-worker",
        ),
        Scenario(
            "towpath-sigkill-1s",
            "towpath-sigkill with serve --heartbeat-timeout 1, runworker --heartbeat-interval 0.2",
            "towpath",
            "sigkill-worker",
            serve_args=("--heartbeat-timeout", "1"),
            worker_args=("--heartbeat-interval", "0.2"),
        ),
        Scenario(
            "daphne",
            "daphne + Channels 4 consumers + channels_redis; daphne restarted (SIGTERM)",
            "{bin}/daphne -b 127.0.0.1 -p {port} bench.restarts_app:channels_application",
            "restart-server",
            "Listening on TCP address",
            ("daphne", *_CHANNELS),
        ),
        Scenario(
            "uvicorn",
            "uvicorn + the same Channels 4 app; uvicorn restarted (SIGTERM)",
            "{bin}/uvicorn bench.restarts_app:channels_application --host 127.0.0.1 "
            "--port {port} --lifespan off --no-access-log",
            "restart-server",
            "Uvicorn running on",
            ("uvicorn", *_CHANNELS),
        ),
    ]
}


# -- processes ---------------------------------------------------------------------------------


class Proc:
    """One process in its own session, stdout and stderr merged and kept line by line."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._cpu_at_stop = 0.0

    async def start(self, ready: str) -> str:
        """Start it; the first output line containing ``ready``, once printed."""
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **self.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read())
        _LIVE.add(self)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                return await self.wait_for(ready)
        except TimeoutError:
            raise RunError(
                f"{self.name}: no {ready!r} in {READY_TIMEOUT:g} s: {self.tail()}"
            ) from None

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while line := await self._process.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._changed.set()
        self._changed.set()

    async def wait_for(self, text: str, seen: int = 0) -> str:
        """The first line from ``seen`` on containing ``text`` (bound it with a timeout)."""
        while True:
            for line in self.lines[seen:]:
                if text in line:
                    return line
            seen = len(self.lines)
            if self._reader is None or self._reader.done():
                raise RunError(f"{self.name} exited without {text!r}: {self.tail()}") from None
            self._changed.clear()
            await self._changed.wait()

    def send_signal(self, signum: int) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signum)

    async def stop(self, signum: int = signal.SIGTERM, within: float = STOP_TIMEOUT) -> int:
        """Send ``signum`` and wait for the exit status; SIGKILL after ``within`` s (-9)."""
        if self._process is None:
            return 0
        self._cpu_at_stop = self.cpu_seconds()
        self.send_signal(signum)
        try:
            async with asyncio.timeout(within):
                status = await self._process.wait()
        except TimeoutError:
            self.send_signal(signal.SIGKILL)
            status = await self._process.wait()
        if self._reader is not None:
            await self._reader
        _LIVE.discard(self)
        return status

    @property
    def pid(self) -> int | None:
        """The process id while it runs (None before its start and once it exited)."""
        running = self._process is not None and self._process.returncode is None
        return self._process.pid if running and self._process is not None else None

    def cpu_seconds(self) -> float:
        """CPU time used so far (until the stop signal, once stopped)."""
        if self._process is None or self._process.returncode is not None:
            return self._cpu_at_stop
        return _cpu_seconds([self._process.pid]) or self._cpu_at_stop

    def tail(self, lines: int = 6) -> str:
        return " | ".join(self.lines[-lines:])[-600:]


#: processes started and not yet stopped: killed on the way out whatever happens
_LIVE: set[Proc] = set()


def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        proc.send_signal(signal.SIGKILL)
    _LIVE.clear()


def _since(began: float) -> float:
    return round(time.monotonic() - began, 3)


# -- stacks and redeploys ----------------------------------------------------------------------


class Stack:
    """The processes of one scenario: a towpath serve + workers, or one ASGI server."""

    def __init__(self, scenario: Scenario, redis: RedisServer, options: argparse.Namespace):
        self.scenario = scenario
        self.redis = redis
        self.options = options
        self.procs: list[Proc] = []
        self.url = ""
        self.workers: list[Proc] = []
        self.generation = 0
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}
        self.settings = Path()
        self.port = 0

    async def start(self, directory: Path) -> None:
        if self.scenario.stack == "towpath":
            self.settings = directory / f"restarts_settings_{self.redis.port}.py"
            self.settings.write_text(
                "CHANNEL_LAYERS = {'default': {"
                "'BACKEND': 'towpath.layers.redis.RedisChannelLayer', "
                f"'CONFIG': {{'hosts': [{self.redis.url!r}]}}, "
                "'ROUTING': 'bench.restarts_app:routes'}}\n",
                encoding="utf-8",
            )
            argv = [str(BIN / "towpath"), "serve", "--settings", str(self.settings), "-p", "0"]
            argv += self.scenario.serve_args
            serve = self._add(Proc("towpath serve", argv, {}))
            line = await serve.start(READY_PREFIX)
            self.url = line.partition(READY_PREFIX)[2].strip().replace("http", "ws", 1)
            self.workers = [await self._worker(i) for i in range(self.options.workers)]
        else:
            self.port = free_port()
            self.url = f"ws://127.0.0.1:{self.port}"
            await self._server()
        self.url += "/chat/"

    def cpu_seconds(self) -> float:
        return sum(proc.cpu_seconds() for proc in self.procs)

    def _add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    async def _worker(self, index: int) -> Proc:
        tag = f"{'ABCDEFGHIJ'[index % 10]}{self.generation}"
        argv = [str(BIN / "towpath"), "runworker", "--settings", str(self.settings)]
        argv += self.scenario.worker_args
        worker = self._add(Proc(f"worker {tag}", argv, {"RESTARTS_TAG": tag}))
        await worker.start("worker listening on")
        return worker

    async def _server(self) -> Proc:
        argv = shlex.split(self.scenario.stack.format(bin=BIN, port=self.port))
        env = {"RESTARTS_REDIS_URL": self.redis.url, "RESTARTS_TAG": f"s{self.generation}"}
        server = self._add(Proc(self.scenario.name, argv, env))
        await server.start(self.scenario.ready)
        return server

    async def redeploy(self) -> None:
        """The scenario's redeploy; each step, seconds after its start, goes to ``steps``."""
        steps: list[tuple[str, float]] = []
        began = time.monotonic()
        self.extra["steps"] = steps
        kind = self.scenario.redeploy
        if kind == "sigterm-workers":
            for _round in range(2):
                self.generation += 1
                for index, old in enumerate(self.workers):
                    await self._stopped(old, steps, began)
                    self.workers[index] = await self._worker(index)
                    steps.append((f"{self.workers[index].name} listening", _since(began)))
        elif kind == "sigkill-worker":
            serve = self.procs[0]
            seen = len(serve.lines)
            await self.workers[0].stop(signal.SIGKILL)
            self.generation += 1
            self.workers[0] = await self._worker(0)
            steps.append((f"{self.workers[0].name} listening", _since(began)))
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    line = await serve.wait_for("it is gone", seen)
                steps.append(("towpath serve declared the killed worker gone", _since(began)))
                self.extra["serve_said"] = line.partition("WARNING")[2].strip() or line
            except TimeoutError:
                self.notes.append("towpath serve never declared the killed worker gone")
        else:
            await self._stopped(self.procs[-1], steps, began)
            self.generation += 1
            await self._server()
            steps.append((f"{self.scenario.name} listening again", _since(began)))

    async def _stopped(self, proc: Proc, steps: list[tuple[str, float]], began: float) -> None:
        """SIGTERM ``proc`` and wait for it; a status other than a clean exit is noted."""
        status = await proc.stop(signal.SIGTERM)
        steps.append((f"{proc.name} stopped", _since(began)))
        if status not in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM once stopped
            self.notes.append(f"{proc.name} exited with {status}: {proc.tail(3)}")

    async def close(self) -> None:
        """Stop everything it started, newest first; the towpath server's counters kept, and
        every process's output written to ``--logs`` if given."""
        logs = Path(self.options.logs) if self.options.logs else None
        while self.procs:
            proc = self.procs.pop()
            await proc.stop(signal.SIGTERM, within=10)
            stats = [line for line in proc.lines if " stats {" in line]
            if proc.name == "towpath serve" and stats:
                with contextlib.suppress(ValueError):
                    self.extra["serve_stats"] = json.loads(stats[-1].partition(" stats ")[2])
            if logs is not None:
                logs.mkdir(parents=True, exist_ok=True)
                name = f"{self.scenario.name}-{len(self.procs):02d}-{proc.name.replace(' ', '-')}"
                (logs / f"{name}.log").write_text("\n".join(proc.lines) + "\n", encoding="utf-8")


async def run_scenario(scenario: Scenario, options: argparse.Namespace) -> dict[str, Any]:
    """One run: fresh Redis, the stack, the clients, the redeploy; the figures."""
    try:
        redis = RedisServer().start()
    except RedisServerError as exc:
        raise RunError(str(exc)) from exc
    with redis, tempfile.TemporaryDirectory(prefix="towpath-restarts-") as directory:
        stack = Stack(scenario, redis, options)
        try:
            await stack.start(Path(directory))
            figures = await _chat(stack, options)
        finally:
            await stack.close()
    figures["notes"] = stack.notes
    figures.update(stack.extra)
    return figures


async def _chat(stack: Stack, options: argparse.Namespace) -> dict[str, Any]:
    progress, until = asyncio.Event(), asyncio.Event()
    period = options.clients / options.rate
    clients = [Client(i, stack.url, period, progress) for i in range(options.clients)]
    connections = [asyncio.create_task(c.connected()) for c in clients]
    talking: list[asyncio.Task[None]] = []
    try:
        try:
            async with asyncio.timeout(OPEN_TIMEOUT * 2):
                await asyncio.gather(*(c.online.wait() for c in clients))
        except TimeoutError:
            raise RunError(f"clients could not connect to {stack.url}") from None
        talking = [asyncio.create_task(c.talk(until)) for c in clients]
        cpu, wall = time.process_time(), time.monotonic()
        stack_cpu, redis_cpu = stack.cpu_seconds(), _cpu_seconds([stack.redis.pid or 0])
        await first(until, within=options.warmup)  # the chat warms up
        start = time.monotonic()
        await stack.redeploy()
        end = time.monotonic()
        await first(until, within=options.after)  # the chat goes on
        until.set()
        await asyncio.gather(*talking)
        complete = await drained(clients, progress, options.drain)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        stack_cpu = stack.cpu_seconds() - stack_cpu
        redis_cpu = _cpu_seconds([stack.redis.pid or 0]) - redis_cpu
    finally:
        until.set()
        await asyncio.gather(*(client.stop() for client in clients), return_exceptions=True)
        _done, pending = await asyncio.wait([*connections, *talking], timeout=OPEN_TIMEOUT)
        for task in pending:  # a connect still in its handshake: not waited for any longer
            task.cancel()
        await asyncio.gather(*connections, *talking, return_exceptions=True)
    figures: dict[str, Any] = analyse(clients, (start, end + WINDOW_GRACE))
    figures["redeploy_s"] = end - start
    # in % of one core over the chat: this process (every client), the servers and workers
    # (the stopped ones until their stop signal, the new ones from their start), redis-server
    figures["client_cpu_pct"] = 100 * cpu / wall
    figures["stack_cpu_pct"] = 100 * stack_cpu / wall
    figures["redis_cpu_pct"] = 100 * redis_cpu / wall
    if not complete:
        stack.notes.append(f"delivery not complete {options.drain:g} s after the last send")
    return figures


# -- report ------------------------------------------------------------------------------------

#: (key, header, total over runs)
COLUMNS = [
    ("clients", "clients", False),
    ("sent", "messages sent*", True),
    ("redeploy_s", "redeploy s", False),
    ("disconnects", "disconnects*", True),
    ("longest_outage_s", "longest outage s", False),
    ("lost", "lost*", True),
    ("lost_by_all", "heard by none*", True),
    ("missed_offline", "missed offline*", True),
    ("duplicates", "duplicates*", True),
    ("out_of_order", "out of order*", True),
    ("p50_ms", "p50 ms", False),
    ("p99_ms", "p99 ms", False),
    ("p99_during_ms", "p99 ms in redeploy", False),
    ("stack_cpu_pct", "stack CPU %", False),
]


def _value(runs: list[dict[str, Any]], key: str, total: bool) -> float | None:
    values = [r[key] for r in runs if key in r and r[key] == r[key]]
    if not values:
        return None
    return float(sum(values) if total else statistics.median(values))


def table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["scenario", *(h for _k, h, _t in COLUMNS)]
    rows = []
    for name, result in results["scenarios"].items():
        row = [name]
        for key, _header, total in COLUMNS:
            value = _value(result["runs"], key, total)
            if value is None:
                row.append("")
            elif total or key == "clients":
                row.append(f"{value:,.0f}")
            else:
                row.append(format_number(value, "ms"))
        if not result["runs"]:
            row[1] = "n/a (failed)" if result["errors"] else "n/a (skipped)"
        rows.append(row)
    return header, rows


def _notes(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    notes = [
        f"{meta['clients']} WebSocket clients in one group, {meta['rate']:g} messages/s in "
        f"all; {meta['warmup']:g} s warm-up, redeploy, {meta['after']:g} s more, then up to "
        f"{meta['drain']:g} s for delivery; {meta['repeat']} run(s) per scenario, counts "
        "marked * are summed over runs, the rest are medians",
        "lost: deliveries a connected client never got (receiver x message); heard by none: "
        "messages no client got; missed offline: deliveries of messages sent while the "
        "receiver was reconnecting; longest outage: a dropped client's longest time offline; "
        "latency: send to receive, of messages sent outside the redeploy window (its start to "
        f"its end + {WINDOW_GRACE:g} s)",
        f"towpath: serve + {meta['workers']} workers; daphne, uvicorn: one process; load "
        "average at start: "
        f"{meta['load_average']}; wall time {meta.get('wall_seconds', '?')} s",
    ]
    for name, result in results["scenarios"].items():
        for run in result["runs"]:
            notes += [f"{name}: {note}" for note in run.get("notes", [])]
            if run.get("send_failures"):
                notes.append(
                    f"{name}: {run['send_failures']} send(s) failed as the connection closed "
                    "(not counted as sent)"
                )
            if run.get("serve_said"):
                notes.append(f"{name}: towpath serve: {run['serve_said']}")
        notes += [f"{name}: {error}" for error in result["errors"]]
        if result.get("skipped"):
            notes.append(f"skipped {name}: {result['skipped']}")
    if meta.get("interrupted"):
        notes.append("INTERRUPTED: partial results")
    return notes


def render(results: dict[str, Any], markdown: bool) -> str:
    title = "Redeploying a live WebSocket chat: what the clients see"
    header, rows = table(results)
    bullet = "* " if markdown else "  "
    notes = "\n".join(bullet + note for note in _notes(results))
    if markdown:
        return f"**{title}**\n\n{markdown_table(header, rows)}\n\n{notes}"
    return f"{title}\n{text_table(header, rows)}\n\n{notes}"


# -- command line ------------------------------------------------------------------------------


# fmt: off
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--scenario", action="append", default=[], metavar="NAME",
        help=f"scenarios to run (repeatable or comma-separated): {', '.join(SCENARIOS)} "
        "(default: all installed)")
    add("--clients", type=int, default=100, help="WebSocket clients (100)")
    add("--rate", type=float, default=40.0, help="messages per second, all clients (40)")
    add("--warmup", type=float, default=3.0, help="seconds of chat before the redeploy (3)")
    add("--after", type=float, default=4.0, help="seconds of chat after the redeploy (4)")
    add("--drain", type=float, default=10.0,
        help="at most this many seconds for the last messages to arrive (10)")
    add("--workers", type=int, default=3, help="towpath runworker processes (3)")
    add("--repeat", type=int, default=1, help="runs per scenario, interleaved (1)")
    add("--json", metavar="FILE", help="also write every run's figures here")
    add("--markdown", action="store_true", help="print a Markdown table too")
    add("--logs", metavar="DIR", help="write every process's output here")
    add("--quiet", action="store_true", help="no per-run progress on stderr")
    add("--list", action="store_true", help="list scenarios; exit")
# fmt: on


CHANNELS_PACKAGES = ("towpath", "websockets", "daphne", "twisted", "uvicorn", "channels",
                     "channels_redis", "django", "redis")  # fmt: skip


def package_versions(packages: Sequence[str] = CHANNELS_PACKAGES) -> dict[str, str | None]:
    """The installed versions of ``packages`` (None: not installed); by default those a run of
    towpath beside Channels 4 depends on."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _meta(argv: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    versions = package_versions()
    return {
        "command": "python -m bench " + shlex.join(argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        **{
            key: getattr(args, key)
            for key in ("clients", "rate", "warmup", "after", "drain", "workers", "repeat")
        },
    }


async def _run_all(
    names: list[str], args: argparse.Namespace, results: dict[str, Any], quiet: bool
) -> None:
    for repeat in range(args.repeat):
        for name in names:
            entry = results["scenarios"][name]
            if entry.get("skipped") or (entry["errors"] and not entry["runs"]):
                continue  # missing, or failed its first run
            try:
                figures = await run_scenario(SCENARIOS[name], args)
            except RunError as exc:
                entry["errors"].append(str(exc))
                line = f"FAILED: {exc}"
            else:
                figures["repeat"] = repeat
                entry["runs"].append(figures)
                line = ", ".join(
                    f"{key} {figures[key]:,.1f}"
                    for key, _h, _t in COLUMNS
                    if isinstance(figures.get(key), float | int)
                )
            if not quiet:
                print(f"{name} run {repeat + 1}/{args.repeat}: {line}", file=sys.stderr)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    if args.list:
        for scenario in SCENARIOS.values():
            state = scenario.missing() or "installed"
            print(f"  {scenario.name:<16} {scenario.description} ({state})")
        return 0
    names = [n for text in args.scenario for n in text.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario: {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    if min(args.clients, args.repeat, args.workers) < 1 or args.rate <= 0:
        parser.error("--clients, --rate, --workers and --repeat must be positive")
    results: dict[str, Any] = {
        "suite": "restarts",
        "meta": _meta(argv, args),
        "scenarios": {name: {"runs": [], "errors": []} for name in names},
    }
    for name in names:
        reason = SCENARIOS[name].missing()
        if reason:
            results["scenarios"][name]["skipped"] = reason
    if all(entry.get("skipped") for entry in results["scenarios"].values()):
        print("nothing to run: " + "; ".join(_notes(results)[3:]), file=sys.stderr)
        return 2

    if run_reported(_run_all(names, args, results, args.quiet), results, render, args):
        return 130
    failed = all(not entry["runs"] for entry in results["scenarios"].values())
    return 1 if failed else 0


def run_reported(
    run: Coroutine[Any, Any, None],
    results: dict[str, Any],
    render: Callable[[dict[str, Any], bool], str],
    args: argparse.Namespace,
    cleanup: Callable[[], None] = lambda: None,
) -> bool:
    """Run ``run`` (it fills ``results``) with the file-descriptor limit raised and SIGTERM
    taken as an interrupt; kill every process left (and ``cleanup()``); print the tables
    (``--markdown``: a Markdown one too) and write ``--json``. True if it was interrupted."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that every process started is stopped

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # client sockets, and servers
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    previous = signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    try:
        asyncio.run(run)
    except KeyboardInterrupt:
        results["meta"]["interrupted"] = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        _kill_leftovers()
        cleanup()
    results["meta"]["wall_seconds"] = round(time.monotonic() - started)
    print(render(results, False))
    if args.markdown:
        print()
        print(render(results, True))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2, default=str)
            out.write("\n")
    return bool(results["meta"].get("interrupted"))
