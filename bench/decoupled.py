"""Decoupled-mode benchmark: HTTP through Redis and one worker, beside direct mode and uvicorn.

``python -m bench decoupled`` measures ``GET /`` of a hello-world app with
``wrk -t1 -c64 -d8s --latency`` (after a 1 s warm-up run, not counted) in these
configurations, each one a fresh set of processes per run, runs interleaved (A, B, C, A, B,
C, ...), tables showing the median of ``--repeat`` runs (default 3):

* ``direct``: ``towpath serve bench.apps:hello`` on core 0, wrk on core 1 (as ``bench servers``);
* ``uvicorn-h11``: ``uvicorn --http h11 --loop asyncio`` on core 0, wrk on core 1 (reference);
* ``decoupled-asgi@PIN``: a ``redis-server`` of its own on a free port (``--save ''
  --appendonly no``), ``towpath serve --settings S`` and ONE ``towpath runworker --settings S
  --asgi bench.apps:hello``: interface → Redis → worker → Redis → interface;
* ``decoupled-reply@PIN``: the same with the worker routing ``http.request`` to a message
  consumer answering with ``towpath.consumers.reply()`` (``bench.decoupled:ROUTES``);
* ``decoupled-asgi-uvloop@PIN``: ``decoupled-asgi`` with ``towpath serve --loop uvloop``
  (``runworker`` has no ``--loop``: the worker stays on asyncio).

``PIN`` (``--pinning``): ``split``: serve on core 0, the worker and redis-server on core 1, wrk
unpinned; ``alone``: serve alone on core 0, the worker, redis-server and wrk on core 1;
``none``: no taskset at all. The ratio column is *configuration vs direct*
(req/s), the added p50 is its p50 minus direct's; the issue's goals (decoupled ≥ 40% of
direct's req/s, ≤ 2 ms added p50) are marked met / not met under the table.

``--profile`` measures nothing: for each decoupled configuration selected it runs one load
with ``py-spy record`` attached to the interface server and to the worker, and prints where
each spends its time (the functions with the most samples on top of the stack, and their
share of stacks that contain them).

Process handling, wrk runs and parsing, CPU windows and the medians come from
``bench.servers``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import importlib.metadata
import itertools
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.apps import BODY
from bench.procs import (
    BASELINE_ENV,
    BIN,
    SERVERS,
    RunError,
    ServerProcess,
    ServerSpec,
    _core_busy,
    _Window,
)
from bench.report import format_number, format_ratio, markdown_table, text_table
from bench.servers import APPS, Column, Results, _meta, _names, _version, run_http1
from towpath.consumers import reply
from towpath.routing import route

__all__ = ["CONFIGS", "PINNINGS", "ROUTES", "add_arguments", "hello_reply", "main"]

SCENARIO = "http1"  # the bench.servers scenario whose runner and columns this reuses
RATIO_GOAL = 0.40
ADDED_P50_GOAL_MS = 2.0


async def hello_reply(message: Mapping[str, Any]) -> None:
    """``bench.apps.hello``'s answer from a message consumer: 200 text/plain "Hello, world!"."""
    await reply(message, 200, BODY, content_type="text/plain")


ROUTES = [route("http.request", hello_reply)]

SETTINGS = """\
CHANNEL_LAYERS = {{
    "default": {{
        "BACKEND": "towpath.layers.redis.RedisChannelLayer",
        "CONFIG": {{"hosts": ["redis://127.0.0.1:{port}/0"]}},
    }},
}}
"""
IPC_SETTINGS = """\
CHANNEL_LAYERS = {{
    "default": {{
        "BACKEND": "towpath.layers.ipc.IPCChannelLayer",
        "CONFIG": {{"prefix": "{prefix}"}},
    }},
}}
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Pinning:
    """taskset -c for each process of a decoupled run (None: not pinned)."""

    serve: str | None
    worker: str | None
    redis: str | None
    wrk: str | None
    description: str


PINNINGS = {
    "split": Pinning(
        "0", "1", "1", None, "serve on core 0, worker + redis on core 1, wrk unpinned"
    ),
    "alone": Pinning("0", "1", "1", "1", "serve alone on core 0, worker + redis + wrk on core 1"),
    "none": Pinning(None, None, None, None, "no pinning"),
}
DIRECT_PINNING = Pinning("0", None, None, "1", "server on core 0, wrk on core 1")

# The processes of a decoupled run, as bench.servers ServerSpecs: {app} is the settings file.
# A spec named towpath-* gets its per-run extra arguments through ServerProcess (towpath_arg).
REDIS = ServerSpec(
    "redis-server",
    "redis-server, no persistence",
    "redis-server --bind 127.0.0.1 --port {port} --save '' --appendonly no --loglevel warning",
    frozenset({SCENARIO}),
)
SERVE = ServerSpec(
    "towpath-serve",
    "towpath serve --settings (decoupled mode)",
    "{bin}/towpath serve --settings {app} --bind 127.0.0.1 --port {port} --log-level warning",
    frozenset({SCENARIO}),
    ("towpath",),
)
WORKER = ServerSpec(
    "towpath-runworker",
    "towpath runworker --settings",
    "{bin}/towpath runworker --settings {app} --log-level warning",
    frozenset({SCENARIO}),
    ("towpath",),
)
#: the same two of the checkout in $TOWPATH_BASELINE (its own .venv): a change before and after
SERVE_BASELINE, WORKER_BASELINE = (
    dataclasses.replace(
        spec,
        name=f"{spec.name}-baseline",
        command=spec.command.replace("{bin}", "{baseline_bin}"),
        needs=("baseline",),
    )
    for spec in (SERVE, WORKER)
)


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """One row: a server in direct mode (``server``) or a decoupled stack (``pinning``)."""

    name: str
    description: str
    server: ServerSpec | None = None
    worker_args: tuple[str, ...] = ()
    serve_args: tuple[str, ...] = ()
    pinning: str | None = None
    needs_modules: tuple[str, ...] = ()
    #: the layer of a decoupled stack: "redis" (a redis-server of its own) or "ipc"
    layer: str = "redis"
    #: a decoupled stack of the checkout in $TOWPATH_BASELINE
    baseline: bool = False

    @property
    def decoupled(self) -> bool:
        return self.server is None

    def missing(self) -> str | None:
        if self.server is not None:
            return self.server.missing()
        if self.layer == "redis" and shutil.which("redis-server") is None:
            return "redis-server not found"
        for module in self.needs_modules:
            try:
                importlib.metadata.version(module)
            except importlib.metadata.PackageNotFoundError:
                return f"{module} is not installed"
        return (SERVE_BASELINE if self.baseline else SERVE).missing()


def _configs() -> dict[str, Config]:
    configs = [
        Config("direct", "towpath serve bench.apps:hello (direct mode)", SERVERS["towpath"]),
        Config("uvicorn-h11", "uvicorn --http h11 --loop asyncio", SERVERS["uvicorn-h11"]),
    ]
    asgi = ("--asgi", APPS[SCENARIO])
    for pin in PINNINGS:
        configs += [
            Config(
                f"decoupled-asgi@{pin}",
                f"serve --settings + runworker --asgi {APPS[SCENARIO]}",
                worker_args=asgi,
                pinning=pin,
            ),
            Config(
                f"decoupled-reply@{pin}",
                "serve --settings + runworker --routing bench.decoupled:ROUTES (reply())",
                worker_args=("--routing", "bench.decoupled:ROUTES"),
                pinning=pin,
            ),
            Config(
                f"decoupled-asgi-uvloop@{pin}",
                "decoupled-asgi with serve --loop uvloop (the worker on asyncio)",
                worker_args=asgi,
                serve_args=("--loop", "uvloop"),
                pinning=pin,
                needs_modules=("uvloop",),
            ),
            Config(
                f"decoupled-ipc-asgi@{pin}",
                f"decoupled-asgi over the IPC layer (no redis-server): {APPS[SCENARIO]}",
                worker_args=asgi,
                pinning=pin,
                layer="ipc",
            ),
            Config(
                f"decoupled-ipc-reply@{pin}",
                "decoupled-reply over the IPC layer (no redis-server)",
                worker_args=("--routing", "bench.decoupled:ROUTES"),
                pinning=pin,
                layer="ipc",
            ),
        ]
    if os.environ.get(BASELINE_ENV):  # the same stacks of another checkout, to compare
        configs.append(
            Config("direct-baseline", "direct of $TOWPATH_BASELINE", SERVERS["towpath-baseline"])
        )
        configs += [
            dataclasses.replace(
                config,
                name=config.name.replace("@", "-baseline@"),
                description=f"{config.description}, of ${BASELINE_ENV}",
                baseline=True,
            )
            for config in configs
            if config.decoupled and config.layer == "redis" and not config.serve_args
        ]
    return {config.name: config for config in configs}


CONFIGS = _configs()
#: numbers the IPC runs, so each gets a prefix of its own
_RUNS = itertools.count()

COLUMNS = [
    Column("rps", "req/s", "/s", ratio=True),
    Column("p50_ms", "p50 ms", "ms"),
    Column("p99_ms", "p99 ms", "ms"),
    Column("non2xx", "non-2xx*", total=True),
    Column("socket_errors", "socket errors*", total=True),
    Column("cpu_pct", "server CPU %", "%"),
    Column("worker_cpu_pct", "worker CPU %", "%"),
    Column("redis_cpu_pct", "redis CPU %", "%"),
    Column("core_busy_pct", "core 0 busy %", "%"),
    Column("core1_busy_pct", "core 1 busy %", "%"),
    Column("client_cpu_pct", "wrk CPU %", "%"),
]
_RPS, _P50 = COLUMNS[0], COLUMNS[1]


# -- processes ---------------------------------------------------------------------------------


def _start(
    spec: ServerSpec, target: str, cpu: str | None, extra: Sequence[str] = ()
) -> ServerProcess:
    """A ServerProcess of ``spec`` pinned to ``cpu``, with ``extra`` arguments appended."""
    options = argparse.Namespace(towpath_arg=list(extra), server_cpu=cpu)
    return ServerProcess(spec, target, options)


def _wait_redis(redis: ServerProcess) -> None:
    redis.wait_ready(b"PING\r\n", b"+PONG")


class Stack:
    """What one run measures: the direct-mode server, or redis-server + ``towpath serve
    --settings`` + one ``towpath runworker``. Ready once a GET has been answered end to end;
    ``close()`` stops everything it started (serve first, so no request is left in flight)."""

    def __init__(self, config: Config, settings_dir: Path) -> None:
        self.config = config
        self.started: list[tuple[str, ServerProcess]] = []
        try:
            if config.server is not None:
                self.serve = self._add("server", _start(config.server, APPS[SCENARIO], "0"))
            else:
                self._start_decoupled(config, PINNINGS[config.pinning or "none"], settings_dir)
            self.serve.wait_ready()
            self.check()
        except BaseException as exc:
            logs = self.logs()
            self.close()
            if isinstance(exc, RunError):
                raise RunError(f"{str(exc)[-300:]} {logs}".strip()) from exc
            raise

    def _start_decoupled(self, config: Config, pin: Pinning, settings_dir: Path) -> None:
        if config.layer == "ipc":
            prefix = f"bench{os.getpid()}x{next(_RUNS)}"
            settings = settings_dir / f"bench_settings_{prefix}.py"
            settings.write_text(IPC_SETTINGS.format(prefix=prefix), encoding="utf-8")
        else:
            redis = self._add("redis", _start(REDIS, "", pin.redis))
            _wait_redis(redis)
            settings = settings_dir / f"bench_settings_{redis.port}.py"
            settings.write_text(SETTINGS.format(port=redis.port), encoding="utf-8")
        serve, worker = (SERVE_BASELINE, WORKER_BASELINE) if config.baseline else (SERVE, WORKER)
        self._add("worker", _start(worker, str(settings), pin.worker, config.worker_args))
        self.serve = self._add("server", _start(serve, str(settings), pin.serve, config.serve_args))

    def _add(self, role: str, process: ServerProcess) -> ServerProcess:
        self.started.append((role, process))
        return process

    @property
    def pinning(self) -> Pinning:
        if self.config.pinning is None:
            return DIRECT_PINNING
        return PINNINGS[self.config.pinning]

    def others(self) -> dict[str, ServerProcess]:
        return {role: process for role, process in self.started if process is not self.serve}

    def check(self) -> None:
        for role, process in self.started:
            if process.process.poll() is not None:
                raise RunError(f"{role} exited with {process.process.returncode}")

    def logs(self) -> str:
        tails = []
        for role, process in self.started:
            with contextlib.suppress(ValueError):  # closed: stopped already
                tail = process.log_tail(3)
                if tail:
                    tails.append(f"[{role}: {tail[-240:]}]")
        return " ".join(tails)

    def close(self) -> None:
        while self.started:
            _role, process = self.started.pop()  # the server first, Redis last
            process.stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _wrk_options(options: argparse.Namespace, wrk_cpu: str | None, **override: Any) -> Any:
    """Options for bench.servers.run_http1: wrk pinned to ``wrk_cpu``; its CPU window reads
    core 0 (where the server is, when pinned)."""
    fields = {**vars(options), "server_cpu": "0", "client_cpu": wrk_cpu, **override}
    return argparse.Namespace(**fields)


def measure(stack: Stack, options: argparse.Namespace) -> dict[str, float]:
    """A warm-up run (not counted), then the measured wrk run with CPU windows on every
    process of the stack and on both cores."""
    wrk_cpu = stack.pinning.wrk
    if options.warmup > 0:
        run_http1(stack.serve, _wrk_options(options, wrk_cpu, warmup=0, duration=options.warmup))
    windows = {role: _Window(process, None) for role, process in stack.others().items()}
    busy1 = _core_busy("cpu1")
    figures = run_http1(stack.serve, _wrk_options(options, wrk_cpu, warmup=0))
    (busy, total), (busy0, total0) = _core_busy("cpu1"), busy1
    figures["core1_busy_pct"] = 100 * (busy - busy0) / (total - total0) if total > total0 else 0
    for role, window in windows.items():
        figures[f"{role}_cpu_pct"] = window.figures()["cpu_pct"]
    stack.check()
    return figures


# -- running -----------------------------------------------------------------------------------


def run(
    configs: Sequence[Config],
    options: argparse.Namespace,
    meta: dict[str, Any],
    progress: Callable[[str], None] | None,
) -> Results:
    results = Results([SCENARIO], [c.name for c in configs], options.repeat, meta)
    broken: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="towpath-bench-") as settings_dir:
        try:
            for repeat in range(options.repeat):
                for config in configs:
                    if config.name in broken:
                        continue
                    key = (SCENARIO, config.name)
                    try:
                        with Stack(config, Path(settings_dir)) as stack:
                            figures = measure(stack, options)
                    except RunError as exc:
                        results.errors.setdefault(key, []).append(str(exc))
                        if not results.runs.get(key):
                            broken.add(config.name)  # failed its first run: do not try again
                        line = f"FAILED: {exc}"
                    else:
                        line = ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
                        figures["repeat"] = repeat
                        results.runs.setdefault(key, []).append(figures)
                    if progress:
                        progress(f"{config.name} run {repeat + 1}/{options.repeat}: {line}")
        except KeyboardInterrupt:
            results.meta["interrupted"] = True
    return results


# -- report ------------------------------------------------------------------------------------


def _added_p50(results: Results, name: str) -> tuple[float | None, float | None]:
    """(p50 - direct's p50 of the medians, median of the per-repeat differences)."""
    ours, direct = results.value(SCENARIO, name, _P50), results.value(SCENARIO, "direct", _P50)
    if ours is None or direct is None:
        return None, None
    theirs = {
        r["repeat"]: r["p50_ms"]
        for r in results.runs.get((SCENARIO, "direct"), [])
        if "p50_ms" in r
    }
    paired = [
        run["p50_ms"] - theirs[run["repeat"]]
        for run in results.runs.get((SCENARIO, name), [])
        if "p50_ms" in run and run["repeat"] in theirs
    ]
    return ours - direct, statistics.median(paired) if paired else None


def table(results: Results) -> tuple[list[str], list[list[str]]]:
    header = ["configuration", *(c.header for c in COLUMNS), "vs direct", "added p50 ms"]
    rows = []
    for name in results.servers:
        row = [name]
        for column in COLUMNS:
            value = results.value(SCENARIO, name, column)
            if value is None:
                row.append("")  # not measured for this row (direct mode has no worker)
            elif column.total:
                row.append(f"{value:,.0f}")
            else:
                row.append(format_number(value, column.unit))
        if not results.runs.get((SCENARIO, name)):
            row[1] = f"n/a ({'failed' if results.errors.get((SCENARIO, name)) else 'not run'})"
        ratio = results.ratio(SCENARIO, name, "direct") if name != "direct" else None
        added, _paired = _added_p50(results, name) if name != "direct" else (None, None)
        row.append(format_ratio(ratio) if ratio else "")
        row.append(f"{added:.2f}" if added is not None else "")
        rows.append(row)
    return header, rows


def goals(results: Results) -> list[list[str]]:
    """Issue 5's goals for every decoupled row: [goal, measured, verdict]. As in bench.servers,
    met when both the figure of the medians and the median of per-repeat (paired) figures
    reach it, borderline when one does."""
    rows = []
    verdicts = ["not met", "borderline", "met"]
    for name in results.servers:
        if not CONFIGS[name].decoupled:
            continue
        ratio = results.ratio(SCENARIO, name, "direct")
        paired = results.paired_ratio(SCENARIO, name, "direct")
        goal = f"{name}: req/s ≥ {RATIO_GOAL:.0%} of direct"
        if ratio is None or paired is None:
            rows.append([goal, "not measured", "n/a"])
        else:
            ours = results.value(SCENARIO, name, _RPS) or 0.0
            direct = results.value(SCENARIO, "direct", _RPS) or 0.0
            text = f"{ours:,.0f} vs {direct:,.0f} req/s: {ratio:.0%} (paired {paired:.0%})"
            met = (ratio >= RATIO_GOAL) + (paired >= RATIO_GOAL)
            rows.append([goal, text, verdicts[met]])
        added, paired_added = _added_p50(results, name)
        goal = f"{name}: p50 ≤ direct's + {ADDED_P50_GOAL_MS:g} ms"
        if added is None or paired_added is None:
            rows.append([goal, "not measured", "n/a"])
        else:
            ours = results.value(SCENARIO, name, _P50) or 0.0
            direct = results.value(SCENARIO, "direct", _P50) or 0.0
            text = f"{ours:.2f} - {direct:.2f} ms = {added:+.2f} ms (paired {paired_added:+.2f} ms)"
            met = (added <= ADDED_P50_GOAL_MS) + (paired_added <= ADDED_P50_GOAL_MS)
            rows.append([goal, text, verdicts[met]])
    return rows


def _notes(results: Results) -> list[str]:
    meta = results.meta
    pinnings = "; ".join(f"{name}: {pin.description}" for name, pin in PINNINGS.items())
    notes = [
        f"median of {results.repeat} interleaved runs per configuration (fresh processes each "
        f"run, Redis included); wrk -t1 -c{meta['connections']} -d{meta['duration']:g}s "
        f"--latency after a {meta['warmup']:g} s warm-up run; * counts are the sum over all runs",
        f"pinning: direct and uvicorn-h11: {DIRECT_PINNING.description}; @{pinnings}",
        "vs direct: req/s ratio to direct (above 1x: faster than direct); added p50: p50 minus "
        "direct's p50. CPU %: each process tree, in % of one core; core busy %: everything on "
        "that core (processes, loopback softirqs, other load), from /proc/stat",
        f"load average at start: {meta['load_average']}; wall time "
        f"{meta.get('wall_seconds', '?')} s",
    ]
    if meta.get("interrupted"):
        notes.append("INTERRUPTED: partial results")
    for name, reason in meta.get("skipped", {}).items():
        notes.append(f"skipped {name}: {reason}")
    for (_scenario, name), errors in results.errors.items():
        for error in sorted(set(errors)):
            notes.append(f"{name}: {error}")
    return notes


def render(results: Results, markdown: bool) -> str:
    tabulate = markdown_table if markdown else text_table
    header, rows = table(results)
    title = "HTTP/1.1 hello world through the layer (interface → Redis → worker → Redis)"
    parts = [
        f"**{title}**\n\n{tabulate(header, rows)}"
        if markdown
        else f"{title}\n{tabulate(header, rows)}",
        ("**Goals (issue 5)**\n\n" if markdown else "Goals (issue 5)\n")
        + tabulate(["goal", "measured (same run)", "verdict"], goals(results)),
    ]
    bullet = "* " if markdown else "  "
    parts.append("\n".join(bullet + note for note in _notes(results)))
    return "\n\n".join(parts)


def to_json(results: Results) -> dict[str, Any]:
    return {
        "meta": results.meta,
        "configurations": {
            name: {
                "runs": results.runs.get((SCENARIO, name), []),
                "errors": results.errors.get((SCENARIO, name), []),
                "median": {c.key: results.value(SCENARIO, name, c) for c in COLUMNS},
            }
            for name in results.servers
        },
        "goals": goals(results),
    }


# -- profile -----------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frames(stack: str) -> Iterator[str]:
    """py-spy's raw frames ("function (file:line)") as "function (file)"."""
    for frame in stack.split(";"):
        match = _FRAME.match(frame)
        yield f"{match['function']} ({match['file']})" if match else frame


def top_functions(raw: str, count: int) -> tuple[int, list[tuple[str, float, float]]]:
    """From py-spy's raw (collapsed) output: the number of samples and the ``count`` functions
    with the most samples on top of the stack, as (function, self %, total %)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        n = int(number)
        samples += n
        frames = list(_frames(stack))
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return 0, []
    return samples, [
        (name, 100 * n / samples, 100 * total[name] / samples) for name, n in own.most_common(count)
    ]


def profile(configs: Sequence[Config], options: argparse.Namespace) -> str:
    py_spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(py_spy).exists():
        raise RunError("py-spy not found: .venv/bin/pip install py-spy")
    seconds = max(1, round(options.duration))
    parts = []
    with tempfile.TemporaryDirectory(prefix="towpath-bench-") as tmp:
        for config in configs:
            with Stack(config, Path(tmp)) as stack:
                if options.warmup > 0:
                    warm = _wrk_options(
                        options, stack.pinning.wrk, warmup=0, duration=options.warmup
                    )
                    run_http1(stack.serve, warm)
                targets = {"server": stack.serve, "worker": stack.others()["worker"]}
                spies = {}
                for role, process in targets.items():
                    out = Path(tmp) / f"{config.name}-{role}.txt"
                    argv = [py_spy, "record", "-p", str(process.process.pid), "-d", str(seconds)]
                    argv += ["-r", str(options.profile_rate), "-f", "raw", "-o", str(out)]
                    spy = subprocess.Popen(
                        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                    )
                    spies[role] = (spy, out)
                time.sleep(0.3)  # py-spy attaches
                figures = run_http1(stack.serve, _wrk_options(options, stack.pinning.wrk, warmup=0))
                parts.append(
                    f"{config.name} (profiled run: {figures['rps']:,.0f} req/s, p50 "
                    f"{figures['p50_ms']:.2f} ms; py-spy at {options.profile_rate} Hz, "
                    f"{seconds} s)"
                )
                for role, (spy, out) in spies.items():
                    _out, err = spy.communicate(timeout=seconds + 60)
                    if spy.returncode != 0 or not out.exists():
                        raise RunError(f"py-spy on the {role} failed: {err.strip()[-300:]}")
                    raw = out.read_text()
                    if options.profile_out:
                        keep = Path(options.profile_out)
                        keep.mkdir(parents=True, exist_ok=True)
                        (keep / out.name).write_text(raw)
                    samples, top = top_functions(raw, options.top)
                    busy = samples / (options.profile_rate * seconds)
                    rows = [[name, f"{own:.1f}", f"{incl:.1f}"] for name, own, incl in top]
                    header = [f"{role}: function (file)", "self %", "total %"]
                    parts.append(
                        f"{role}: {samples:,} non-idle samples (busy ≈ {busy:.0%} of the run)\n"
                        + (markdown_table if options.markdown else text_table)(header, rows)
                    )
    return "\n\n".join(parts)


# -- command line ------------------------------------------------------------------------------


# fmt: off
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", action="append", default=[], metavar="NAME",
        help="configurations to run (repeatable or comma-separated); default: all that are "
        "installed (see --list); direct is always added, the ratios need it")
    add("--pinning", action="append", default=[], metavar="NAME",
        help=f"decoupled pinnings to run when no --config is given: {', '.join(PINNINGS)} "
        "(default all)")
    add("--quick", action="store_true",
        help="smoke check: 2 s runs, 0.5 s warm-up, 1 repeat (explicit options still win)")
    add("--repeat", type=int, help="runs per configuration (default 3)")
    add("--duration", type=float, help="seconds per measured run (default 8)")
    add("--warmup", type=float, help="seconds of load before each run (default 1)")
    add("--connections", type=int, default=64, help="wrk connections (64)")
    add("--profile", action="store_true",
        help="no table: one py-spy-profiled run per decoupled configuration; top functions "
        "of the server and the worker")
    add("--profile-rate", type=int, default=100, help="py-spy samples per second (100)")
    add("--top", type=int, default=10, help="functions per profile (10)")
    add("--profile-out", metavar="DIR",
        help="keep py-spy's raw (collapsed-stack) files here, for flame graphs or line numbers")
    add("--json", metavar="FILE", help="also write every run's figures here")
    add("--markdown", action="store_true", help="print Markdown tables too")
    add("--quiet", action="store_true", help="no per-run progress on stderr")
    add("--list", action="store_true", help="list configurations; exit")
# fmt: on


def _select(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    names = _names(args.config)
    pinnings = _names(args.pinning) or list(PINNINGS)
    unknown = [n for n in names if n not in CONFIGS] + [p for p in pinnings if p not in PINNINGS]
    if unknown:
        parser.error(f"unknown configuration or pinning: {', '.join(unknown)}")
    if not names:
        names = [
            name
            for name, config in CONFIGS.items()
            if not config.decoupled or config.pinning in pinnings
        ]
    if not args.profile and "direct" not in names:
        names.insert(0, "direct")
    return names


def main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    if args.list:
        for config in CONFIGS.values():
            state = config.missing() or "installed"
            print(f"  {config.name:<28} {config.description} ({state})")
        for name, pin in PINNINGS.items():
            print(f"  @{name:<27} {pin.description}")
        return 0
    for name, normal, fast in [("repeat", 3, 1), ("duration", 8.0, 2.0), ("warmup", 1.0, 0.5)]:
        if getattr(args, name) is None:
            setattr(args, name, fast if args.quick else normal)
    if args.repeat < 1 or args.duration <= 0 or args.connections < 1:
        parser.error("--repeat, --duration and --connections must be positive")
    names = _select(args, parser)
    missing_tools = [tool for tool in ("wrk", "taskset") if not shutil.which(tool)]
    if missing_tools:
        print(f"missing: {', '.join(missing_tools)}", file=sys.stderr)
        return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # servers inherit it
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    configs, skipped = [], {}
    for name in names:
        reason = CONFIGS[name].missing()
        if reason:
            skipped[name] = reason
        elif not args.profile or CONFIGS[name].decoupled:
            configs.append(CONFIGS[name])
    if not configs or (not args.profile and configs[0].name != "direct"):
        print(f"nothing to run (direct mode is needed for the ratios): {skipped}", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that every process started is stopped (finally clauses)

    previous = signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    try:
        if args.profile:
            print(profile(configs, args))
            return 0
        meta = _meta(argv, _wrk_options(args, "1"))
        meta.update(
            connections=args.connections,
            duration=args.duration,
            warmup=args.warmup,
            server_cpu=f"direct: {DIRECT_PINNING.serve}; decoupled: see pinning",
            client_cpu=f"direct: {DIRECT_PINNING.wrk}; decoupled: see pinning",
            pinnings={name: dataclasses.asdict(pin) for name, pin in PINNINGS.items()},
            skipped=skipped,
        )
        meta["versions"].update(
            {"redis-server": _version(["redis-server", "--version"])}
            | {name: _package(name) for name in ("redis", "hiredis")}
        )
        results = run(configs, args, meta, None if args.quiet else progress)
    except RunError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    results.meta["wall_seconds"] = round(time.monotonic() - started)
    print(render(results, markdown=False))
    if args.markdown:
        print()
        print(render(results, markdown=True))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(to_json(results), out, indent=2, default=str)
            out.write("\n")
    progress(f"took {results.meta['wall_seconds']} s")
    return 130 if results.meta.get("interrupted") else 0


def _package(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
