"""``examples/jobs`` end to end over a real Redis: ``towpath serve``, a web pool
(``--exclude-channels thumbnail``) and a job pool (``--only-channels thumbnail``) as real
processes, a ``websockets`` client asking for jobs; and the one command,
``python -m examples.jobs.run``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.support.commands import runworker, stop
from tests.support.waiting import WAIT
from towpath.layers.ipc.store import default_directory
from towpath.testing.processes import READY_PREFIX, running_process, towpath_serve
from towpath.testing.services import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = "examples/jobs/settings.py"
STEPS = 8  # examples.jobs.thumbnail.STEPS

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(60)]


async def next_update(client: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        update: dict[str, Any] = json.loads(await client.recv())
        return update


async def run_jobs(client: ClientConnection, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Ask for one job per name at once; every update of each job until it is done."""
    for name in names:
        await client.send(json.dumps({"action": "thumbnail", "name": name}))
    waiting = list(names)
    jobs: dict[str, list[dict[str, Any]]] = {}
    while waiting or not all(
        updates and updates[-1]["type"] == "done" for updates in jobs.values()
    ):
        update = await next_update(client)
        if update["type"] == "queued":  # in the order asked, before any progress of its job
            assert update["name"] == waiting.pop(0), update
            jobs[update["job"]] = []
        else:
            jobs[update["job"]].append(update)
    return jobs


def check_progress(updates: list[dict[str, Any]], job_pool_pids: set[int]) -> None:
    percents = [update["percent"] for update in updates]
    assert percents == [(step + 1) * 100 // STEPS for step in range(STEPS)], percents
    assert [update["type"] for update in updates] == ["progress"] * (STEPS - 1) + ["done"]
    assert {update["worker"] for update in updates} <= job_pool_pids
    done = updates[-1]
    assert (done["width"], done["height"]) == (32, 32)
    assert len(done["pixels"]) == 32 * 32 and all(0 <= grey <= 255 for grey in done["pixels"])


async def test_two_jobs_report_progress_from_the_job_pool(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("JOBS_STEP_SECONDS", "0.02")
    settings = ("--settings", SETTINGS)
    async with (
        towpath_serve(*settings, "--port", "0", cwd=ROOT) as served,
        runworker(*settings, "--exclude-channels", "thumbnail", tag="web", cwd=ROOT) as web,
        runworker(*settings, "--only-channels", "thumbnail", tag="jobs", cwd=ROOT) as jobs,
    ):
        assert "thumbnail" not in await web.wait_for_stderr("worker listening on")
        assert "worker listening on thumbnail\n" in "".join(jobs.stderr_lines)
        with pytest.raises(InvalidStatus):  # no client id: the handshake is refused
            await connect(served.ws_url + "/ws/jobs/", open_timeout=WAIT)
        url = served.ws_url + "/ws/jobs/?client=test-client-1"
        async with connect(url, open_timeout=WAIT) as client:
            done = await run_jobs(client, ["canal", "lock"])
            await client.send(json.dumps({"action": "paint"}))
            assert (await next_update(client))["type"] == "error"
        assert len(done) == 2
        for updates in done.values():
            check_progress(updates, {jobs.process.pid})
        # same name, same picture; another name, another one
        canal, lock = (updates[-1]["pixels"] for updates in done.values())
        assert canal != lock
        assert await stop(served) == 0


async def test_the_run_script_starts_everything(redis_server: RedisServer) -> None:
    await check_run_script({"REDIS_URL": redis_server.url})


async def test_the_run_script_needs_no_redis() -> None:
    """With no REDIS_URL the three kinds of process talk over the IPC layer (docs/ipc.md)."""
    prefix = f"jobs{os.getpid()}"
    try:
        await check_run_script({"REDIS_URL": "", "TOWPATH_IPC_PREFIX": prefix})
    finally:
        shutil.rmtree(Path(default_directory()) / f"towpath-ipc-{prefix}", ignore_errors=True)


async def check_run_script(env: dict[str, str]) -> None:
    async with running_process(
        sys.executable,
        *("-m", "examples.jobs.run", "--port", "0", "--job-workers", "1"),
        cwd=ROOT,
        env={**env, "JOBS_STEP_SECONDS": "0.02"},
    ) as run:
        async with asyncio.timeout(WAIT):
            line = await run.wait_for_stdout("jobs example: open ")
        assert line.startswith("jobs example: open "), run.output()
        url = line.split()[3].rstrip("/").replace("http", "ws", 1)
        async with connect(url + "/ws/jobs/?client=run-script-client", open_timeout=WAIT) as ws:
            (updates,) = (await run_jobs(ws, ["towpath"])).values()
        (started,) = [line for line in run.stdout_lines if line.startswith("[run] jobs-1: pid ")]
        check_progress(updates, {int(started.split()[3].rstrip(":"))})
        run.send_signal(signal.SIGINT)
        async with asyncio.timeout(WAIT):
            assert await run.wait() == 0, run.output()
        assert any(line.startswith(f"[server] {READY_PREFIX}") for line in run.stdout_lines)


async def test_progress_survives_a_web_worker_restart(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web worker holding the socket stops mid-job: the socket moves to the other web
    worker, which joins the same client group, and every update still arrives, once, in order."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("JOBS_STEP_SECONDS", "0.15")
    settings = ("--settings", SETTINGS)
    web_only = ("--exclude-channels", "thumbnail")
    async with (
        towpath_serve(*settings, "--port", "0", cwd=ROOT) as served,
        runworker(*settings, "--only-channels", "thumbnail", tag="jobs", cwd=ROOT) as jobs,
        runworker(*settings, *web_only, tag="web1", cwd=ROOT) as first,
        connect(served.ws_url + "/ws/jobs/?client=restart-client", open_timeout=WAIT) as client,
        runworker(*settings, *web_only, tag="web2", cwd=ROOT),
    ):
        await client.send(json.dumps({"action": "thumbnail", "name": "weir"}))
        queued = await next_update(client)
        assert queued["type"] == "queued"
        updates = [await next_update(client)]
        assert updates[0]["percent"] == 100 // STEPS
        assert await stop(first) == 0, first.output()  # hands the socket to the other one
        while updates[-1]["type"] != "done":
            updates.append(await next_update(client))
        assert {update["job"] for update in updates} == {queued["job"]}
        check_progress(updates, {jobs.process.pid})
        assert await stop(served) == 0
