"""README.md's "Five-minute tour", run as written: every fenced block the README marks with
``<!-- tour: NAME -->`` is typed, command by command, into a real bash (two of them: step 1
checks the server "from a second shell"), after ``source .venv/bin/activate``.

Only what must differ in a test is substituted, visibly (:func:`adapted`): the HTTP port 8000
and the Redis port 6379 become free ports, ``/tmp/towpath`` a directory under ``tmp_path``. The
shells start without ``REDIS_URL``: they get it from the tour's own ``export``, and the test
then checks that the redis-server the tour started (on the free port) carried the traffic.

Step 1: ``towpath runserver`` in the foreground of the first shell; the second shell runs the
``curl`` and ``python`` checks (their output must be what the README's comments say); Ctrl-C
(SIGINT to the foreground process) stops it with status 0. Step 2: redis-server, ``towpath
check``, ``serve`` and two ``runworker`` in the background, the checks again, then the
worker restart while a WebSocket client (the README's browser tab) stays connected and keeps
hearing itself, with no "left" or "joined". Step 3: ``towpath deploy supervisord`` with the
README's flags, supervisord, ``status`` (2 servers and 2 workers RUNNING), ``curl``, the two
restarts (the client connected meanwhile keeps chatting) and ``shutdown``.

The test waits as a user does, for what each background command prints when it is ready
(``Ready to accept connections``, ``towpath serving on``, ``worker listening on``) or for a
killed process to be gone, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.waiting import WAIT
from towpath.testing.services import REDIS_INSTALL_HINT, free_port, require_service

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
_TOUR_BLOCK = re.compile(
    r"^<!-- tour: ([\w-]+) -->\n```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL
)
#: what a background command of the tour prints when it is ready: (stream, text)
_READY = {
    "redis-server": ("out", "Ready to accept connections"),
    "towpath serve": ("out", "towpath serving on"),
    "towpath runworker": ("err", "worker listening on"),
}


# -- the README --------------------------------------------------------------------------------


def tour_blocks() -> dict[str, str]:
    """The README's marked blocks, by name."""
    blocks = {name: body for name, _, body in _TOUR_BLOCK.findall(README.read_text())}
    expected = {"runserver", "check", "decoupled", "settings", "restart", "supervisord"}
    assert set(blocks) == expected, f"README.md's tour markers: {sorted(blocks)}"
    return blocks


def adapted(text: str, substitutions: dict[str, str]) -> str:
    """``text`` with each README value replaced by the test's; each must occur."""
    for readme_value, test_value in substitutions.items():
        assert readme_value in text, f"the tour no longer says {readme_value!r}: {text}"
        text = text.replace(readme_value, test_value)
    return text


def commands(block: str) -> list[str]:
    """The block's commands as a user types them: one line, or lines joined by a trailing
    backslash, or a command with its here-document."""
    lines = block.splitlines()
    result = []
    index = 0
    while index < len(lines):
        command = lines[index]
        index += 1
        while command.endswith("\\"):
            command += "\n" + lines[index]
            index += 1
        heredoc = re.search(r"<<-?'?(\w+)'?", command)
        if heredoc:
            while lines[index] != heredoc.group(1):
                command += "\n" + lines[index]
                index += 1
            command += "\n" + lines[index]
            index += 1
        result.append(command)
    return result


def is_background(command: str) -> bool:
    code = command.split("#", 1)[0]
    return re.search(r"(?<!&)&(?!&)", code) is not None


def expected_json_lines(block: str) -> list[Any]:
    """What the README's ``print(...)  # {...}`` comments say the snippet prints."""
    return [json.loads(found) for found in re.findall(r"print\(.*\)\s+# (\{.*\})$", block, re.M)]


# -- processes ---------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found += [int(child) for child in listing.read().split()]
    return found


def descendants(pid: int) -> list[int]:
    result = []
    for child in children(pid):
        result += [child, *descendants(child)]
    return result


async def exited(pid: int) -> None:
    """Until process ``pid`` (any process, not only a child) has ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(fd, gone.set_result, None)
    try:
        await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def stop_all(pids: list[int]) -> None:
    """SIGTERM to each of ``pids`` still alive, SIGKILL to those alive WAIT s later."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(exited(pid) for pid in pids))
    except TimeoutError:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Lines:
    """What one pipe said, line by line, with a way to wait for a line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._changed = asyncio.Event()

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\r\n"))
            self._changed.set()
        self.closed = True
        self._changed.set()

    def count(self, text: str, after: int = 0) -> int:
        return sum(text in line for line in self.lines[after:])

    async def wait_for(self, match: Callable[[str], bool], after: int = 0) -> int:
        """The index of the first line past ``after`` that ``match``es, once there is one."""
        while True:
            for index in range(after, len(self.lines)):
                if match(self.lines[index]):
                    return index
            after = len(self.lines)
            if self.closed:
                raise AssertionError("the shell's output ended")
            self._changed.clear()
            await self._changed.wait()


@dataclass
class Done:
    command: str
    status: int
    out: list[str]
    err: list[str]

    def __str__(self) -> str:
        out, err = "\n".join(self.out), "\n".join(self.err)
        return f"$ {self.command}\n(status {self.status})\n{out}\n--- stderr\n{err}"


class Shell:
    """A bash reading the tour's commands from a pipe, as it would from a terminal; its
    output and that of everything it starts is kept in :attr:`out` and :attr:`err`."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.out = Lines()
        self.err = Lines()
        assert process.stdout is not None and process.stderr is not None
        self._drains = [
            asyncio.create_task(self.out.drain(process.stdout)),
            asyncio.create_task(self.err.drain(process.stderr)),
        ]
        self._count = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, name: str, env: dict[str, str]) -> AsyncIterator[Shell]:
        process = await asyncio.create_subprocess_exec(
            "bash", "--noprofile", "--norc", cwd=ROOT, env=env, start_new_session=True,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        shell = cls(name, process)
        try:
            yield shell
        finally:
            await stop_all(descendants(process.pid))
            assert process.stdin is not None
            process.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            await asyncio.gather(*shell._drains)

    async def submit(self, command: str) -> Callable[[], Any]:
        """Type ``command``; a coroutine function that waits until it has finished (bash has
        read the next line) and returns its :class:`Done`."""
        self._count += 1
        marker = f"__tour_{self._count}__"
        out_start, err_start = len(self.out.lines), len(self.err.lines)
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\nprintf '\\n{marker} %s\\n' \"$?\"\n".encode())
        await self.process.stdin.drain()

        async def finished() -> Done:
            async with asyncio.timeout(WAIT):
                end = await self.out.wait_for(lambda line: line.startswith(marker), out_start)
            out = self.out.lines[out_start:end]
            if out and out[-1] == "":
                out.pop()  # the newline printed before the marker
            status = int(self.out.lines[end].split()[1])
            return Done(command, status, out, self.err.lines[err_start:])

        return finished

    async def run(self, command: str) -> Done:
        """Type ``command`` and wait until it has finished; it must exit 0."""
        done: Done = await (await self.submit(command))()
        assert done.status == 0, f"{self.name}:\n{done}"
        return done

    async def value(self, expression: str) -> str:
        return (await self.run(f'echo "{expression}"')).out[-1]

    async def start(self, command: str) -> int:
        """Type a background ``command``; its pid, once it printed that it is ready."""
        stream_name, ready = next(v for k, v in _READY.items() if command.startswith(k))
        stream = self.out if stream_name == "out" else self.err
        before = len(stream.lines)
        await self.run(command)
        pid = int(await self.value("$!"))
        is_ready = asyncio.ensure_future(stream.wait_for(lambda line: ready in line, before))
        gone = asyncio.ensure_future(exited(pid))
        try:
            async with asyncio.timeout(WAIT):
                await asyncio.wait([is_ready, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            is_ready.cancel()
            gone.cancel()
        assert not gone.done() or is_ready.done(), f"{command!r} exited:\n{self.output()}"
        return pid

    def output(self) -> str:
        return "\n".join([*self.out.lines[-30:], "--- stderr", *self.err.lines[-30:]])


# -- what the README says the commands do ------------------------------------------------------


def assert_checks_passed(done: Done, check_block: str) -> None:
    """The second shell's ``curl`` and ``python`` output is what the README's comments say."""
    assert done.out[0] == "HTTP/1.1 200 OK", done  # "# HTTP/1.1 200 OK, the chat page"
    assert any("<title>" in line for line in done.out), done
    printed = [json.loads(line) for line in done.out if line.startswith("{")]
    assert printed == expected_json_lines(check_block), done
    assert printed, "the README's snippet prints nothing to compare"


async def say_and_hear(tab: ClientConnection, text: str) -> None:
    """The tab sends ``text``; the next thing it hears must be that message from the room."""
    await tab.send(json.dumps({"text": text}))
    async with asyncio.timeout(WAIT):
        heard = json.loads(await tab.recv())
    assert heard == {"type": "message", "user": "tab", "text": text}


@contextlib.asynccontextmanager
async def browser_tab(port: int) -> AsyncIterator[ClientConnection]:
    """The browser tab the README opens on a room: a WebSocket client in the lobby."""
    url = f"ws://127.0.0.1:{port}/ws/chat/lobby/?user=tab"
    async with connect(url, open_timeout=WAIT) as tab:
        async with asyncio.timeout(WAIT):
            assert json.loads(await tab.recv()) == {"type": "joined", "user": "tab"}
        await say_and_hear(tab, "hello from the tab")
        yield tab


async def redis_commands(port: int) -> int:
    """How many commands the redis-server on ``port`` has processed."""
    import redis.asyncio

    client = redis.asyncio.Redis(port=port)
    try:
        stats = await client.info("stats")
    finally:
        await client.aclose()
    return int(stats["total_commands_processed"])


def shell_env() -> dict[str, str]:
    """The environment a user's terminal has: no REDIS_URL and no TOWPATH_* settings."""
    return {
        key: value
        for key, value in os.environ.items()
        if key != "REDIS_URL" and not key.startswith("TOWPATH_") and key != "VIRTUAL_ENV"
    }


def activate() -> str:
    """``source .venv/bin/activate``, for the virtualenv running the tests."""
    script = Path(sys.prefix) / "bin" / "activate"
    assert script.is_file(), f"the tests must run in a virtualenv ({script} is missing)"
    return f"source {shlex.quote(str(script))}"


# -- the tests ---------------------------------------------------------------------------------


def test_the_readme_shows_the_chat_settings_file_whole() -> None:
    shown = tour_blocks()["settings"]
    assert shown == (ROOT / "examples" / "chat" / "settings.py").read_text()


def test_the_tour_commands_are_split_as_typed() -> None:
    block = "a \\\n  b\npython - <<'EOF'\nprint(1)\nEOF\nserve & server=$!\nx && y\n"
    assert commands(block) == [
        "a \\\n  b",
        "python - <<'EOF'\nprint(1)\nEOF",
        "serve & server=$!",
        "x && y",
    ]
    assert [is_background(c) for c in commands(block)] == [False, False, True, False]
    assert expected_json_lines('print(x)   # {"a": 1}\nprint(y)\n') == [{"a": 1}]


async def test_the_readme_tour(tmp_path: Path) -> None:
    redis_server = shutil.which("redis-server")
    require_service("redis-server", redis_server is not None, REDIS_INSTALL_HINT)
    require_service("curl", shutil.which("curl") is not None, "apt-get install -y curl")
    blocks = tour_blocks()
    http_port, redis_port = free_port(), free_port()
    port = {"8000": str(http_port)}
    redis = {"6379": str(redis_port)}
    directory = {"/tmp/towpath": str(tmp_path / "towpath")}
    env = shell_env()
    async with Shell.open("first shell", env) as first, Shell.open("second shell", env) as second:
        await first.run(activate())
        await second.run(activate())

        # -- 1. runserver in the foreground; the checks from the second shell; Ctrl-C
        runserver = adapted(blocks["runserver"], port).strip()
        finished = await first.submit(runserver)
        async with asyncio.timeout(WAIT):
            await first.out.wait_for(
                lambda line: f"towpath serving on http://127.0.0.1:{http_port}" in line
            )
        check = adapted(blocks["check"], port)
        assert_checks_passed(await second.run(check), check)
        (foreground,) = children(first.process.pid)
        os.kill(foreground, signal.SIGINT)  # Ctrl-C
        stopped = await finished()
        assert stopped.status == 0, stopped

        # -- 2. redis-server, check, serve and two workers; the checks again
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        for command in commands(adapted(blocks["decoupled"], port | redis)):
            if command.startswith("towpath"):
                # the tour's export points the settings at the tour's Redis, before anything
                # could reach for this machine's own on 6379 (settings.py's default)
                assert await first.value("$REDIS_URL") == redis_url
            if is_background(command):
                await first.start(command)
            else:
                done = await first.run(command)
                if command.startswith("towpath check"):
                    assert done.out[0].startswith("default: ok (RedisChannelLayer, "), done
        assert_checks_passed(await second.run(check), check)

        # the worker restart, a browser tab connected all along
        async with browser_tab(http_port) as tab:
            for command in commands(blocks["restart"]):
                if is_background(command):
                    await first.start(command)
                else:
                    names = re.findall(r"\$(\w+)", command.split("#", 1)[0])
                    pids = [int(await first.value(f"${name}")) for name in names]
                    await first.run(command)
                    async with asyncio.timeout(WAIT):
                        await asyncio.gather(*(exited(pid) for pid in pids))
                await say_and_hear(tab, f"after: {command.split('#', 1)[0].strip()}")
        readme = README.read_text()
        (stop_step_2,) = re.findall(r"\(`(kill \$server[^`]*)`\)", readme)
        pids = [int(await first.value(f"${name}")) for name in re.findall(r"\$(\w+)", stop_step_2)]
        await first.run(stop_step_2)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*(exited(pid) for pid in pids))
        used = await redis_commands(redis_port)
        assert used > 100, f"the tour's redis-server processed {used} commands only"

        # -- 3. supervisord
        await run_step_3(
            first, adapted(blocks["supervisord"], port | directory), http_port, tmp_path
        )
        assert await redis_commands(redis_port) > used, "step 3 did not use step 2's Redis"


async def run_step_3(shell: Shell, block: str, http_port: int, tmp_path: Path) -> None:
    config = tmp_path / "towpath" / "supervisord.conf"
    pidfile = tmp_path / "towpath" / "run" / "supervisord.pid"
    supervisord_pid = 0
    try:
        async with contextlib.AsyncExitStack() as tab_open:
            tab: ClientConnection | None = None
            for command in commands(block):
                if " shutdown" in command:
                    await tab_open.aclose()  # the tab closes before the stack goes
                done = await shell.run(command)
                if command.startswith("towpath deploy"):
                    # every program gets step 2's Redis
                    redis_url = await shell.value("$REDIS_URL")
                    assert f'REDIS_URL="{redis_url}"' in config.read_text()
                elif " status" in command:
                    # right after the start a program is STARTING for a second: ask again
                    # until every one is RUNNING, as a user would
                    async with asyncio.timeout(WAIT):
                        while not all("RUNNING" in line for line in done.out):
                            done = await shell.run(command)
                    assert [line.split()[0] for line in done.out] == [
                        "towpath-serve:towpath-serve_00",
                        "towpath-serve:towpath-serve_01",
                        "towpath-worker:towpath-worker_00",
                        "towpath-worker:towpath-worker_01",
                    ], done
                    supervisord_pid = int(pidfile.read_text())  # written before it answers
                elif command.startswith("curl"):
                    assert done.out[0] == "HTTP/1.1 200 OK", done
                    assert any("<title>" in line for line in done.out), done
                    tab = await tab_open.enter_async_context(browser_tab(http_port))
                elif " restart " in command:
                    process = shlex.split(command, comments=True)[-1]
                    assert done.out == [f"{process}: stopped", f"{process}: started"], done
                    assert tab is not None, "the tour restarts before its curl"
                    await say_and_hear(tab, f"after restarting {process}")
                elif " shutdown" in command:
                    assert done.out == ["Shut down"], done
                    async with asyncio.timeout(WAIT):
                        await exited(supervisord_pid)
    finally:
        # after a failure supervisord may still run: stop it and its programs, by pid
        if pidfile.exists():
            pid = int(pidfile.read_text())
            await stop_all([*descendants(pid), pid])
    assert supervisord_pid, "the tour asked supervisord for no status"
