"""Interface-server benchmark: towpath serve beside uvicorn, hypercorn, daphne and granian.

``python -m bench servers`` runs every server as its own process pinned to one core
(``taskset -c 0``) and the load generators pinned to the other (``taskset -c 1``), over
loopback, one fresh server process per run, runs interleaved (A, B, C, A, B, C, ...) so all
servers share the machine's noise; tables show the median of ``--repeat`` runs (default 3).

Scenarios (``--scenario``, default all):

* ``http1``: ``wrk -t1 -c64 -d8s --latency`` against ``bench.apps:hello``: requests/s, p50 and
  p99 latency, non-2xx responses and socket errors (a warm-up run first, not counted);
* ``ws``: WebSocket echo round trips/s with ``bench.apps:echo``: 64 connections, each sends a
  short text frame and waits for its echo, repeatedly (``python -m bench.apps wsload``);
* ``h2``: ``h2load -c16 -m10 -n 20000`` (cleartext HTTP/2 with prior knowledge): requests/s
  and failed requests, for the servers that speak h2c;
* ``memory``: RSS per idle WebSocket: the server's RSS (VmRSS, summed over its process tree)
  before and after 1000 idle echo connections are open, the delta divided by 1000.

Every throughput row also shows the CPU use of the server, of its core as a whole and of the
load generator during the measured window, so a run limited by the client or starved by other
load on the machine shows as such. The first server (towpath unless
``--server`` says otherwise) is the subject: ratio columns are *subject vs peer*, above 1x
meaning the subject did better. The issue's goals are marked met / not met under the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.procs import (
    ROOT,
    SCENARIOS,
    SERVERS,
    RunError,
    ServerProcess,
    ServerSpec,
    _pinned,
    _rss_kib,
    _run_tool,
    _Window,
)
from bench.report import format_number, format_ratio, markdown_table, text_table

__all__ = ["SCENARIOS", "SERVERS", "ServerSpec", "add_arguments", "main"]

APPS = {"http1": "bench.apps:hello", "h2": "bench.apps:hello", "ws": "bench.apps:echo"}
APPS["memory"] = APPS["ws"]


# -- scenarios ---------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    """A wrk/h2load duration ("812.00us", "1.21ms", "2.5s") in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, p50/p99 latency (ms), non-2xx/3xx responses and socket errors."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None:
        raise RunError(f"no Requests/sec in wrk output: {output.strip()[-200:]}")
    figures = {"rps": float(rate.group(1))}
    for percent, key in (("50", "p50_ms"), ("99", "p99_ms")):
        found = re.search(rf"^\s+{percent}%\s+(\S+)", output, re.MULTILINE)
        if found:
            figures[key] = _ms(found.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    figures["non2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    figures["socket_errors"] = float(sum(map(int, errors.groups()))) if errors else 0.0
    return figures


def parse_h2load(output: str) -> dict[str, float]:
    """Requests/s, failed requests (all that did not succeed: failed, errored, timed out or
    never started because the server closed the connection) and mean request time (ms)."""
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    counts = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded", output)
    if rate is None or counts is None:
        raise RunError(f"unexpected h2load output: {output.strip()[-300:]}")
    total, succeeded = map(int, counts.groups())
    figures = {"rps": float(rate.group(1)), "failed": float(total - succeeded)}
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", output)
    if mean:
        figures["mean_ms"] = _ms(mean.group(1))
    return figures


def _wsload(server: ServerProcess, options: argparse.Namespace, **extra: Any) -> list[str]:
    argv = [sys.executable, "-m", "bench.apps", "wsload", "--port", str(server.port)]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return _pinned(argv, options.client_cpu)


def run_http1(server: ServerProcess, options: argparse.Namespace) -> dict[str, float]:
    wrk = ["wrk", "-t1", f"-c{options.connections}", "--latency", server.url]
    if options.warmup > 0:
        _run_tool(_pinned([*wrk, f"-d{max(1, round(options.warmup))}s"], options.client_cpu), 60)
    window = _Window(server, options.server_cpu)
    seconds = max(1, round(options.duration))
    output = _run_tool(_pinned([*wrk, f"-d{seconds}s"], options.client_cpu), seconds + 60)
    return {**parse_wrk(output), **window.figures()}


def run_ws(server: ServerProcess, options: argparse.Namespace) -> dict[str, float]:
    clients = max(1, options.ws_clients)
    share = [
        options.connections // clients + (i < options.connections % clients) for i in range(clients)
    ]
    window = _Window(server, options.server_cpu)  # warm-up included: short and just as busy
    procs = [
        subprocess.Popen(
            _wsload(
                server, options, connections=n, duration=options.duration, warmup=options.warmup
            ),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in share
    ]
    reports = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=options.duration + options.warmup + 90)
            if proc.returncode != 0 or not out.strip():
                raise RunError(f"wsload exited {proc.returncode}: {err.strip()[-300:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    cpu = window.figures()
    failed = sum(r["failed"] for r in reports)
    if failed:
        raise RunError(f"{failed} WebSocket handshakes failed: {reports[0]['failures']}")
    latencies = [r["p50_ms"] for r in reports if r["p50_ms"] is not None]
    return {
        "rps": sum(r["rate"] for r in reports),
        "p50_ms": statistics.mean(latencies) if latencies else float("nan"),
        "errors": float(sum(r["errors"] for r in reports)),
        **cpu,
    }


def run_h2(server: ServerProcess, options: argparse.Namespace) -> dict[str, float]:
    h2load = ["h2load", "-t1", f"-c{options.h2_clients}", f"-m{options.h2_streams}"]
    if options.warmup > 0:
        warm = max(1000, options.h2_requests // 10)
        with contextlib.suppress(RunError):  # a server that fails requests still warms up
            _run_tool(_pinned([*h2load, f"-n{warm}", server.url], options.client_cpu), 60)
    window = _Window(server, options.server_cpu)
    timeout = max(1, round(options.h2_timeout))
    argv = [*h2load, f"-n{options.h2_requests}", "-T", str(timeout), server.url]
    figures = parse_h2load(_run_tool(_pinned(argv, options.client_cpu), timeout + 30))
    return {**figures, **window.figures()}


def _hold_idle(server: ServerProcess, options: argparse.Namespace, count: int) -> Any:
    """Start a wsload --idle client holding ``count`` connections; return it once all are up."""
    proc = subprocess.Popen(
        _wsload(server, options, connections=count, idle=True),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # wsload bounds its handshakes with its own timeout
    if not line:
        proc.kill()
        raise RunError(f"wsload --idle failed: {proc.communicate()[1].strip()[-300:]}")
    report = json.loads(line)
    if report["failed"]:
        _release(proc)
        raise RunError(
            f"{report['failed']} of {count} idle handshakes failed: {report['failures']}"
        )
    return proc


def _release(proc: subprocess.Popen[str]) -> None:
    try:
        proc.communicate("", timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_memory(server: ServerProcess, options: argparse.Namespace) -> dict[str, float]:
    _release(_hold_idle(server, options, 50))  # warm-up: first-connection allocations
    pids = server.pids()
    before = _rss_kib(pids)
    proc = _hold_idle(server, options, options.idle_connections)
    try:
        time.sleep(0.5)  # let the server finish what the last handshakes started
        after = max(_rss_kib(pids), _rss_kib(server.pids()))
    finally:
        _release(proc)
    return {
        "kib_per_conn": (after - before) / options.idle_connections,
        "rss_before_mib": before / 1024,
    }


RUNNERS: dict[str, Callable[[ServerProcess, argparse.Namespace], dict[str, float]]] = {
    "http1": run_http1,
    "ws": run_ws,
    "h2": run_h2,
    "memory": run_memory,
}


# -- running -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    key: str
    header: str
    unit: str = ""
    total: bool = False  # counts: the sum over all runs, not the median
    ratio: bool | None = None  # the compared metric: True if higher is better


COLUMNS: dict[str, list[Column]] = {
    "http1": [
        Column("rps", "req/s", "/s", ratio=True),
        Column("p50_ms", "p50 ms", "ms"),
        Column("p99_ms", "p99 ms", "ms"),
        Column("non2xx", "non-2xx*", total=True),
        Column("socket_errors", "socket errors*", total=True),
        Column("cpu_pct", "server CPU %", "%"),
        Column("core_busy_pct", "core busy %", "%"),
        Column("client_cpu_pct", "client CPU %", "%"),
    ],
    "ws": [
        Column("rps", "round trips/s", "/s", ratio=True),
        Column("p50_ms", "p50 ms", "ms"),
        Column("errors", "errors*", total=True),
        Column("cpu_pct", "server CPU %", "%"),
        Column("core_busy_pct", "core busy %", "%"),
        Column("client_cpu_pct", "client CPU %", "%"),
    ],
    "h2": [
        Column("rps", "req/s", "/s", ratio=True),
        Column("failed", "failed*", total=True),
        Column("mean_ms", "mean ms", "ms"),
        Column("cpu_pct", "server CPU %", "%"),
        Column("core_busy_pct", "core busy %", "%"),
        Column("client_cpu_pct", "client CPU %", "%"),
    ],
    "memory": [
        Column("kib_per_conn", "KiB per idle WS", "KiB", ratio=False),
        Column("rss_before_mib", "RSS before MiB", "MiB"),
    ],
}


@dataclasses.dataclass
class Results:
    scenarios: list[str]
    servers: list[str]
    repeat: int
    meta: dict[str, Any]
    runs: dict[tuple[str, str], list[dict[str, float]]] = dataclasses.field(default_factory=dict)
    errors: dict[tuple[str, str], list[str]] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    def value(self, scenario: str, server: str, column: Column) -> float | None:
        values = [
            run[column.key]
            for run in self.runs.get((scenario, server), [])
            if column.key in run and run[column.key] == run[column.key]
        ]
        if not values:
            return None
        return sum(values) if column.total else statistics.median(values)

    def paired_ratio(self, scenario: str, subject: str, peer: str) -> float | None:
        """The median of per-repeat ratios: the two servers of one repeat ran back to back,
        so this is steadier than the ratio of medians when the machine changes speed."""
        column = next(c for c in COLUMNS[scenario] if c.ratio is not None)
        theirs = {r["repeat"]: r.get(column.key) for r in self.runs.get((scenario, peer), [])}
        ratios = []
        for run in self.runs.get((scenario, subject), []):
            a, b = run.get(column.key), theirs.get(run["repeat"])
            if a and b:
                ratios.append(a / b if column.ratio else b / a)
        return statistics.median(ratios) if ratios else None

    def ratio(self, scenario: str, subject: str, peer: str) -> float | None:
        column = next(c for c in COLUMNS[scenario] if c.ratio is not None)
        ours, theirs = self.value(scenario, subject, column), self.value(scenario, peer, column)
        if not ours or not theirs:
            return None
        return ours / theirs if column.ratio else theirs / ours


def run(
    scenarios: Sequence[str],
    servers: Sequence[ServerSpec],
    options: argparse.Namespace,
    meta: dict[str, Any],
    progress: Callable[[str], None] | None,
) -> Results:
    results = Results(list(scenarios), [s.name for s in servers], options.repeat, meta)
    broken: set[tuple[str, str]] = set()
    try:
        for scenario in scenarios:
            for repeat in range(options.repeat):
                for spec in servers:
                    key = (scenario, spec.name)
                    if scenario not in spec.scenarios or key in broken:
                        continue
                    try:
                        figures = _run_one(spec, scenario, options)
                    except RunError as exc:
                        results.errors.setdefault(key, []).append(str(exc))
                        if not results.runs.get(key):
                            broken.add(key)  # failed its first run: do not try again
                        line = f"FAILED: {exc}"
                    else:
                        line = ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
                        figures["repeat"] = repeat
                        results.runs.setdefault(key, []).append(figures)
                    if progress:
                        progress(
                            f"{scenario} {spec.name} run {repeat + 1}/{options.repeat}: {line}"
                        )
    except KeyboardInterrupt:
        results.meta["interrupted"] = True
    return results


def _run_one(spec: ServerSpec, scenario: str, options: argparse.Namespace) -> dict[str, float]:
    server = ServerProcess(spec, APPS[scenario], options)
    try:
        server.wait_ready()
        figures = RUNNERS[scenario](server, options)
        if server.process.poll() is not None:
            raise RunError(f"server died during the run: {server.log_tail()}")
        return figures
    finally:
        server.stop()


# -- report ------------------------------------------------------------------------------------


def _cell(value: float | None, column: Column) -> str:
    if value is None:
        return "n/a"
    if column.total:
        return f"{value:,.0f}"
    return format_number(value, column.unit)


def scenario_table(results: Results, scenario: str) -> tuple[list[str], list[list[str]]]:
    columns = COLUMNS[scenario]
    servers = [s for s in results.servers if scenario in SERVERS[s].scenarios]
    subject = results.servers[0]
    header = ["server", *(c.header for c in columns)]
    if subject in servers:
        header.append(f"{subject} vs server")
    rows = []
    for server in servers:
        row = [server, *(_cell(results.value(scenario, server, c), c) for c in columns)]
        if not results.runs.get((scenario, server)):
            errors = results.errors.get((scenario, server))
            row[1] = f"n/a ({'failed' if errors else 'not run'})"
        if subject in servers:
            ratio = results.ratio(scenario, subject, server) if server != subject else None
            row.append(format_ratio(ratio) if ratio else "")
        rows.append(row)
    return header, rows


def goals(results: Results) -> list[list[str]]:
    """The issue's goals: [goal, measured, verdict]. A ratio goal is met when both the ratio
    of the medians and the median of the per-repeat (paired) ratios reach it; "borderline"
    when only one does."""
    first = results.servers[0]
    subject = first if first.startswith("towpath") else "towpath"
    rows = []

    def ratio_goal(scenario: str, peer: str, target: float, what: str, goal: str = "") -> None:
        goal = goal or f"{what} ≥ {target:g}x {peer}"
        column = next(c for c in COLUMNS[scenario] if c.ratio is not None)
        ours = results.value(scenario, subject, column)
        theirs = results.value(scenario, peer, column)
        paired = results.paired_ratio(scenario, subject, peer)
        if ours is None or theirs is None or paired is None:
            rows.append([goal, "not measured", "n/a"])
            return
        ratio = ours / theirs if column.ratio else theirs / ours
        met = (ratio >= target) + (paired >= target)
        verdict = ["not met", "borderline", "met"][met]
        figures = (format_number(x, column.unit) for x in (ours, theirs))
        text = "{} vs {} {}: {:.3f}x (paired {:.3f}x)".format(
            *figures, column.header, ratio, paired
        )
        if scenario == "h2":
            failed = results.value("h2", subject, COLUMNS["h2"][1]) or 0
            goal += " with 0 failed"
            text += f", {failed:,.0f} failed"
            if failed:
                verdict = "not met"
        rows.append([goal, text, verdict])

    ratio_goal("http1", "uvicorn-h11", 1.2, "HTTP/1.1 req/s")
    ratio_goal("http1", "hypercorn", 2.0, "HTTP/1.1 req/s")
    ratio_goal("ws", "uvicorn-h11", 1.2, "WebSocket echo round trips/s")
    ratio_goal("h2", "hypercorn", 3.0, "HTTP/2 req/s")
    label = "memory per idle WebSocket ≤ uvicorn-h11 (ratio: theirs / ours)"
    ratio_goal("memory", "uvicorn-h11", 1.0, "", label)
    if subject != "towpath":
        rows = [[f"{subject}: {goal}", *rest] for goal, *rest in rows]
    return rows


def _notes(results: Results) -> list[str]:
    notes = [
        f"median of {results.repeat} interleaved runs per server (fresh process each run); "
        f"server on CPU {results.meta['server_cpu']}, load generator on CPU "
        f"{results.meta['client_cpu']}; ratios: {results.servers[0]} vs server, above 1x "
        f"means {results.servers[0]} is better; * counts are the sum over all runs",
        "server CPU %: the server's processes, in % of one core; core busy %: everything on "
        "the server's core (the server, loopback TCP softirqs, other processes); client CPU %: "
        "the load generator. Core busy near 100% with the server well below it means the "
        "server shared its core (with the kernel or other load on the machine)",
        f"load average at start: {results.meta['load_average']}; wall time "
        f"{results.meta.get('wall_seconds', '?')} s",
    ]
    if results.meta.get("interrupted"):
        notes.append("INTERRUPTED: partial results")
    for name, reason in results.skipped.items():
        notes.append(f"skipped {name}: {reason}")
    for (scenario, server), errors in results.errors.items():
        for error in sorted(set(errors)):
            notes.append(f"{scenario} {server}: {error}")
    return notes


def render(results: Results, markdown: bool) -> str:
    table = markdown_table if markdown else text_table
    parts = []
    for scenario in results.scenarios:
        header, rows = scenario_table(results, scenario)
        title = f"{scenario}: {SCENARIOS[scenario]}"
        parts.append(
            f"**{title}**\n\n{table(header, rows)}"
            if markdown
            else f"{title}\n{table(header, rows)}"
        )
    parts.append(
        ("**Goals**\n\n" if markdown else "Goals\n")
        + table(["goal", "measured (same run)", "verdict"], goals(results))
    )
    bullet = "* " if markdown else "  "
    parts.append("\n".join(bullet + note for note in _notes(results)))
    return "\n\n".join(parts)


def to_json(results: Results) -> dict[str, Any]:
    return {
        "meta": results.meta,
        "skipped": results.skipped,
        "scenarios": {
            scenario: {
                server: {
                    "runs": results.runs.get((scenario, server), []),
                    "errors": results.errors.get((scenario, server), []),
                    "median": {
                        c.key: results.value(scenario, server, c) for c in COLUMNS[scenario]
                    },
                }
                for server in results.servers
                if scenario in SERVERS[server].scenarios
            }
            for scenario in results.scenarios
        },
        "goals": goals(results),
    }


# -- command line ------------------------------------------------------------------------------


def _version(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\d+\.\d+(\.\d+)?", done.stdout + done.stderr)
    return match.group(0) if match else None


def _meta(argv: Sequence[str], options: argparse.Namespace) -> dict[str, Any]:
    packages = [
        "towpath",
        "h11",
        "h2",
        "wsproto",
        "uvicorn",
        "httptools",
        "uvloop",
        "websockets",
        "hypercorn",
        "daphne",
        "twisted",
        "granian",
    ]
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["wrk"] = _version(["wrk", "-v"])
    versions["h2load"] = _version(["h2load", "--version"])
    return {
        "command": "python -m bench " + shlex.join(argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "server_cpu": options.server_cpu,
        "client_cpu": options.client_cpu,
        "versions": versions,
    }


def _names(values: Sequence[str]) -> list[str]:
    return [name for text in values for name in text.split(",") if name]


# fmt: off
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--scenario", action="append", default=[], metavar="NAME",
        help=f"run only these (repeatable or comma-separated): {', '.join(SCENARIOS)}")
    add("--server", action="append", default=[], metavar="NAME",
        help="servers to run (repeatable or comma-separated), the first is the subject of the "
        "ratios; default: the default ones that are installed (see --list)")
    add("--quick", action="store_true", help="smoke check: 2 s runs, 0.5 s warm-up, 1 repeat, "
        "5,000 h2 requests, 200 idle WebSockets (explicit options still win)")
    add("--repeat", type=int, help="runs per server and scenario (default 3)")
    add("--duration", type=float, help="seconds per measured run (default 8)")
    add("--warmup", type=float, help="seconds of load before each run (default 1)")
    add("--connections", type=int, default=64, help="wrk and WebSocket connections (64)")
    add("--ws-clients", type=int, default=1, help="WebSocket load-generator processes (1)")
    add("--h2-requests", type=int, help="h2load -n (default 20000)")
    add("--h2-clients", type=int, default=16, help="h2load -c (16)")
    add("--h2-streams", type=int, default=10, help="h2load -m (10)")
    add("--h2-timeout", type=float, default=60.0, help="h2load -T: cut a run off (60 s)")
    add("--idle-connections", type=int, help="idle WebSockets for memory (default 1000)")
    add("--server-cpu", default="0", help="taskset -c for servers (0)")
    add("--client-cpu", default="1", help="taskset -c for load generators (1)")
    add("--no-pin", action="store_true", help="no taskset")
    add("--towpath-arg", action="append", default=[], metavar="ARG",
        help="extra argument for towpath serve, as --towpath-arg=--no-http2 (repeatable)")
    add("--json", metavar="FILE", help="also write every run's figures here")
    add("--markdown", action="store_true", help="print Markdown tables too")
    add("--quiet", action="store_true", help="no per-run progress on stderr")
    add("--list", action="store_true", help="list servers and scenarios; exit")
# fmt: on


def _defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    for name, normal, fast in [
        ("repeat", 3, 1),
        ("duration", 8.0, 2.0),
        ("warmup", 1.0, 0.5),
        ("h2_requests", 20_000, 5_000),
        ("idle_connections", 1000, 200),
    ]:
        if getattr(args, name) is None:
            setattr(args, name, fast if quick else normal)
    if args.no_pin:
        args.server_cpu = args.client_cpu = None


def main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    if args.list:
        for spec in SERVERS.values():
            state = spec.missing() or ("default" if spec.default else "on request")
            print(
                f"  {spec.name:<18} {spec.description} [{', '.join(sorted(spec.scenarios))}]"
                f" ({state})"
            )
        for name, text in SCENARIOS.items():
            print(f"  {name:<18} {text}")
        return 0
    _defaults(args)
    if args.repeat < 1 or args.duration <= 0 or args.connections < 1:
        parser.error("--repeat, --duration and --connections must be positive")
    scenarios = _names(args.scenario) or list(SCENARIOS)
    scenarios = sorted(
        set(scenarios), key=lambda n: list(SCENARIOS).index(n) if n in SCENARIOS else -1
    )
    names = _names(args.server) or [s.name for s in SERVERS.values() if s.default]
    unknown = [n for n in scenarios if n not in SCENARIOS] + [n for n in names if n not in SERVERS]
    if unknown:
        parser.error(f"unknown scenario or server: {', '.join(unknown)}")
    missing_tools = [
        tool
        for tool, needed in (("wrk", "http1"), ("h2load", "h2"))
        if needed in scenarios and not shutil.which(tool)
    ]
    if not args.no_pin and not shutil.which("taskset"):
        missing_tools.append("taskset (or pass --no-pin)")
    if missing_tools:
        print(f"missing: {', '.join(missing_tools)}", file=sys.stderr)
        return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # servers inherit it
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    specs, skipped = [], {}
    for name in names:
        reason = SERVERS[name].missing()
        if reason:
            skipped[name] = reason
        else:
            specs.append(SERVERS[name])
    if not specs:
        print(f"no server to run: {skipped}", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that every server started is stopped (finally clauses)

    previous = signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    try:
        results = run(scenarios, specs, args, _meta(argv, args), None if args.quiet else progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    results.skipped = skipped
    results.meta["wall_seconds"] = round(time.monotonic() - started)
    print(render(results, markdown=False))
    if args.markdown:
        print()
        print(render(results, markdown=True))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(to_json(results), out, indent=2)
            out.write("\n")
    progress(f"took {results.meta['wall_seconds']} s")
    return 130 if results.meta.get("interrupted") else 0
