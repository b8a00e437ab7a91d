"""HTTP/2 attacks on a real ``towpath serve``, measured: not a test, a reproducible probe.

    .venv/bin/python -m bench.h2_hostile                 # every scenario, towpath direct mode
    .venv/bin/python -m bench.h2_hostile rapid-reset     # one scenario
    .venv/bin/python -m bench.h2_hostile --attach http://127.0.0.1:8001 --pid 1234 ...
        # any server already running towpath.testing.hostile_h2:app (hypercorn, uvicorn ...)

Each scenario starts a fresh ``towpath serve towpath.testing.hostile_h2:app -p 0`` (with
``--decoupled``: ``towpath serve -p 0`` on the IPC layer and a ``towpath runworker --asgi`` for
the app; with ``--attach``: none), attacks it with :class:`towpath.testing.hostile_h2.HostileH2`,
and meanwhile a second, normal client (``curl --http2-prior-knowledge``, 5 s timeout) asks for
``/`` three times. One line per scenario: the server's RSS before and at its peak (sampled
every 0.1 s), the CPU seconds it spent, the GOAWAY the attacker saw (code, seconds after the
attack began, as parsed by the attacker's reader thread), what the attack got through, and how
many of the second client's requests were served.

Scenarios:

* ``no-read-big``: one stream of ``--mib`` MiB (default 500) sent in ``--chunk-kib`` messages
  to a client that opened 2^31-1 windows and never reads.
* ``no-read-many``: 100 streams of 10 MiB each, same client.
* ``rapid-reset``: HEADERS + RST_STREAM pairs as fast as one Python client can write them,
  for ``--seconds`` or until the server closes (CVE-2023-44487).
* ``ping-flood`` / ``settings-flood``: a 64 MiB response left unread, then PING (SETTINGS)
  frames for ``--seconds`` from a client that never reads.
* ``ping-flood-reading``: PINGs from a client that reads the answers.
* ``headers``: a request with a 20 KiB header (over the 16 KiB limit), then a normal one on
  the same connection; a 40 KiB one on another.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h2.exceptions import H2Error

from towpath.layers.ipc.store import default_directory
from towpath.testing.hostile_h2 import (
    MAX_WINDOW,
    PING,
    SETTINGS,
    HostileH2,
    cpu_seconds,
    rss_bytes,
)
from towpath.testing.processes import READY_PREFIX, TOWPATH

MIB = 1024 * 1024
APP = "towpath.testing.hostile_h2:app"


@dataclass
class Target:
    url: str
    pid: int
    host: str
    port: int
    process: subprocess.Popen[bytes] | None = None


@contextmanager
def target(args: argparse.Namespace) -> Iterator[Target]:
    if args.attach:
        host, port = args.attach.removeprefix("http://").rsplit(":", 1)
        yield Target(args.attach, args.pid, host, int(port))
        return
    env = dict(os.environ)
    serve = [TOWPATH, "serve", "-p", "0", *args.serve_arg]
    worker = None
    prefix = f"h2hostile{os.getpid()}"
    if args.decoupled:
        # the IPC layer (no settings), a prefix of our own; a worker hosting the same app
        env["TOWPATH_IPC_PREFIX"] = prefix
        worker = subprocess.Popen(
            [TOWPATH, "runworker", "--asgi", APP],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    else:
        serve.insert(2, APP)
    process = subprocess.Popen(serve, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith(READY_PREFIX):
            raise SystemExit(f"towpath serve did not start: {line!r}")
        url = line[len(READY_PREFIX) :].strip()
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield Target(url, process.pid, host, int(port), process)
    finally:
        process.kill()
        process.wait()
        if worker is not None:
            worker.kill()
            worker.wait()
            shutil.rmtree(Path(default_directory()) / f"towpath-ipc-{prefix}", ignore_errors=True)


@dataclass
class Probe:
    """RSS peak sampling and the second client, in threads, while an attack runs."""

    target: Target
    rss_before: int = 0
    rss_peak: int = 0
    cpu_before: float = 0.0
    served: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Probe:
        pid = self.target.pid
        self.rss_before = self.rss_peak = rss_bytes(pid)
        self.cpu_before = cpu_seconds(pid)
        self.started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._second_client, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self.cpu = cpu_seconds(self.target.pid) - self.cpu_before

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.rss_peak = max(self.rss_peak, rss_bytes(self.target.pid))
            except (OSError, RuntimeError):
                return

    def _second_client(self) -> None:
        if self._stop.wait(0.5):
            return
        for _ in range(3):
            if shutil.which("curl") is None:
                self.served.append("no curl")
                return
            began = time.monotonic()
            result = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "--http2-prior-knowledge",
                    "-m",
                    "5",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    self.target.url + "/",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            self.served.append(f"{result.stdout or 'fail'}@{time.monotonic() - began:.2f}s")
            if self._stop.wait(0.5):
                return


def report(name: str, probe: Probe, attacker: HostileH2 | None, note: str) -> None:
    goaway = "-"
    if attacker is not None and attacker.seen.goaway is not None:
        at = (attacker.seen.goaway_at or 0) - probe.started
        goaway = f"{getattr(attacker.seen.goaway, 'name', attacker.seen.goaway)}@{at:.2f}s"
    ok = sum(1 for s in probe.served if s.startswith("200"))
    print(
        f"{name:20} rss {probe.rss_before / MIB:6.1f} -> peak {probe.rss_peak / MIB:7.1f} MiB"
        f"  cpu {probe.cpu:5.2f} s  goaway {goaway:24}  second client {ok}/3"
        f" [{' '.join(probe.served)}]  {note}",
        flush=True,
    )


def no_read(t: Target, args: argparse.Namespace, streams: int, mib: float) -> None:
    with Probe(t) as probe:
        attacker = HostileH2(t.host, t.port, window=MAX_WINDOW, read=False)
        for _ in range(streams):
            attacker.request(f"/stream?mib={mib}&chunk_kib={args.chunk_kib}")
        time.sleep(args.seconds)
    attacker.close()
    report(
        f"no-read-{'big' if streams == 1 else 'many'}", probe, None, f"{streams} x {mib} MiB unread"
    )


def rapid_reset(t: Target, args: argparse.Namespace) -> None:
    with Probe(t) as probe:
        attacker = HostileH2(t.host, t.port)
        deadline = time.monotonic() + args.seconds
        pairs = 0
        while time.monotonic() < deadline and not attacker.seen.closed:
            sent = attacker.rapid_reset(1000)
            pairs += sent
            if sent < 1000:
                break
        closed_at = time.monotonic() - probe.started
        attacker.wait(lambda seen: seen.closed, 2)
        time.sleep(max(0.0, 4.0 - closed_at))  # the second client goes on after the attack
    attacker.close()
    report("rapid-reset", probe, attacker, f"{pairs} pairs written in {closed_at:.2f}s")


def flood(t: Target, args: argparse.Namespace, name: str, frame: bytes, read: bool) -> None:
    with Probe(t) as probe:
        attacker = HostileH2(t.host, t.port, window=MAX_WINDOW, read=read)
        if not read:
            attacker.request("/stream?mib=64&chunk_kib=1024")
        attacker.sock.settimeout(1.0)  # a write stalled this long: the server stopped reading
        began = time.monotonic()
        frames = attacker.flood(frame, 10**9, seconds=args.seconds)
        took = time.monotonic() - began
        time.sleep(max(0.0, args.seconds - took))
    attacker.close()
    note = f"{frames} frames written in {took:.2f}s"
    if attacker.write_failed:
        note += f", then {attacker.write_failed}"
    report(name, probe, attacker if read else None, note)


def headers(t: Target, args: argparse.Namespace) -> None:
    with Probe(t) as probe:
        notes = []
        for size in (20 * 1024, 40 * 1024):
            attacker = HostileH2(t.host, t.port)
            big = attacker.request("/", [("x-big", "b" * size)])
            attacker.wait(lambda seen, s=big: s in seen.statuses or s in seen.resets, 3)
            try:
                small: int | None = attacker.request("/")
            except H2Error:  # the connection is over
                small = None
            else:
                attacker.wait(lambda seen, s=small: s in seen.ended, 3)
            seen = attacker.seen
            notes.append(
                f"{size // 1024} KiB header: status {seen.statuses.get(big)} "
                f"reset {seen.resets.get(big)} goaway {seen.goaway}, "
                f"next request {seen.statuses.get(small) if small else 'impossible'}"
            )
            attacker.close()
        time.sleep(2)
    report("headers", probe, None, "; ".join(notes))


SCENARIOS: dict[str, Callable[[Target, argparse.Namespace], None]] = {
    "no-read-big": lambda t, a: no_read(t, a, 1, a.mib),
    "no-read-many": lambda t, a: no_read(t, a, 100, 10),
    "rapid-reset": rapid_reset,
    "ping-flood": lambda t, a: flood(t, a, "ping-flood", PING, False),
    "settings-flood": lambda t, a: flood(t, a, "settings-flood", SETTINGS, False),
    "ping-flood-reading": lambda t, a: flood(t, a, "ping-flood-reading", PING, True),
    "headers": headers,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (all)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each attack")
    parser.add_argument("--mib", type=float, default=500, help="no-read-big body size")
    parser.add_argument(
        "--chunk-kib",
        type=int,
        help="size of the app's body messages [default: 1024; 256 with --decoupled, under the "
        "IPC layer's 1 MiB message limit]",
    )
    parser.add_argument(
        "--decoupled",
        action="store_true",
        help="decoupled mode: towpath serve on the IPC layer, a towpath runworker --asgi "
        "hosting the app (RSS and CPU are the serve process's)",
    )
    parser.add_argument("--attach", help="URL of a server already running the app")
    parser.add_argument("--pid", type=int, help="its process id (with --attach)")
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="extra towpath serve argument"
    )
    args: Any = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if args.chunk_kib is None:
        args.chunk_kib = 256 if args.decoupled else 1024
    if args.attach and not args.pid:
        parser.error("--attach needs --pid (to read its RSS and CPU time)")
    for name in args.scenarios or list(SCENARIOS):
        with target(args) as t:
            SCENARIOS[name](t, args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
