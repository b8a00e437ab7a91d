"""How long an HTTP client waits when the worker handling its request dies: not a test, a
reproducible probe (issue 17, item 8).

    .venv/bin/python -m bench.worker_killed                  # 5 runs, the defaults below
    .venv/bin/python -m bench.worker_killed --hold 0.5 --http-timeout 120

A ``redis-server`` of its own (free port, nothing persisted), ``towpath serve --settings``
(``--heartbeat-timeout``, ``--http-timeout``) and, for each run, a fresh ``towpath runworker
--asgi bench.worker_killed:app``. The client asks ``GET /hang``, whose handler never answers;
``--hold`` seconds after the handler started (by its line on the worker's stderr) the worker is
killed with SIGKILL. One line per run: the status the client got, its body, and the seconds
from the kill to the answer. Before workers listed a request as soon as they took it, a worker
killed before its next heartbeat (1 s apart) left its request to ``--http-timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx

from towpath.testing.processes import towpath_process, towpath_serve
from towpath.testing.services import RedisServer

ROOT = Path(__file__).resolve().parent.parent
MARKER = "hang started"
SETTINGS = """\
CHANNEL_LAYERS = {{
    "default": {{
        "BACKEND": "towpath.layers.redis.RedisChannelLayer",
        "CONFIG": {{"hosts": [{url!r}]}},
    }},
}}
"""


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """``/hang`` never answers (it waits for the client to leave); anything else: 200."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/hang":
        print(MARKER, file=sys.stderr, flush=True)
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def one_run(http: httpx.AsyncClient, settings: Path, hold: float) -> tuple[int, str, float]:
    async with towpath_process(
        "runworker",
        "--settings",
        str(settings),
        "--asgi",
        "bench.worker_killed:app",
        cwd=ROOT,
        startup_timeout=30,
    ) as worker:
        request = asyncio.create_task(http.get("/hang"))
        async with asyncio.timeout(30):
            await worker.wait_for_stderr(MARKER)
        await asyncio.sleep(hold)  # how long the worker had the request before it died
        worker.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        response = await request
        return response.status_code, response.text, time.monotonic() - killed


async def main(options: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="towpath-killed-") as directory, RedisServer() as redis:
        settings = Path(directory) / f"killed_settings_{redis.port}.py"
        settings.write_text(SETTINGS.format(url=redis.url), encoding="utf-8")
        serve_args = (
            "--settings",
            str(settings),
            "--port",
            "0",
            "--log-level",
            "warning",
            "--heartbeat-timeout",
            str(options.heartbeat_timeout),
            "--http-timeout",
            str(options.http_timeout),
        )
        async with towpath_serve(*serve_args, cwd=directory) as served:
            timeout = options.http_timeout + 30
            async with httpx.AsyncClient(base_url=served.url, timeout=timeout) as http:
                print(
                    f"--heartbeat-timeout {options.heartbeat_timeout:g}, --http-timeout "
                    f"{options.http_timeout:g}, worker killed {options.hold:g} s after it took "
                    "the request"
                )
                for run in range(options.runs):
                    status, text, took = await one_run(http, settings, options.hold)
                    print(f"run {run + 1}: {status} after {took:.2f} s ({text})", flush=True)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_killed", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hold", type=float, default=0.1, help="seconds (default 0.1)")
    parser.add_argument("--heartbeat-timeout", type=float, default=1.0)
    parser.add_argument("--http-timeout", type=float, default=30.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
