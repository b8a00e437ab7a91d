"""``towpath runserver --reload``: the real command in a subprocess on a throwaway project, plus
the reloader's file scanning and argument rebuilding in process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from tests.support.waiting import WAIT
from towpath.cli import main
from towpath.testing.processes import READY_PREFIX, ServeProcess, towpath_process
from towpath.worker.reload import child_args, scan, snapshot_changes

#: each version has another length, so no stale ``.pyc`` (keyed on mtime seconds and size)
#: can stand in for the new source
ROUTES = """
from towpath.consumers.messages import reply
from towpath.routing import route


async def answer(message):
    await reply(message, 200, {text!r})


routes = [route("http.request", answer)]
"""
STARTED = re.compile(r"started runserver \(pid (\d+)\)")


def write_routes(directory: Path, text: str) -> None:
    (directory / "reload_routes.py").write_text(ROUTES.format(text=text))


def child_pids(process: ServeProcess) -> list[int]:
    return [int(m.group(1)) for line in process.stderr_lines if (m := STARTED.search(line))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@asynccontextmanager
async def runserver_reload(project: Path) -> AsyncIterator[ServeProcess]:
    """``towpath runserver --reload -p 0`` in ``project`` until the block ends, once it
    printed its URL. Leaving the block kills it if it is still running."""
    pids: list[int] = []
    try:
        async with towpath_process(
            "runserver",
            "--reload",
            "--reload-delay",
            "0.1",
            "-p",
            "0",
            "--routing",
            "reload_routes:routes",
            "--graceful-timeout",
            "5",
            cwd=project,
            env={"PYTHONDONTWRITEBYTECODE": "1"},
            ready=False,
        ) as served:
            try:
                async with asyncio.timeout(WAIT):
                    await served.wait_until_serving()
                yield served
            finally:
                pids = child_pids(served)
    finally:
        for pid in pids:  # a failed test must not leave a child serving
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def answer_becomes(http: httpx.AsyncClient, expected: str, served: ServeProcess) -> None:
    """Poll ``/`` until it answers ``expected`` (a connection cut by the old child's shutdown
    counts as "not yet")."""
    last = ""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    response = await http.get("/")
                    last = f"{response.status_code} {response.text}"
                    if response.status_code == 200 and response.text == expected:
                        return
                except httpx.TransportError as exc:
                    last = repr(exc)
                await asyncio.sleep(0.05)  # polling interval
    except TimeoutError:
        message = f"never answered {expected!r}, last {last}\n{served.output()}"
        raise AssertionError(message) from None


async def stop(served: ServeProcess) -> int:
    served.send_signal(signal.SIGTERM)
    async with asyncio.timeout(WAIT):
        return await served.wait()


@pytest.mark.slow
async def test_reload_serves_the_changed_code_and_stops_cleanly(tmp_path: Path) -> None:
    write_routes(tmp_path, "v1")
    async with (
        runserver_reload(tmp_path) as served,
        httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http,
    ):
        response = await http.get("/")
        assert (response.status_code, response.text) == (200, "v1")
        (first,) = child_pids(served)

        write_routes(tmp_path, "v2, reloaded")
        await answer_becomes(http, "v2, reloaded", served)
        async with asyncio.timeout(WAIT):
            await served.wait_for_stderr("changes in reload_routes.py; reloading")
        pids = child_pids(served)
        assert len(pids) == 2 and pids[0] == first, served.output()
        assert not alive(first), "the replaced child is still running"
        # the listening socket is the reloader's: the same address after the restart
        assert served.stdout_lines == [f"{READY_PREFIX}{served.url}\n"] * 2, served.output()

        assert await stop(served) == 0, served.output()
        assert not any(alive(pid) for pid in pids), served.output()
        assert "reloader stopping" in "".join(served.stderr_lines)


@pytest.mark.slow
async def test_reload_outlives_a_broken_module(tmp_path: Path) -> None:
    write_routes(tmp_path, "v1")
    async with (
        runserver_reload(tmp_path) as served,
        httpx.AsyncClient(base_url=served.url, timeout=WAIT) as http,
    ):
        response = await http.get("/")
        assert response.text == "v1"

        (tmp_path / "reload_routes.py").write_text("routes = [\n")  # a syntax error
        async with asyncio.timeout(WAIT):
            line = await served.wait_for_stderr("restarting it on the next change")
        assert re.search(r"exited with status [1-9]", line), served.output()
        assert "SyntaxError" in "".join(served.stderr_lines)

        write_routes(tmp_path, "v3, fixed")
        await answer_becomes(http, "v3, fixed", served)
        assert await stop(served) == 0, served.output()
        assert not any(alive(pid) for pid in child_pids(served))


# -- in process --------------------------------------------------------------------------------


def test_scan_watches_python_files_outside_hidden_dirs_caches_and_venvs(tmp_path: Path) -> None:
    for relative in [
        "app.py",
        "pkg/mod.py",
        "pkg/data.txt",
        ".venv/lib/x.py",
        ".git/hook.py",
        "pkg/__pycache__/mod.py",
        "env/pyvenv.cfg",
        "env/lib/y.py",
    ]:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")
    before = scan([tmp_path, tmp_path / "pkg"])  # overlapping directories: each file once
    assert sorted(Path(name).relative_to(tmp_path).as_posix() for name in before) == [
        "app.py",
        "pkg/mod.py",
    ]
    assert snapshot_changes(before, scan([tmp_path])) == []

    (tmp_path / "pkg/mod.py").write_text("x = 22\n")
    (tmp_path / "new.py").write_text("")
    (tmp_path / "app.py").unlink()
    (tmp_path / ".venv/lib/x.py").write_text("ignored = True\n")
    changes = snapshot_changes(before, scan([tmp_path]))
    assert [Path(name).relative_to(tmp_path).as_posix() for name in changes] == [
        "app.py",
        "new.py",
        "pkg/mod.py",
    ]


def test_child_args_repeat_the_options_minus_the_reloaders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    skip = ("host", "port", "fd", "reload", "reload_dirs")

    def spy(**params: object) -> None:
        seen.append(child_args(click.get_current_context(), skip))

    monkeypatch.setattr(main.commands["runserver"], "callback", spy)
    options = "-p 0 --routing m:routes --only-channels http.* --only-channels x --concurrency 7"
    result = CliRunner().invoke(
        main,
        ["runserver", "--reload", "--reload-dir", str(tmp_path), *options.split()],
        env={"TOWPATH_GRACEFUL_TIMEOUT": "2.5"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    (args,) = seen
    assert "--reload" not in args and "--reload-dir" not in args and "--port" not in args
    pairs = list(zip(args[::2], args[1::2], strict=True))
    assert ("--routing", "m:routes") in pairs
    assert [value for option, value in pairs if option == "--only-channels"] == ["http.*", "x"]
    assert ("--concurrency", "7") in pairs
    assert ("--graceful-timeout", "2.5") in pairs  # from the environment, made explicit
    assert ("--reload-delay", "0.25") in pairs  # a default, made explicit
