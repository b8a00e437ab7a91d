"""The servers under test and their processes, for ``bench servers`` and ``bench decoupled``.

``ServerSpec`` and the ``SERVERS`` registry (commands, scenarios served, what each needs
installed), ``ServerProcess`` (one server in its own session, pinned with ``taskset``, readiness
probe, stop), the ``/proc`` readers (process tree, RSS, CPU time, a core's busy jiffies) and the
CPU window (``_Window``) that every throughput row reports.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "BIN",
    "ROOT",
    "SCENARIOS",
    "SERVERS",
    "RunError",
    "ServerProcess",
    "ServerSpec",
]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: ``towpath-baseline``: another checkout of towpath with its own ``.venv`` (``make
#: .venv/.dev-stamp`` there), to measure a change before and after in one interleaved run
BASELINE_ENV = "TOWPATH_BASELINE"
SCENARIOS = {
    "http1": "HTTP/1.1 hello world, wrk -t1 -c64 (requests/s)",
    "ws": "WebSocket echo round trips/s, 64 connections",
    "h2": "HTTP/2 cleartext (prior knowledge) hello world, h2load -c16 -m10 (requests/s)",
    "memory": "RSS per idle WebSocket connection (KiB), 1000 connections",
}
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0


class RunError(Exception):
    """A run could not be measured (server did not start, a load generator failed, ...)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSpec:
    """A server under test: its command (``{bin}``: the venv's bin directory, ``{python}``,
    ``{app}``, ``{port}``), the scenarios it can serve and what it needs installed."""

    name: str
    description: str
    command: str
    scenarios: frozenset[str]
    needs: tuple[str, ...] = ()  # executables in {bin}, or "module:NAME" for packages
    default: bool = True

    def argv(self, app: str, port: int, extra: Sequence[str] = ()) -> list[str]:
        fields = {
            "bin": str(BIN),
            "python": sys.executable,
            "app": app,
            "port": port,
            "baseline_bin": str(_baseline_bin()),
        }
        return [*shlex.split(self.command.format(**fields)), *extra]

    def missing(self) -> str | None:
        for need in self.needs:
            if need == "baseline":
                if not os.environ.get(BASELINE_ENV):
                    return f"{BASELINE_ENV} is not set (a checkout of towpath with its .venv)"
                if not (_baseline_bin() / "towpath").exists():
                    return f"{_baseline_bin() / 'towpath'} not found"
            elif need.startswith("module:"):
                name = need.removeprefix("module:")
                try:
                    importlib.metadata.version(name)
                except importlib.metadata.PackageNotFoundError:
                    return f"{name} is not installed"
            elif not (BIN / need).exists():
                return f"{BIN / need} not found"
        return None


def _baseline_bin() -> Path:
    return Path(os.environ.get(BASELINE_ENV, "")).resolve() / ".venv" / "bin"


_UVICORN = (
    "{bin}/uvicorn {app} --host 127.0.0.1 --port {port} --lifespan on --no-access-log "
    "--log-level warning "
)
_ALL = frozenset(SCENARIOS)
_NO_H2 = frozenset({"http1", "ws", "memory"})
SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in [
        ServerSpec(
            "towpath",
            "towpath serve (h11, h2, wsproto)",
            "{bin}/towpath serve {app} --bind 127.0.0.1 --port {port}",
            _ALL,
            ("towpath",),
        ),
        ServerSpec(
            "towpath-no-h2",
            "towpath serve --no-http2 (no h2c preface sniffing)",
            "{bin}/towpath serve {app} --bind 127.0.0.1 --port {port} --no-http2",
            _NO_H2,
            ("towpath",),
            default=False,
        ),
        ServerSpec(
            "towpath-baseline",
            f"towpath serve of the checkout in ${BASELINE_ENV} (before/after a change)",
            "{baseline_bin}/towpath serve {app} --bind 127.0.0.1 --port {port}",
            _ALL,
            ("baseline",),
            default=False,
        ),
        ServerSpec(
            "towpath-uvloop",
            "towpath serve --loop uvloop (as uvicorn-httptools runs)",
            "{bin}/towpath serve {app} --bind 127.0.0.1 --port {port} --loop uvloop",
            _ALL,
            ("towpath", "module:uvloop"),
            default=False,
        ),
        ServerSpec(
            "uvicorn-h11",
            "uvicorn --http h11 --ws wsproto --loop asyncio",
            _UVICORN + "--http h11 --ws wsproto --loop asyncio",
            _NO_H2,
            ("uvicorn",),
        ),
        ServerSpec(
            "uvicorn-httptools",
            "uvicorn --http httptools --ws websockets --loop uvloop",
            _UVICORN + "--http httptools --ws websockets --loop uvloop",
            _NO_H2,
            ("uvicorn", "module:httptools", "module:uvloop"),
        ),
        ServerSpec(
            "hypercorn",
            "hypercorn --worker-class asyncio --workers 1",
            "{bin}/hypercorn {app} --bind 127.0.0.1:{port} --worker-class asyncio --workers 1 "
            "--log-level warning",
            _ALL,
            ("hypercorn",),
        ),
        ServerSpec(
            "daphne",
            "daphne (Twisted, autobahn)",
            "{bin}/daphne -b 127.0.0.1 -p {port} -v 0 {app}",
            _NO_H2,
            ("daphne",),
        ),
        ServerSpec(
            "granian",
            "granian --interface asgi, 1 worker, 1 runtime thread (Rust)",
            "{bin}/granian --interface asgi --host 127.0.0.1 --port {port} --workers 1 "
            "--runtime-threads 1 --log-level warning {app}",
            _ALL,
            ("granian",),
        ),
        ServerSpec(
            "ceiling",
            "bare asyncio server, canned answers (python -m bench.apps ceiling)",
            "{python} -m bench.apps ceiling --port {port}",
            frozenset({"http1", "ws"}),
        ),
    ]
}


# -- processes ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pinned(argv: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu is not None else argv


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/PID/task/TID/children)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
    return pids


def _rss_kib(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def _cpu_seconds(pids: Sequence[int]) -> float:
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """One server process (its own session, so its workers stop with it)."""

    def __init__(self, spec: ServerSpec, app: str, options: argparse.Namespace) -> None:
        self.spec = spec
        self.port = _free_port()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        extra = options.towpath_arg if spec.name.startswith("towpath") else ()
        argv = _pinned(spec.argv(app, self.port, extra), options.server_cpu)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        try:
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self.log.close()
            raise RunError(f"cannot start {shlex.join(argv)}: {exc}") from exc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log_tail(self, lines: int = 8) -> str:
        self.log.seek(0)
        text = self.log.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def wait_ready(
        self,
        probe: bytes = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
        expect: bytes = b"HTTP/1.1 200",
    ) -> None:
        """Until ``probe`` is answered with ``expect`` (a GET by default: a listening socket is
        not enough, hypercorn's worker and granian's start after the socket is bound)."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RunError(f"exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(probe)
                    if sock.recv(64).startswith(expect):
                        return
            except OSError:
                pass
            time.sleep(0.05)  # polling a port that is not up yet; nothing to wait on
        raise RunError(f"no answer on port {self.port} within {READY_TIMEOUT_SECONDS:.0f}s")

    def pids(self) -> list[int]:
        return _tree(self.process.pid)

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL if it is still there after 5 s."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # workers left behind, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_TIMEOUT_SECONDS)
        self.log.close()


def _run_tool(argv: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RunError(f"{argv[0] if argv[0] != 'taskset' else argv[3]} timed out") from exc
    if done.returncode != 0:
        raise RunError(f"{shlex.join(argv)} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return done.stdout


class _Window:
    """CPU use of the server (its process tree) and of the load generators (waited-for
    children of this process) over a measured window, in % of one core."""

    def __init__(self, server: ServerProcess, core: str | None) -> None:
        self.core = f"cpu{core}" if core is not None and core.isdigit() else None
        self.pids = server.pids()
        self.server = _cpu_seconds(self.pids)
        self.client = _children_cpu_seconds()
        self.busy = _core_busy(self.core)
        self.started = time.monotonic()

    def figures(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        figures = {
            "cpu_pct": 100 * (_cpu_seconds(self.pids) - self.server) / elapsed,
            "client_cpu_pct": 100 * (_children_cpu_seconds() - self.client) / elapsed,
        }
        if self.core is not None:
            (busy, total), (busy0, total0) = _core_busy(self.core), self.busy
            busy, total = busy - busy0, total - total0
            figures["core_busy_pct"] = 100 * busy / total if total else float("nan")
        return figures


def _core_busy(core: str | None) -> tuple[int, int]:
    """(busy, total) jiffies of one core from /proc/stat; busy counts everything but idle
    and iowait: the server, other processes, interrupts, softirqs (loopback TCP) and steal."""
    if core is None:
        return 0, 0
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(core + " "):
                ticks = [int(x) for x in line.split()[1:]]
                return sum(ticks) - ticks[3] - ticks[4], sum(ticks)
    return 0, 0


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
