"""Channel-layer benchmark: towpath's layers beside their peers, measured in the same run.

``python -m bench layers --preset memory`` compares towpath's in-memory layer with Channels'.
Any layer class can be measured::

    python -m bench layers \\
        --layer towpath=towpath.layers.memory.InMemoryChannelLayer \\
        --config towpath='{"capacity": 100000}' \\
        --layer channels=channels.layers.InMemoryChannelLayer

The first layer is the subject; the ratio columns compare it with each of the others, oriented
so that a ratio above 1 means the subject did better. Every scenario runs ``--repeat`` times per
layer, interleaved (A, B, A, B, ...) so that all layers share the machine's noise, and the
table shows the median of the repeats. Each run gets a fresh layer and a fresh event loop and is
bounded by ``--timeout``; a run that fails shows as ``n/a (ErrorClass)`` and the rest go on.

Networked layers (``LayerSpec(shared=True)``, as in the redis preset) run every scenario with
two instances: the receiving side (``new_channel()``, ``receive()``) and the sending side
(``send()``, ``group_send()``) are separate layer instances on the same server, as an interface
server and a worker are separate processes. ``--instances one`` puts both sides in one
instance; ``--instances two``
forces two for layers given with ``--layer``. ``--start-redis`` runs against a throwaway
redis-server on a free loopback port; ``--redis-benchmark`` adds redis-benchmark's LPUSH rate
on the server used, unpipelined and with ``-P 16``, as the ceiling.

Adding a preset is one decorated function returning the layers to compare::

    @preset("redis", "towpath vs channels_redis on --redis-url", setup=require_redis)
    def _redis(options: Options) -> list[LayerSpec]:
        hosts = [options.redis_url]
        return [
            LayerSpec("towpath", "towpath.layers.redis.RedisChannelLayer", {"hosts": hosts},
                      shared=True),
            LayerSpec("channels_redis", "channels_redis.core.RedisChannelLayer", {"hosts": hosts},
                      shared=True),
        ]

``setup`` (optional, async) runs once before anything is measured and may return facts for the
report (``{"redis-server": "7.0.15"}``); raising ``SetupError`` there stops the run with its message
(e.g. "no Redis at redis://..."). A preset that needs a new command-line option adds a field
to :class:`Options` and a flag in :func:`add_arguments`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

from bench.report import format_number, format_ratio, markdown_table, text_table
from bench.scenarios import SCENARIOS, LayerFactory, Layers, Metric, Scenario, Sizes

__all__ = [
    "PRESETS",
    "LayerSpec",
    "Options",
    "Preset",
    "Results",
    "SetupError",
    "add_arguments",
    "main",
    "preset",
    "run",
]

#: Capacity the presets give every layer, so send_receive never meets ChannelFull.
BENCH_CAPACITY = 100_000
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"

#: ``--instances``: per layer's ``shared`` flag, or one / two instances for every layer.
InstanceMode: TypeAlias = Literal["auto", "one", "two"]
#: A preset's setup: runs once before measuring, may return facts for the report's meta.
Setup: TypeAlias = Callable[["Options"], Coroutine[Any, Any, Mapping[str, Any] | None]]


class SetupError(Exception):
    """A preset cannot run here (its server is missing, ...). The message says what to do."""


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """Command-line settings presets may need."""

    redis_url: str = DEFAULT_REDIS_URL
    rabbitmq_url: str = DEFAULT_RABBITMQ_URL


@dataclasses.dataclass(frozen=True, slots=True)
class LayerSpec:
    """A layer under test: a label, the dotted path of its class and its keyword config.

    ``shared``: instances built from this config share channels and groups (through a
    server), so scenarios can put the receiving side and the sending side in two instances,
    as two processes would be. False for in-memory layers, whose instances share nothing."""

    name: str
    path: str
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    shared: bool = False

    def factory(self) -> LayerFactory:
        """A callable building a fresh layer. Import errors surface when it is called, so a
        layer that is missing fails its runs (shown as n/a) rather than the whole benchmark."""

        def build() -> Any:
            module_name, _, class_name = self.path.rpartition(".")
            if not module_name:
                raise ImportError(f"{self.path!r} is not a dotted path to a class")
            cls = getattr(importlib.import_module(module_name), class_name)
            return cls(**self.config)

        return build


@dataclasses.dataclass(frozen=True, slots=True)
class Preset:
    name: str
    description: str
    layers: Callable[[Options], list[LayerSpec]]
    setup: Setup | None = None


PRESETS: dict[str, Preset] = {}


def preset(
    name: str,
    description: str,
    *,
    setup: Setup | None = None,
) -> Callable[[Callable[[Options], list[LayerSpec]]], Callable[[Options], list[LayerSpec]]]:
    """Register the decorated ``(Options) -> [LayerSpec, ...]`` function as preset ``name``.
    The first layer it returns is the subject the ratios are about."""

    def register(
        func: Callable[[Options], list[LayerSpec]],
    ) -> Callable[[Options], list[LayerSpec]]:
        if name in PRESETS:
            raise ValueError(f"preset {name!r} is already registered")
        PRESETS[name] = Preset(name, description, func, setup)
        return func

    return register


# -- presets -----------------------------------------------------------------------------------


@preset("memory", "towpath InMemoryChannelLayer vs channels.layers.InMemoryChannelLayer")
def _memory(options: Options) -> list[LayerSpec]:
    config = {"capacity": BENCH_CAPACITY}
    return [
        LayerSpec("towpath", "towpath.layers.memory.InMemoryChannelLayer", config),
        LayerSpec("channels", "channels.layers.InMemoryChannelLayer", config),
    ]


async def require_redis(options: Options) -> Mapping[str, Any]:
    """Fail fast, with the URL, when no Redis answers at ``--redis-url``; else its version."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(options.redis_url)
    try:
        async with asyncio.timeout(5):
            await client.ping()
            info = await client.info("server")
            return {"redis-server": info.get("redis_version")}
    except Exception as exc:
        raise SetupError(
            f"no Redis answers at {options.redis_url} ({type(exc).__name__}: {exc}); "
            "start redis-server or pass --redis-url"
        ) from exc
    finally:
        await client.aclose()


@preset(
    "redis",
    "towpath RedisChannelLayer vs channels_redis RedisChannelLayer and RedisPubSubChannelLayer "
    "on --redis-url",
    setup=require_redis,
)
def _redis(options: Options) -> list[LayerSpec]:
    hosts = [options.redis_url]
    return [
        LayerSpec(
            "towpath",
            "towpath.layers.redis.RedisChannelLayer",
            {"hosts": hosts, "capacity": BENCH_CAPACITY},
            shared=True,
        ),
        LayerSpec(
            "channels_redis",
            "channels_redis.core.RedisChannelLayer",
            {"hosts": hosts, "capacity": BENCH_CAPACITY},
            shared=True,
        ),
        LayerSpec(
            "channels_redis_pubsub",
            "channels_redis.pubsub.RedisPubSubChannelLayer",
            {"hosts": hosts},
            shared=True,
        ),
    ]


async def require_rabbitmq(options: Options) -> Mapping[str, Any]:
    """Fail fast when no RabbitMQ answers at ``--rabbitmq-url`` (or no Redis at
    ``--redis-url``, the layer it is measured beside); else both servers' versions."""
    import aio_pika

    facts = dict(await require_redis(options))
    try:
        async with asyncio.timeout(10):
            connection = await aio_pika.connect(options.rabbitmq_url)
    except Exception as exc:
        parts = urlsplit(options.rabbitmq_url)
        where = f"{parts.hostname}:{parts.port or 5672}"
        raise SetupError(
            f"no RabbitMQ answers at {where} ({type(exc).__name__}: {exc}); "
            "start rabbitmq-server or pass --rabbitmq-url"
        ) from exc
    try:
        transport = connection.transport
        properties = transport.connection.server_properties if transport is not None else {}
        version = properties.get("version")
        facts["rabbitmq-server"] = version.decode() if isinstance(version, bytes) else version
    finally:
        await connection.close()
    for package in ("aio-pika", "aiormq"):
        facts[package] = _package_version(package)
    return facts


@preset(
    "rabbitmq",
    "towpath RabbitMQChannelLayer on --rabbitmq-url vs towpath RedisChannelLayer on --redis-url",
    setup=require_rabbitmq,
)
def _rabbitmq(options: Options) -> list[LayerSpec]:
    return [
        LayerSpec(
            "rabbitmq",
            "towpath.layers.rabbitmq.RabbitMQChannelLayer",
            {"url": options.rabbitmq_url, "prefix": "towpath-bench", "capacity": BENCH_CAPACITY},
            shared=True,
        ),
        LayerSpec(
            "redis",
            "towpath.layers.redis.RedisChannelLayer",
            {"hosts": [options.redis_url], "capacity": BENCH_CAPACITY},
            shared=True,
        ),
    ]


@preset(
    "ipc",
    "towpath IPCChannelLayer (no server) vs towpath RedisChannelLayer on --redis-url",
    setup=require_redis,
)
def _ipc(options: Options) -> list[LayerSpec]:
    return [
        LayerSpec(
            "ipc",
            "towpath.layers.ipc.IPCChannelLayer",
            {"prefix": f"bench{os.getpid()}", "capacity": BENCH_CAPACITY},
            shared=True,
        ),
        LayerSpec(
            "redis",
            "towpath.layers.redis.RedisChannelLayer",
            {"hosts": [options.redis_url], "capacity": BENCH_CAPACITY},
            shared=True,
        ),
    ]


# -- running -----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class RunResult:
    """One scenario run of one layer: its figures, or the error that ended it."""

    values: dict[str, float] | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def error_class(self) -> str:
        return (self.error or "").partition(":")[0]


@dataclasses.dataclass(slots=True)
class Results:
    layers: list[LayerSpec]
    scenarios: list[Scenario]
    sizes: Sizes
    repeat: int
    meta: dict[str, Any]
    runs: dict[tuple[str, str], list[RunResult]] = dataclasses.field(default_factory=dict)

    def values(self, layer: str, scenario: str, metric: str) -> list[float]:
        return [
            run.values[metric]
            for run in self.runs.get((layer, scenario), [])
            if run.values is not None and metric in run.values
        ]

    def median(self, layer: str, scenario: str, metric: str) -> float | None:
        values = self.values(layer, scenario, metric)
        return statistics.median(values) if values else None

    def errors(self, layer: str, scenario: str) -> list[str]:
        return [run.error for run in self.runs.get((layer, scenario), []) if run.error]

    def paired_ratio(self, metric: Metric, scenario: str, subject: str, peer: str) -> float | None:
        """Median of the per-repeat ratios (runs i of both layers ran back to back), which
        shrugs off the machine changing speed between repeats; oriented as :meth:`ratio`."""
        ratios = []
        pairs = zip(
            self.runs.get((subject, scenario), []),
            self.runs.get((peer, scenario), []),
            strict=False,
        )
        for ours, theirs in pairs:
            a = (ours.values or {}).get(metric.key)
            b = (theirs.values or {}).get(metric.key)
            if a and b and a > 0 and b > 0:
                ratios.append(a / b if metric.higher_is_better else b / a)
        return statistics.median(ratios) if ratios else None

    def ratio(self, metric: Metric, scenario: str, subject: str, peer: str) -> float | None:
        """``subject`` against ``peer``, above 1 when the subject is better."""
        ours, theirs = (self.median(name, scenario, metric.key) for name in (subject, peer))
        if ours is None or theirs is None or ours <= 0 or theirs <= 0:
            return None
        return ours / theirs if metric.higher_is_better else theirs / ours


def _figures(value: float | Mapping[str, float], scenario: Scenario) -> dict[str, float]:
    if isinstance(value, Mapping):
        return {key: float(figure) for key, figure in value.items()}
    return {scenario.metrics[0].key: float(value)}


async def _measure(
    scenario: Scenario, layers: Layers, sizes: Sizes, limit: float
) -> dict[str, float]:
    async with asyncio.timeout(limit):
        return _figures(await scenario.func(layers, sizes), scenario)


def two_instances(spec: LayerSpec, mode: InstanceMode = "auto") -> bool:
    """Whether ``spec`` runs with a receiving and a sending instance (else one for both)."""
    return spec.shared if mode == "auto" else mode == "two"


def run_once(
    scenario: Scenario,
    spec: LayerSpec,
    sizes: Sizes,
    limit: float,
    instances: InstanceMode = "auto",
) -> RunResult:
    """One run in a fresh event loop, so nothing a failed run left behind disturbs the next."""
    gc.collect()
    started = time.perf_counter()
    layers = Layers(spec.factory(), two_instances(spec, instances))
    try:
        values = asyncio.run(_measure(scenario, layers, sizes, limit))
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}".rstrip(": ")
        result = RunResult(error=message)
    else:
        result = RunResult(values=values)
    result.seconds = time.perf_counter() - started
    return result


def run(
    layers: Sequence[LayerSpec],
    scenarios: Sequence[Scenario],
    *,
    sizes: Sizes,
    repeat: int,
    timeout: float,
    instances: InstanceMode = "auto",
    meta: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Results:
    """Measure every scenario ``repeat`` times per layer, layers interleaved within a repeat.
    A layer whose first run of a scenario fails is not run again on it. Ctrl-C stops early and
    keeps what was measured."""
    results = Results(list(layers), list(scenarios), sizes, repeat, meta or {})
    results.meta["instances"] = {
        spec.name: 2 if two_instances(spec, instances) else 1 for spec in layers
    }
    try:
        for scenario in scenarios:
            for rep in range(repeat):
                for spec in layers:
                    done = results.runs.setdefault((spec.name, scenario.name), [])
                    if done and all(r.values is None for r in done):
                        continue  # it failed every time so far: a missing feature, not noise
                    result = run_once(scenario, spec, sizes, timeout, instances)
                    done.append(result)
                    if progress is not None:
                        progress(_progress_line(scenario, spec, rep, repeat, result))
    except KeyboardInterrupt:
        if progress is not None:
            progress("interrupted: reporting what was measured so far")
        results.meta["interrupted"] = True
    return results


def _progress_line(
    scenario: Scenario, spec: LayerSpec, rep: int, repeat: int, result: RunResult
) -> str:
    if result.values is None:
        figures = f"failed: {result.error}"
    else:
        units = {metric.key: metric.unit for metric in scenario.metrics}
        figures = ", ".join(
            f"{key} {format_number(value, units.get(key, ''))} {units.get(key, '')}"
            for key, value in result.values.items()
        )
    return f"[{scenario.name} {rep + 1}/{repeat}] {spec.name}: {figures} ({result.seconds:.1f}s)"


# -- reporting ---------------------------------------------------------------------------------


def _cell(results: Results, layer: str, scenario: Scenario, metric: Metric) -> str:
    median = results.median(layer, scenario.name, metric.key)
    errors = results.errors(layer, scenario.name)
    if median is None:
        classes = sorted({error.partition(":")[0] for error in errors}) or ["not run"]
        return f"n/a ({', '.join(classes)})"
    text = format_number(median, metric.unit)
    return f"{text}*" if errors else text


def table_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    names = [spec.name for spec in results.layers]
    subject, peers = names[0], names[1:]
    header = ["scenario", "metric", "unit", "better", *names]
    header += [f"{subject} vs {peer}" for peer in peers]
    rows: list[list[str]] = []
    for scenario in results.scenarios:
        for metric in scenario.metrics:
            row = [
                scenario.name,
                metric.key,
                metric.unit,
                "higher" if metric.higher_is_better else "lower",
            ]
            row += [_cell(results, name, scenario, metric) for name in names]
            for peer in peers:
                ratio = results.ratio(metric, scenario.name, subject, peer)
                row.append("n/a" if ratio is None else format_ratio(ratio))
            rows.append(row)
    return header, rows


def instances_line(results: Results) -> str:
    """Which layers ran with separate receiving and sending instances, for above the table."""
    counts = results.meta.get("instances", {})
    two = [spec.name for spec in results.layers if counts.get(spec.name) == 2]
    one = [spec.name for spec in results.layers if counts.get(spec.name, 1) == 1]
    parts = []
    if two:
        parts.append(
            f"TWO instances per run for {', '.join(two)}: the receiving side (new_channel, "
            "receive) and the sending side (send, group_send) are separate layer instances "
            "on one server, as two processes would be"
        )
    if one:
        parts.append(f"ONE instance for both sides for {', '.join(one)}")
    return "Instances: " + "; ".join(parts)


def _notes(results: Results) -> list[str]:
    subject = results.layers[0].name
    notes = [
        f"median of {results.repeat} interleaved runs per layer; "
        f"ratios: above 1x means {subject} is better (higher msgs/s, lower ms)"
    ]
    for label, rate in results.meta.get("ceiling", {}).items():
        notes.append(f"ceiling: `{label}`: {format_number(rate, '/s')} requests/s")
    for spec in results.layers:
        for scenario in results.scenarios:
            errors = results.errors(spec.name, scenario.name)
            total = len(results.runs.get((spec.name, scenario.name), []))
            for error in sorted(set(errors)):
                notes.append(
                    f"{spec.name} / {scenario.name}: {errors.count(error)} of {total} runs "
                    f"failed: {error[:300]}"
                )
    if any(
        results.errors(s.name, sc.name) and results.values(s.name, sc.name, sc.metrics[0].key)
        for s in results.layers
        for sc in results.scenarios
    ):
        notes.append("* some runs failed; the median is of the runs that succeeded")
    return notes


def render_text(results: Results) -> str:
    header, rows = table_rows(results)
    layers = "; ".join(
        f"{spec.name} = {spec.path} {json.dumps(dict(spec.config))}" for spec in results.layers
    )
    meta = results.meta
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v)
    lines = [
        f"Channel layers: {layers}",
        f"{meta.get('date', '')}  Python {meta.get('python', '?')}  {meta.get('cpus', '?')} CPUs"
        f"  {versions}",
        instances_line(results),
        "",
        text_table(header, rows),
        "",
    ]
    lines += _notes(results)
    return "\n".join(lines)


def render_markdown(results: Results) -> str:
    header, rows = table_rows(results)
    lines = [instances_line(results) + ".", "", markdown_table(header, rows), ""]
    lines += [f"- {note}" for note in _notes(results)]
    return "\n".join(lines)


def to_json(results: Results) -> dict[str, Any]:
    subject = results.layers[0].name
    return {
        "meta": results.meta,
        "sizes": dataclasses.asdict(results.sizes),
        "repeat": results.repeat,
        "layers": [
            {"name": s.name, "path": s.path, "config": dict(s.config), "shared": s.shared}
            for s in results.layers
        ],
        "scenarios": [
            {
                "name": sc.name,
                "description": sc.description,
                "metrics": [dataclasses.asdict(m) for m in sc.metrics],
                "results": {
                    spec.name: {
                        "runs": [
                            dataclasses.asdict(r)
                            for r in results.runs.get((spec.name, sc.name), [])
                        ],
                        "median": {
                            m.key: results.median(spec.name, sc.name, m.key) for m in sc.metrics
                        },
                    }
                    for spec in results.layers
                },
                "ratios": {
                    peer.name: {
                        m.key: results.ratio(m, sc.name, subject, peer.name) for m in sc.metrics
                    }
                    for peer in results.layers[1:]
                },
                "paired_ratios": {
                    peer.name: {
                        m.key: results.paired_ratio(m, sc.name, subject, peer.name)
                        for m in sc.metrics
                    }
                    for peer in results.layers[1:]
                },
            }
            for sc in results.scenarios
        ],
    }


# -- ceiling -----------------------------------------------------------------------------------


def redis_benchmark(
    url: str, timeout: float, progress: Callable[[str], None] | None = None
) -> dict[str, float]:
    """redis-benchmark's LPUSH rate on the server at ``url``, unpipelined and 16 deep: what the
    server and the loopback can do at all. Each run is bounded by ``timeout``; what fails is
    left out (and said on ``progress``)."""
    binary = shutil.which("redis-benchmark")
    parts = urlsplit(url)
    if binary is None or parts.scheme not in ("redis", ""):
        if progress is not None:
            progress(f"redis-benchmark: skipped (binary {binary}, URL {url})")
        return {}
    base = [binary, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    if parts.password:
        base += ["-a", parts.password]
    args = ["-t", "lpush", "-n", "100000", "-q"]
    rates: dict[str, float] = {}
    for extra in ([], ["-P", "16"]):
        label = shlex.join(["redis-benchmark", *args, *extra])
        try:
            done = subprocess.run(
                [*base, *args, *extra], capture_output=True, text=True, timeout=timeout, check=True
            )
            # "LPUSH: 52083.33 requests per second, p50=0.479 msec" after \r progress lines.
            line = done.stdout.replace("\r", "\n").strip().splitlines()[-1]
            rates[label] = float(line.split(":", 1)[1].split()[0])
        except (OSError, subprocess.SubprocessError, IndexError, ValueError) as exc:
            if progress is not None:
                progress(f"{label}: failed ({type(exc).__name__}: {exc})")
            continue
        if progress is not None:
            progress(f"{label}: {rates[label]:,.0f} requests/s")
    return rates


# -- command line ------------------------------------------------------------------------------


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _meta(argv: Sequence[str]) -> dict[str, Any]:
    return {
        "command": "python -m bench " + shlex.join(argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "versions": {
            label: _package_version(package)
            for label, package in (
                ("towpath", "towpath"),
                ("channels", "channels"),
                ("channels-redis", "channels-redis"),
                ("redis-py", "redis"),
                ("hiredis", "hiredis"),
            )
        },
    }


def _name_value(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{flag} wants NAME=VALUE, not {text!r}")
    return name, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    presets = ", ".join(PRESETS)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help=f"a built-in set of layers to compare ({presets}); default: memory, unless "
        "--layer is given",
    )
    parser.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="NAME=DOTTED.CLASS",
        help="a layer class to measure (repeatable; the first one is the subject of the ratios)",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="keyword arguments for layer NAME as a JSON object, merged over the preset's",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these scenarios (repeatable or comma-separated): {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per layer and scenario")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds allowed for one scenario run"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply message and round-trip counts (0.1 for a quick look)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis for the redis preset (default: $REDIS_URL or %(default)s)",
    )
    parser.add_argument(
        "--rabbitmq-url",
        default=os.environ.get("RABBITMQ_URL", DEFAULT_RABBITMQ_URL),
        help="RabbitMQ for the rabbitmq preset (default: $RABBITMQ_URL or %(default)s)",
    )
    parser.add_argument(
        "--instances",
        choices=("auto", "one", "two"),
        default="auto",
        help="receiving and sending side as two layer instances (as two processes) or one; "
        "auto (default): two for networked layers (the redis preset), one for in-memory ones",
    )
    parser.add_argument(
        "--start-redis",
        action="store_true",
        help="start a throwaway redis-server on a free loopback port for this run (instead of "
        "--redis-url) and stop it afterwards",
    )
    parser.add_argument(
        "--redis-benchmark",
        action="store_true",
        help="also run redis-benchmark (LPUSH, unpipelined and -P 16) against the Redis used, "
        "as the ceiling",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every run's figures here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table too")
    parser.add_argument("--quiet", action="store_true", help="no per-run progress on stderr")
    parser.add_argument("--list", action="store_true", help="list presets and scenarios; exit")


def _select_layers(
    args: argparse.Namespace, options: Options
) -> tuple[list[LayerSpec], Preset | None]:
    chosen: Preset | None = None
    if args.preset or not args.layer:
        chosen = PRESETS[args.preset or "memory"]
    layers = chosen.layers(options) if chosen else []
    for text in args.layer:
        name, path = _name_value(text, "--layer")
        layers.append(LayerSpec(name, path, {}))
    names = [spec.name for spec in layers]
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"layer names must differ: {', '.join(names)}")
    for text in args.config:
        name, raw = _name_value(text, "--config")
        if name not in names:
            raise argparse.ArgumentTypeError(
                f"--config for unknown layer {name!r}; layers: {', '.join(names)}"
            )
        try:
            config = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"--config {name}: not JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise argparse.ArgumentTypeError(f"--config {name}: want a JSON object, not {raw}")
        index = names.index(name)
        spec = layers[index]
        layers[index] = dataclasses.replace(spec, config={**spec.config, **config})
    return layers, chosen


def _select_scenarios(args: argparse.Namespace) -> list[Scenario]:
    wanted = [name for text in args.scenario for name in text.split(",") if name]
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )
    return [SCENARIOS[name] for name in wanted] if wanted else list(SCENARIOS.values())


def _print_list() -> None:
    print("presets:")
    for item in PRESETS.values():
        print(f"  {item.name:<22} {item.description}")
        for spec in item.layers(Options()):
            mode = "two instances" if spec.shared else "one instance"
            print(f"  {'':<22}   {spec.name} = {spec.path} ({mode})")
    print("scenarios:")
    for sc in SCENARIOS.values():
        units = ", ".join(
            f"{m.key} {m.unit} ({'higher' if m.higher_is_better else 'lower'} is better)"
            for m in sc.metrics
        )
        print(f"  {sc.name:<22} {sc.description}; {units}")


def main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    if args.list:
        _print_list()
        return 0
    if args.repeat < 1 or args.timeout <= 0 or args.scale <= 0:
        parser.error("--repeat, --timeout and --scale must be positive")
    server = None
    if args.start_redis:
        from towpath.testing.services import RedisServer, RedisServerError

        try:
            server = RedisServer().start()
        except RedisServerError as exc:
            print(f"--start-redis: {exc}", file=sys.stderr)
            return 2
        print(f"started redis-server pid {server.pid} at {server.url}", file=sys.stderr)
    try:
        return _main(args, parser, argv, server.url if server else args.redis_url)
    finally:
        if server is not None:
            server.close()


def _main(
    args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str], url: str
) -> int:
    options = Options(redis_url=url, rabbitmq_url=args.rabbitmq_url)
    try:
        layers, chosen = _select_layers(args, options)
        scenarios = _select_scenarios(args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    meta = {**_meta(argv), "preset": chosen.name if chosen else None}
    if args.start_redis:
        meta["redis_url"] = f"{url} (started by --start-redis)"
    if chosen is not None and chosen.setup is not None:
        try:
            facts = asyncio.run(chosen.setup(options))
        except SetupError as exc:
            print(f"preset {chosen.name}: {exc}", file=sys.stderr)
            return 2
        meta["versions"].update(facts or {})

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.redis_benchmark:
        meta["ceiling"] = redis_benchmark(url, args.timeout, progress)
    results = run(
        layers,
        scenarios,
        sizes=Sizes().scaled(args.scale),
        repeat=args.repeat,
        timeout=args.timeout,
        instances=args.instances,
        meta=meta,
        progress=None if args.quiet else progress,
    )
    print(render_text(results))
    if args.markdown:
        print()
        print(render_markdown(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(to_json(results), out, indent=2)
            out.write("\n")
    return 130 if results.meta.get("interrupted") else 0
