"""Hostile clients and broken environments: what each costs a server, towpath beside its peers.

``python -m bench attacks`` runs every attack against towpath serve (direct mode), uvicorn
(h11 and httptools), hypercorn and daphne, each server its own fresh process per attack (on a
free loopback port, pinned to ``--server-cpu``, the attacking client on ``--client-cpu``),
all serving the same tiny ASGI app (``bench/attacks_app.py``); a server that does not speak
the attack's protocol (HTTP/2 cleartext: only towpath and hypercorn) gets "n/a". The
decoupled attacks run against towpath serve + one runworker over a redis-server of the
bench's own. One table per attack:

* **answer**: what the attacking client got: a status, a GOAWAY or close code, "served", ...
  (each attack's line says what a sound server answers);
* **peak RSS +MiB**: the server's peak resident memory (its whole process tree, sampled every
  50 ms from before the attack until the normal client's last request after it) minus its
  RSS just before the attack;
* **CPU s**: CPU-seconds the server used while the attack ran;
* **answer s**: seconds from the attack's start to that answer (see each attack);
* **log KiB**: what the server wrote to stdout/stderr during the attack (every server at log
  level warning);
* **served during / after**: a second, normal client (a fresh connection, ``GET /``,
  ``--probe-timeout`` seconds) asks every ``--probe-interval`` seconds while the attack runs,
  then ``--after-probes`` times right after it: k of n got a 200.

Attacks (``--attack NAME``, or a prefix: ``h2``, ``ws``, ``head``, ...; ``--list``):

1. ``h2-window-big``, ``h2-window-streams``: HTTP/2 windows of 2^31-1, one 500 MiB
   response or 100 x 10 MiB, a client that reads the response HEADERS and then nothing for
   ``--hold`` seconds (its socket receive buffer ``--client-rcvbuf``);
2. ``h2-rapid-reset``: HEADERS + RST_STREAM pairs for ``--flood-seconds``;
3. ``h2-ping-flood``, ``h2-settings-flood``: frames that each need an ACK, never read;
4. ``smuggle-cl-te``, ``smuggle-dup-cl``: request smuggling (was the hidden request served?);
5. ``head-17k``, ``head-65k``, ``head-10k-headers``, ``head-100k-target``: oversized heads
   written in one piece;
6. ``slowloris``: connections sending a header byte every few seconds;
7. ``ws-deflate-idle`` (KiB per idle compressed WebSocket), ``ws-deflate-bomb``,
   ``ws-bad-utf8-text``, ``ws-bad-utf8-close``;
8. ``ws-origin``: ``Origin: http://evil.example``;
9. ``xff``: ``X-Forwarded-For: evil<script>`` with the server's proxy-headers option on;
10. ``fd-flood``: the server under ``ulimit -n --fd-limit`` (``prlimit``), more connections
    than that for ``--fd-seconds``;
11. ``bad-http-9.9``, ``bad-http-2.0``, ``bad-chunk-size``: bad request lines, a 2^64 chunk;
12. ``decoupled-malformed-garbage``, ``-payload``, ``-shape``, ``-poison`` and
    ``decoupled-redis-outage``.

The list is ``bench/attacks_registry.py``; the clients are in ``bench/attacks_h2.py``,
``attacks_http.py``, ``attacks_ws.py`` and ``attacks_decoupled.py``. ``--json FILE`` keeps
every figure (put it under ``bench/results/``); ``--before FILE`` adds the towpath rows of an
earlier run's JSON to each table ("towpath (before)"), so fixed code can be shown beside the
old figures and its peers of this run; ``--from-json FILE`` prints a saved run's tables
without running anything::

    python -m bench attacks --markdown --json bench/results/attacks-before.json
    python -m bench attacks --markdown --json bench/results/attacks-after.json \\
        --before bench/results/attacks-before.json      # later, against fixed code
    python -m bench attacks --from-json bench/results/attacks-after.json \\
        --before bench/results/attacks-before.json --markdown

The whole run takes about 5.5 minutes (2-core VM); ``--quick`` about 2.5.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from bench import attacks_decoupled
from bench.attacks_base import LogWindow, Outcome, probe
from bench.attacks_registry import ATTACKS, Attack
from bench.procs import ROOT, SERVERS, RunError, ServerProcess, _cpu_seconds, _rss_kib
from bench.report import format_number, markdown_table, text_table

__all__ = ["ATTACKS", "DEFAULT_SERVERS", "Attack", "add_arguments", "main", "run_attack"]

APP = "bench.attacks_app:app"
DECOUPLED = "towpath-decoupled"
DEFAULT_SERVERS = ["towpath", "uvicorn-h11", "uvicorn-httptools", "hypercorn", "daphne", DECOUPLED]
SAMPLE_SECONDS = 0.05
LOG_EXCERPT_BYTES = 600  # of what a server logged during an attack, kept in the JSON


# -- targets -----------------------------------------------------------------------------------


class DirectTarget:
    """One server of ``bench.procs.SERVERS`` as ``bench.procs.ServerProcess`` runs it, with the
    attack's extra options (log level warning for towpath as for its peers, proxy headers,
    ``prlimit --nofile``)."""

    def __init__(self, name: str, attack: Attack, options: argparse.Namespace) -> None:
        spec = SERVERS[name]
        suffix = [flag for family, flag in attack.flags.items() if name.startswith(family)]
        if name.startswith("towpath"):
            suffix.append("--log-level warning")
        prefix = (
            f"prlimit --nofile={options.fd_limit}:{options.fd_limit} " if attack.fd_limit else ""
        )
        spec = dataclasses.replace(spec, command=f"{prefix}{spec.command} {' '.join(suffix)}")
        self.name = name
        self.server = ServerProcess(
            spec, APP, argparse.Namespace(towpath_arg=[], server_cpu=options.server_cpu)
        )
        try:
            self.server.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.port = self.server.port

    def pids(self) -> list[int]:
        return self.server.pids()

    def logs(self) -> list[IO[bytes]]:
        return [self.server.log]

    def exited(self) -> str | None:
        code = self.server.process.poll()
        return None if code is None else f"server exited {code}"

    def log_tail(self) -> str:
        return self.server.log_tail(3)

    def stop(self) -> None:
        self.server.stop()


def _supports(server: str, attack: Attack) -> str | None:
    """None if ``server`` can take ``attack``, else why not."""
    if attack.needs == "decoupled":
        return None if server == DECOUPLED else "decoupled towpath only"
    if server == DECOUPLED:
        return "direct-mode servers only"
    if attack.needs not in SERVERS[server].scenarios:
        return {"h2": "no h2c", "ws": "no WebSocket"}.get(attack.needs, "not supported")
    if attack.fd_limit and shutil.which("prlimit") is None:
        return "prlimit not found"
    return None


# -- measuring ---------------------------------------------------------------------------------


class _Sampler(threading.Thread):
    """The target's RSS every 50 ms (peak kept) and every pid seen (for CPU). Past
    ``limit_kib`` the target's processes are killed (the machine is shared)."""

    def __init__(self, target: Any, limit_kib: int) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.limit_kib = limit_kib
        self.stopped = threading.Event()
        self.pids = set(target.pids())
        self.peak = _rss_kib(sorted(self.pids))
        self.killed = False

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_SECONDS):
            pids = self.target.pids()
            self.pids.update(pids)
            self.peak = max(self.peak, _rss_kib(pids))
            if self.peak > self.limit_kib and not self.killed:
                self.killed = True
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


class _Prober(threading.Thread):
    """The normal client while the attack runs: a request every ``interval`` seconds."""

    def __init__(self, port: int, interval: float, timeout: float) -> None:
        super().__init__(daemon=True)
        self.port, self.interval, self.timeout = port, interval, timeout
        self.stopped = threading.Event()
        self.results: list[bool] = []

    def run(self) -> None:
        while True:
            began = time.monotonic()
            self.results.append(probe(self.port, self.timeout))
            if self.stopped.wait(max(0.0, self.interval - (time.monotonic() - began))):
                return

    def stop(self) -> list[bool]:
        self.stopped.set()
        self.join()
        return self.results


def measure(target: Any, attack: Attack, options: argparse.Namespace) -> dict[str, Any]:
    """Run ``attack`` against ``target`` with every figure of the table around it."""
    for _ in range(3):  # first requests allocate: not the attack's
        probe(target.port, options.probe_timeout)
    sampler = _Sampler(target, options.rss_limit_mib * 1024)
    baseline = sampler.peak
    logs, cpu_before = LogWindow(target.logs()), _cpu_seconds(sorted(sampler.pids))
    sampler.start()
    prober = _Prober(target.port, options.probe_interval, options.probe_timeout)
    prober.start()
    started = time.monotonic()
    try:
        outcome = attack.run(target, options)
    except Exception as exc:  # a defect of the attack itself: show it, go on with the others
        tail = traceback.format_exception_only(exc)[-1].strip()
        outcome = Outcome(
            f"attack failed: {tail}"[:200], None, {"traceback": traceback.format_exc()}
        )
    elapsed = time.monotonic() - started
    cpu = _cpu_seconds(sorted(sampler.pids)) - cpu_before
    logged = logs.written()
    during = prober.stop()
    after = [probe(target.port, options.probe_timeout) for _ in range(options.after_probes)]
    sampler.stop()
    cpu_total = _cpu_seconds(sorted(sampler.pids)) - cpu_before
    exited = target.exited()
    if sampler.killed:
        exited = f"killed by the bench past --rss-limit-mib {options.rss_limit_mib}"
    answer = outcome.answer if exited is None else f"{outcome.answer} [{exited}]"
    return {
        "answer": answer,
        "seconds": outcome.seconds,
        "rss_peak_mib": (sampler.peak - baseline) / 1024,
        "rss_before_mib": baseline / 1024,
        "cpu_seconds": round(cpu, 3),
        "cpu_seconds_with_after": round(cpu_total, 3),
        "log_bytes": logged,
        "log_excerpt": logs.excerpt(LOG_EXCERPT_BYTES) if logged else "",
        "during": [sum(during), len(during)],
        "after": [sum(after), len(after)],
        "attack_seconds": elapsed,
        "exited": exited,
        "details": outcome.details,
    }


def run_attack(attack: Attack, server: str, options: argparse.Namespace) -> dict[str, Any]:
    """A fresh server (or decoupled stack) for one attack; its figures, or ``error``."""
    try:
        if server == DECOUPLED:
            target: Any = attacks_decoupled.DecoupledStack(options.server_cpu)
        else:
            target = DirectTarget(server, attack, options)
    except RunError as exc:
        return {"error": f"did not start: {exc}"[:300]}
    try:
        return measure(target, attack, options)
    finally:
        target.stop()


def run(
    attacks: Sequence[Attack],
    servers: Sequence[str],
    options: argparse.Namespace,
    progress: Callable[[str], None] | None,
    results: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every attack against every server that can take it, one after the other; fills
    ``results`` (attack -> server -> figures) as it goes, so an interrupted run keeps what
    it measured."""
    for attack in attacks:
        rows = results.setdefault(attack.name, {})
        for server in servers:
            reason = _supports(server, attack)
            if reason is not None:
                rows[server] = {"skipped": reason}
                continue
            rows[server] = figures = run_attack(attack, server, options)
            if progress:
                line = figures.get("error") or (
                    f"{figures['answer']} | +{figures['rss_peak_mib']:.1f} MiB, "
                    f"{figures['cpu_seconds']:.2f} CPU s, during {_ratio(figures['during'])}, "
                    f"after {_ratio(figures['after'])}"
                )
                progress(f"{attack.name} {server}: {line}")
    return results


def _ratio(pair: Sequence[int]) -> str:
    return f"{pair[0]}/{pair[1]}"


# -- report ------------------------------------------------------------------------------------

HEADER = [
    "server",
    "answer",
    "peak RSS +MiB",
    "CPU s",
    "answer s",
    "log KiB",
    "served during",
    "served after",
]
#: rows not shown: the attack is not meant for that kind of server
_HIDDEN = {"decoupled towpath only", "direct-mode servers only"}


def _row(label: str, figures: Mapping[str, Any]) -> list[str] | None:
    if "skipped" in figures:
        if figures["skipped"] in _HIDDEN:
            return None
        return [label, f"n/a ({figures['skipped']})", *[""] * (len(HEADER) - 2)]
    if "error" in figures:
        return [label, figures["error"], *[""] * (len(HEADER) - 2)]
    seconds = figures.get("seconds")
    return [
        label,
        figures["answer"],
        format_number(figures["rss_peak_mib"], "MiB"),
        format_number(figures["cpu_seconds"], "s"),
        "" if seconds is None else format_number(seconds, "s"),
        format_number(figures["log_bytes"] / 1024, "KiB"),
        _ratio(figures["during"]),
        _ratio(figures["after"]),
    ]


def render(doc: Mapping[str, Any], markdown: bool, before: Mapping[str, Any] | None = None) -> str:
    """Every attack's table, grouped; ``before``: an earlier run whose towpath rows are shown
    above this run's, labelled "(before)"."""
    earlier = {entry["name"]: entry for entry in (before or {}).get("attacks", [])}
    parts, group = [], None
    for entry in doc["attacks"]:
        if entry["group"] != group:
            group = entry["group"]
            parts.append(f"### {group}" if markdown else f"== {group} ==")
        rows = []
        for server in doc["servers"]:
            figures = entry["results"].get(server)
            if figures is None:
                continue
            prior = earlier.get(entry["name"], {}).get("results", {}).get(server)
            if prior is not None and server.startswith("towpath"):
                row = _row(f"{server} (before)", prior)
                if row is not None:
                    rows.append(row)
            row = _row(server, figures)
            if row is not None:
                rows.append(row)
        if not rows:
            continue
        title = f"{entry['name']}: {entry['title']} (a sound server: {entry['expect']})"
        if markdown:
            rows = [[cell.replace("<", "&lt;") for cell in row] for row in rows]
            parts.append(f"**{title}**\n\n{markdown_table(HEADER, rows, text={1})}")
        else:
            parts.append(f"{title}\n{text_table(HEADER, rows, text={1})}")
    parts.append("\n".join(("* " if markdown else "  ") + note for note in _notes(doc, before)))
    return "\n\n".join(parts)


def _notes(doc: Mapping[str, Any], before: Mapping[str, Any] | None) -> list[str]:
    meta = doc["meta"]
    notes = [
        "one fresh server process per attack, all at log level warning; peak RSS: the "
        "server's process tree, sampled every 50 ms, minus its RSS before the attack; CPU s: "
        "the server's CPU time while the attack ran; served during / after: a normal client's "
        "GETs that got a 200 (k of n)",
        f"towpath at {meta.get('commit', '?')}, {meta.get('date', '?')}; load average at "
        f"start {meta.get('load_average')}; wall time {meta.get('wall_seconds', '?')} s",
    ]
    if before is not None:
        prior = before.get("meta", {})
        notes.append(
            f"(before): towpath rows of an earlier run, towpath at {prior.get('commit', '?')}, "
            f"{prior.get('date', '?')}"
        )
    if meta.get("interrupted"):
        notes.append("INTERRUPTED: partial results")
    for name, reason in meta.get("skipped", {}).items():
        notes.append(f"skipped {name}: {reason}")
    return notes


# -- command line ------------------------------------------------------------------------------


def _git_version() -> str:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?"


#: the packages whose versions a run records
_PACKAGES = ("towpath", "h11", "h2", "wsproto", "uvicorn", "httptools", "uvloop", "websockets",
             "hypercorn", "daphne", "autobahn", "twisted", "granian")  # fmt: skip


def _meta(argv: Sequence[str], options: argparse.Namespace) -> dict[str, Any]:
    from bench.restarts import package_versions

    versions = package_versions(_PACKAGES)
    sizes = {key: value for key, value in vars(options).items() if key in _SIZE_OPTIONS}
    return {
        "command": "python -m bench " + shlex.join(argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _git_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "server_cpu": options.server_cpu,
        "client_cpu": options.client_cpu,
        "options": sizes,
        "versions": versions,
    }


# name, type, default, --quick value, help
_SIZES: list[tuple[str, type, float, float, str]] = [
    ("h2-big-mib", int, 500, 50, "h2-window-big: the response (MiB)"),
    ("h2-streams", int, 100, 10, "h2-window-streams: streams"),
    ("h2-stream-mib", int, 10, 5, "h2-window-streams: MiB per stream"),
    ("hold", float, 8.0, 2.0, "h2-window-*: seconds the client does not read"),
    ("drain", float, 2.0, 0.5, "h2 attacks: seconds the client reads at the end"),
    ("client-rcvbuf", int, 65536, 65536, "h2 attacks: the client's SO_RCVBUF (bytes)"),
    ("flood-seconds", float, 5.0, 1.0, "h2-rapid-reset and the floods: seconds"),
    ("slowloris-connections", int, 200, 20, "slowloris: connections"),
    ("slowloris-seconds", float, 12.0, 2.0, "slowloris: seconds (towpath's header timeout: 10)"),
    ("slowloris-interval", float, 2.0, 0.5, "slowloris: seconds between bytes"),
    ("ws-idle", int, 1000, 50, "ws-deflate-idle: connections"),
    ("bomb-mib", int, 100, 10, "ws-deflate-bomb: inflated size (MiB)"),
    ("bomb-wait", float, 10.0, 3.0, "ws-deflate-bomb: seconds to wait for the close"),
    ("fd-limit", int, 256, 256, "fd-flood: the server's ulimit -n"),
    ("fd-connections", int, 1000, 400, "fd-flood: connections"),
    ("fd-seconds", float, 15.0, 2.0, "fd-flood: seconds the connections are held"),
    ("decoupled-wait", float, 5.0, 3.0, "decoupled-malformed-*: seconds for the next request"),
    ("outage-clients", int, 4, 2, "decoupled-redis-outage: WebSocket clients"),
    ("outage-period", float, 0.05, 0.05, "decoupled-redis-outage: seconds between messages"),
    ("outage-warmup", float, 2.0, 0.5, "decoupled-redis-outage: seconds before the kill"),
    ("outage-seconds", float, 6.0, 1.0, "decoupled-redis-outage: seconds Redis is down"),
    ("outage-after", float, 4.0, 1.0, "decoupled-redis-outage: seconds after the restart"),
    ("drain-echoes", float, 5.0, 2.0, "decoupled-redis-outage: seconds to wait for echoes"),
    ("rss-limit-mib", int, 4096, 4096, "a server past this RSS is killed (shared machine)"),
    ("probe-interval", float, 0.5, 0.5, "normal client: seconds between requests during"),
    ("probe-timeout", float, 2.0, 2.0, "normal client: seconds for an answer"),
    ("after-probes", int, 3, 2, "normal client: requests right after the attack"),
]
_SIZE_OPTIONS = {name.replace("-", "_") for name, *_ in _SIZES}


# fmt: off
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--attack", action="append", default=[], metavar="NAME",
        help="attacks to run (repeatable or comma-separated; a prefix such as h2, ws, head, "
        "bad, decoupled selects all of it); default: all (see --list)")
    add("--server", action="append", default=[], metavar="NAME",
        help=f"servers (repeatable or comma-separated); default: {', '.join(DEFAULT_SERVERS)}")
    add("--quick", action="store_true",
        help="smoke check: small sizes and short durations (explicit options still win)")
    for name, kind, default, _quick, text in _SIZES:
        add(f"--{name}", type=kind, metavar="N" if kind is int else "S",
            help=f"{text} (default {default:g})")
    add("--server-cpu", default="0", help="taskset -c for the servers (0)")
    add("--client-cpu", default="1", help="CPU of the attacking clients (this process) (1)")
    add("--no-pin", action="store_true", help="no CPU pinning")
    add("--json", metavar="FILE", help="also write every figure here (e.g. bench/results/...)")
    add("--before", metavar="FILE", help="an earlier run's --json: its towpath rows are shown "
        "above this run's, labelled (before)")
    add("--from-json", metavar="FILE", help="print the tables of a saved run; run nothing")
    add("--markdown", action="store_true", help="print Markdown tables too")
    add("--quiet", action="store_true", help="no per-attack progress on stderr")
    add("--list", action="store_true", help="list attacks and servers; exit")
# fmt: on


def _defaults(args: argparse.Namespace) -> None:
    for name, _kind, default, quick, _text in _SIZES:
        key = name.replace("-", "_")
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else default)
    if args.no_pin:
        args.server_cpu = args.client_cpu = None


def _names(values: Sequence[str]) -> list[str]:
    return [name for text in values for name in text.split(",") if name]


def _select(wanted: Sequence[str]) -> tuple[list[Attack], list[str]]:
    if not wanted:
        return list(ATTACKS.values()), []
    chosen = {name for name in ATTACKS for w in wanted if name == w or name.startswith(w + "-")}
    unknown = [w for w in wanted if not any(n == w or n.startswith(w + "-") for n in ATTACKS)]
    return [attack for name, attack in ATTACKS.items() if name in chosen], unknown


def _load(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as file:
            doc: dict[str, Any] = json.load(file)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read {path}: {exc}")
    if not isinstance(doc, dict) or "attacks" not in doc:
        parser.error(f"{path} is not the --json output of python -m bench attacks")
    return doc


def _print(doc: Mapping[str, Any], args: argparse.Namespace, before: Any) -> None:
    print(render(doc, markdown=False, before=before))
    if args.markdown:
        print()
        print(render(doc, markdown=True, before=before))


def main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    _defaults(args)
    if args.list:
        for attack in ATTACKS.values():
            print(f"  {attack.name:<30} [{attack.needs}] {attack.describe(args)}")
        for name in DEFAULT_SERVERS:
            print(f"  {name}")
        return 0
    before = _load(args.before, parser) if args.before else None
    if args.from_json:
        _print(_load(args.from_json, parser), args, before)
        return 0
    attacks, unknown = _select(_names(args.attack))
    servers = _names(args.server) or DEFAULT_SERVERS
    unknown += [name for name in servers if name not in SERVERS and name != DECOUPLED]
    if unknown:
        parser.error(f"unknown attack or server: {', '.join(unknown)} (see --list)")
    skipped = {}
    for name in servers:
        if name == DECOUPLED:
            reason = None if shutil.which("redis-server") else "redis-server not found"
        else:
            reason = SERVERS[name].missing()
        if reason:
            skipped[name] = reason
    servers = [name for name in servers if name not in skipped]
    if not args.no_pin and not shutil.which("taskset"):
        print("missing: taskset (or pass --no-pin)", file=sys.stderr)
        return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # thousands of client sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.client_cpu is not None:
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(0, {int(args.client_cpu)})

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that every server started is stopped (finally clauses)

    meta = _meta(argv, args)
    meta["skipped"] = skipped
    results: dict[str, dict[str, dict[str, Any]]] = {}
    previous = signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    try:
        results = run(attacks, servers, args, None if args.quiet else progress, results)
    except KeyboardInterrupt:
        meta["interrupted"] = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    meta["wall_seconds"] = round(time.monotonic() - started)
    doc = {
        "meta": meta,
        "servers": servers,
        "attacks": [
            {
                "name": attack.name,
                "group": attack.group,
                "title": attack.describe(args),
                "expect": attack.expect,
                "results": results.get(attack.name, {}),
            }
            for attack in attacks
        ],
    }
    if args.json:  # first: the figures are kept whatever happens to stdout
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(doc, out, indent=2)
            out.write("\n")
    _print(doc, args, before)
    progress(f"took {meta['wall_seconds']} s")
    return 130 if meta.get("interrupted") else 0
