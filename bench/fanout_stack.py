"""The set-ups of ``python -m bench fanout`` (``bench/fanout.py``) and their processes: each
set-up's servers and workers (``Stack``, on ``bench.restarts.Proc``), the load processes it
drives (``Load``: ``bench/fanout_load.py`` over stdin/stdout) and the group's members in Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.fanout_app import GROUP, PATH
from bench.procs import BIN, ROOT, _cpu_seconds
from bench.restarts import Proc, RunError
from towpath.testing.processes import READY_PREFIX
from towpath.testing.services import RedisServer, free_port

__all__ = [
    "ANSWER_TIMEOUT",
    "MEMBERSHIP_WAIT",
    "SETUPS",
    "Load",
    "Setup",
    "Stack",
    "kill_loads",
    "members",
    "members_left",
]

ANSWER_TIMEOUT = 60.0
ANSWER_LIMIT = 256 * 1024 * 1024  # bytes in one answer line (a report: ~300 B per client)
MEMBERSHIP_WAIT = 10.0  # seconds the bench waits for memberships to go after clients leave


MEMBERS_KEY = f"asgi:group:{GROUP}"  # towpath's Redis layer and channels_redis core alike


@dataclasses.dataclass(frozen=True, slots=True)
class Setup:
    name: str
    description: str
    stack: str  # "towpath", or an ASGI server command ({bin}, {port})
    routing: str = ""  # towpath: the settings' ROUTING
    ready: str = ""  # an ASGI server: the log line that says it listens
    layer: str = "core"  # the Channels app's channels_redis layer (FANOUT_LAYER)
    publisher: str = "towpath"  # the publisher's layer (bench/fanout_load.py --backend)
    kind: str = "event"  # what the publisher sends: a group event, or websocket.send
    members_key: str | None = MEMBERS_KEY
    needs: tuple[str, ...] = ()


_CHANNELS = ("channels", "channels_redis", "django")
_DAPHNE = "{bin}/daphne -b 127.0.0.1 -p {port} bench.fanout_app:channels_application"
SETUPS: dict[str, Setup] = {
    s.name: s
    for s in [
        Setup(
            "towpath-workers",
            "towpath serve x2 + runworker x2, Redis layer; consumers in workers forward events",
            "towpath",
            routing="bench.fanout_app:worker_routes",
        ),
        Setup(
            "towpath-members",
            "towpath serve x2 + runworker x2, Redis layer; reply channels are the members",
            "towpath",
            routing="bench.fanout_app:member_routes",
            kind="member",
        ),
        Setup(
            "uvicorn-channels",
            "uvicorn x2 + Channels 4 consumers + channels_redis core",
            "{bin}/uvicorn bench.fanout_app:channels_application --host 127.0.0.1 "
            "--port {port} --lifespan off --no-access-log",
            ready="Uvicorn running on",
            publisher="channels-core",
            needs=("uvicorn", *_CHANNELS),
        ),
        Setup(
            "daphne-channels",
            "daphne x2 + Channels 4 consumers + channels_redis core",
            _DAPHNE,
            ready="Listening on TCP address",
            publisher="channels-core",
            needs=("daphne", *_CHANNELS),
        ),
        Setup(
            "daphne-pubsub",
            "daphne x2 + Channels 4 consumers + channels_redis Pub/Sub",
            _DAPHNE,
            ready="Listening on TCP address",
            layer="pubsub",
            publisher="channels-pubsub",
            members_key=None,
            needs=("daphne", *_CHANNELS),
        ),
    ]
}


# -- the processes -----------------------------------------------------------------------------


class Stack:
    """The servers (and towpath's workers) of one set-up on one redis-server."""

    def __init__(self, setup: Setup, redis: RedisServer, options: argparse.Namespace) -> None:
        self.setup = setup
        self.redis = redis
        self.options = options
        self.servers: list[Proc] = []
        self.workers: list[Proc] = []
        self.urls: list[str] = []
        self.settings = Path()
        self.extra: dict[str, Any] = {}

    @property
    def procs(self) -> list[Proc]:
        return [*self.servers, *self.workers]

    async def start(self, directory: Path) -> None:
        if self.setup.stack == "towpath":
            self.settings = directory / f"fanout_settings_{self.redis.port}.py"
            self.settings.write_text(
                "CHANNEL_LAYERS = {'default': {"
                "'BACKEND': 'towpath.layers.redis.RedisChannelLayer', "
                f"'CONFIG': {{'hosts': [{self.redis.url!r}]}}, "
                f"'ROUTING': {self.setup.routing!r}}}}}\n",
                encoding="utf-8",
            )
            for index in range(self.options.servers):
                argv = [str(BIN / "towpath"), "serve", "--settings", str(self.settings), "-p", "0"]
                serve = Proc(f"serve {index}", argv, {})
                self.servers.append(serve)
                line = await serve.start(READY_PREFIX)
                url = line.partition(READY_PREFIX)[2].strip().replace("http", "ws", 1)
                self.urls.append(url.rstrip("/") + PATH)
            for index in range(self.options.workers):
                argv = [str(BIN / "towpath"), "runworker", "--settings", str(self.settings)]
                worker = Proc(f"worker {index}", argv, {})
                self.workers.append(worker)
                await worker.start("worker listening on")
            return
        env = {"FANOUT_REDIS_URL": self.redis.url, "FANOUT_LAYER": self.setup.layer}
        for index in range(self.options.servers):
            port = free_port()
            argv = shlex.split(self.setup.stack.format(bin=BIN, port=port))
            server = Proc(f"server {index}", argv, env)
            self.servers.append(server)
            await server.start(self.setup.ready)
            self.urls.append(f"ws://127.0.0.1:{port}{PATH}")

    async def close(self) -> None:
        """Stop everything (towpath logs its counters on the way out: kept), count the
        warnings and errors each process logged, write ``--logs``."""
        logs = Path(self.options.logs) if self.options.logs else None
        counts: dict[str, dict[str, int]] = {}
        for proc in reversed(self.procs):
            await proc.stop(signal.SIGTERM, within=15)
            stats = [line for line in proc.lines if " stats {" in line]
            if stats:
                with contextlib.suppress(ValueError):
                    self.extra.setdefault("stats", {})[proc.name] = json.loads(
                        stats[-1].partition(" stats ")[2]
                    )
            counts[proc.name] = {
                level: sum(level in line for line in proc.lines) for level in ("WARNING", "ERROR")
            }
            gone = sum("it is gone" in line for line in proc.lines)
            if gone:
                counts[proc.name]["workers_declared_gone"] = gone
            if logs is not None:
                logs.mkdir(parents=True, exist_ok=True)
                name = f"{self.extra.get('run', 'run')}-{proc.name.replace(' ', '-')}.log"
                (logs / name).write_text("\n".join(proc.lines) + "\n", encoding="utf-8")
        self.extra["log_counts"] = counts


#: load processes started and not yet stopped: killed on the way out whatever happens
_LOADS: set[Load] = set()


class Load:
    """A ``bench/fanout_load.py`` process: one command per stdin line, one JSON answer line."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "bench.fanout_load", *argv]
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.process: asyncio.subprocess.Process | None = None
        self.cpu = 0.0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.errors,
            start_new_session=True,
            limit=ANSWER_LIMIT,
        )
        _LOADS.add(self)

    def tell(self, command: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")

    async def answer(self, within: float = ANSWER_TIMEOUT) -> dict[str, Any]:
        """The next JSON line it prints (other lines are skipped)."""
        assert self.process is not None and self.process.stdout is not None
        try:
            async with asyncio.timeout(within):
                while line := await self.process.stdout.readline():
                    if line.startswith(b"{"):
                        answer: dict[str, Any] = json.loads(line)
                        return answer
        except TimeoutError:
            raise RunError(f"{self.name}: no answer in {within:g} s: {self.tail()}") from None
        raise RunError(f"{self.name} exited: {self.tail()}")

    async def ask(self, command: str, within: float = ANSWER_TIMEOUT) -> dict[str, Any]:
        self.tell(command)
        return await self.answer(within)

    def cpu_seconds(self) -> float:
        if self.process is not None and self.process.returncode is None:
            self.cpu = _cpu_seconds([self.process.pid]) or self.cpu
        return self.cpu

    def tail(self) -> str:
        self.errors.seek(0)
        return " | ".join(self.errors.read().decode(errors="replace").splitlines()[-6:])[-800:]

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(Exception):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                async with asyncio.timeout(15):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        _LOADS.discard(self)
        self.errors.close()


def kill_loads() -> None:
    for load in list(_LOADS):
        if load.process is not None and load.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(load.process.pid, signal.SIGKILL)
    _LOADS.clear()


# -- Redis -------------------------------------------------------------------------------------


async def members(redis_url: str, key: str) -> list[str]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        found = await client.zrange(key, 0, -1)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in found]
    finally:
        await client.aclose()


async def members_left(redis_url: str, key: str, of: set[str] | None) -> tuple[int, float | None]:
    """Members (of ``of``, or all) still in the group, polled until none or 10 s; and the
    seconds it took to reach none (None if it never did)."""
    began = time.monotonic()
    while True:
        found = await members(redis_url, key)
        left = len(found) if of is None else len(of.intersection(found))
        elapsed = time.monotonic() - began
        if left == 0:
            return 0, round(elapsed, 2)
        if elapsed >= MEMBERSHIP_WAIT:
            return left, None
        await asyncio.sleep(0.25)  # polling Redis; nothing to wait on
