"""Run the jobs example with one command, over the IPC layer (this machine, no server), or
over the Redis at ``--redis-url`` / ``REDIS_URL`` when one is given::

    python -m examples.jobs.run                              # then open http://127.0.0.1:8000/
    python -m examples.jobs.run --port 9000 --job-workers 3

From the repository root it starts what a deployment would run under a process manager::

    towpath serve --settings examples/jobs/settings.py --port 8000
    towpath runworker --settings examples/jobs/settings.py --exclude-channels thumbnail
    towpath runworker --settings examples/jobs/settings.py --only-channels thumbnail  (x N)

prints each one's output prefixed with its name, and stops them all (one SIGTERM each, so they
finish what they are doing) on Ctrl-C, or when any of them exits (status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = "examples/jobs/settings.py"
READY = "towpath serving on "
STOP_SECONDS = 45.0  # above the server's and workers' default --graceful-timeout (30 s)


def towpath_command() -> str:
    """The ``towpath`` script of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("towpath")
    found = str(beside) if beside.exists() else shutil.which("towpath")
    if found is None:
        raise SystemExit("towpath is not installed here: pip install -e . (or: make run)")
    return found


def allowed_origins(port: int) -> list[str]:
    """``--ws-allowed-origins`` for the page served on ``port`` of this machine."""
    hosts = ("127.0.0.1", "localhost", "[::1]")
    return [arg for host in hosts for arg in ("--ws-allowed-origins", f"http://{host}:{port}")]


def commands(port: int, job_workers: int) -> dict[str, list[str]]:
    towpath, settings = towpath_command(), ["--settings", SETTINGS]
    made = {
        # the page's own origins only: another site's page cannot open the jobs socket
        "server": [towpath, "serve", *settings, "--port", str(port), *allowed_origins(port)],
        "web": [towpath, "runworker", *settings, "--exclude-channels", "thumbnail"],
    }
    for number in range(1, job_workers + 1):
        made[f"jobs-{number}"] = [
            towpath, "runworker", *settings, "--only-channels", "thumbnail", "--concurrency", "4",
        ]  # fmt: skip
    return made


async def _pump(
    name: str, stream: asyncio.StreamReader, on_line: Callable[[str], None] | None = None
) -> None:
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        print(f"[{name}] {line}", flush=True)
        if on_line is not None:
            on_line(line)


def _announce(line: str) -> None:
    if line.startswith(READY):
        url = line.removeprefix(READY).strip()
        print(f"jobs example: open {url}/ (Ctrl-C stops it)", flush=True)


async def run(port: int, job_workers: int, redis_url: str | None) -> int:
    """Start everything, wait for Ctrl-C/SIGTERM or for one process to exit, stop the rest."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    env = {**os.environ, "REDIS_URL": redis_url or ""}  # "": the IPC layer (settings.py)
    processes: dict[str, asyncio.subprocess.Process] = {}
    for name, command in commands(port, job_workers).items():
        processes[name] = await asyncio.create_subprocess_exec(
            *command,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches this process only; it stops them once
        )
        print(f"[run] {name}: pid {processes[name].pid}: {' '.join(command)}", flush=True)
    pumps = [
        asyncio.create_task(_pump(name, p.stdout, _announce if name == "server" else None))
        for name, p in processes.items()
        if p.stdout is not None
    ]
    exits = {name: asyncio.create_task(p.wait()) for name, p in processes.items()}
    stop_asked = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait([stop_asked, *exits.values()], return_when="FIRST_COMPLETED")
    status = 0
    for name, exited in exits.items():
        if exited in done:
            print(f"[run] {name} exited with status {exited.result()}; stopping the others")
            status = 1
    for process in processes.values():
        if process.returncode is None:
            process.terminate()
    try:
        async with asyncio.timeout(STOP_SECONDS):
            await asyncio.gather(*exits.values())
    except TimeoutError:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await asyncio.gather(*exits.values())
    stop_asked.cancel()
    await asyncio.gather(*pumps)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.jobs.run",
        description="Run the jobs example: towpath serve, a web pool and a job pool over the "
        "IPC layer (or Redis with --redis-url).",
    )
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--job-workers", type=int, default=2, help="job pool processes")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL") or None,
        help="use this Redis instead of the IPC layer [default: REDIS_URL, else IPC]",
    )
    args = parser.parse_args(argv)
    if args.redis_url is None:
        return asyncio.run(run(args.port, args.job_workers, None))
    try:
        with redis.Redis.from_url(args.redis_url, socket_connect_timeout=2) as client:
            client.ping()
    except (redis.RedisError, ValueError) as exc:
        print(
            f"cannot reach Redis at {args.redis_url} ({exc}): start one (redis-server) or "
            "set REDIS_URL / --redis-url",
            file=sys.stderr,
        )
        return 1
    return asyncio.run(run(args.port, args.job_workers, args.redis_url))


if __name__ == "__main__":
    sys.exit(main())
