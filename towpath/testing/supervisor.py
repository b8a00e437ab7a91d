"""A real supervisord running a towpath stack, for end-to-end tests::

    async with supervisor_stack(tmp_path, settings_py, workers=2, servers=2,
                                serve_args=("--heartbeat-timeout", "1")) as stack:
        response = await client.get(stack.url + "/hello")
        await stack.restart(stack.workers[0])          # supervisorctl restart, one worker
        os.kill((await stack.pids())[stack.workers[1]], signal.SIGKILL)
        await stack.wait_restarted(stack.workers[1], old_pid)

:func:`supervisor_stack` renders the configuration with :func:`towpath.deploy.render_supervisord`
(what ``towpath deploy supervisord`` writes, so the tests run the file users run) on a free
loopback port, with its logs under the given directory and supervisord's control socket in a
short temporary directory (a unix socket path must stay under 108 bytes). It starts
``supervisord -n``, and yields once every program is RUNNING, every process has logged that it
is ready and the port accepts connections. Leaving the block stops supervisord (which stops the
programs gracefully) and kills, by pid, any process of the stack still alive after that.

Process names are supervisorctl's: ``towpath-worker:towpath-worker_00``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import xmlrpc.client
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from towpath.deploy import DeployConfig, WorkerPool, render_supervisord
from towpath.testing.processes import READY_PREFIX, TOWPATH, WORKER_READY
from towpath.testing.services import free_port

__all__ = ["SUPERVISORCTL", "SUPERVISORD", "ProcessState", "SupervisorStack", "supervisor_stack"]

#: the supervisor executables installed beside the running interpreter
SUPERVISORD = str(Path(sys.executable).with_name("supervisord"))
SUPERVISORCTL = str(Path(sys.executable).with_name("supervisorctl"))

#: what each kind of process logs once it is ready, by program name suffix
_READY = {"serve": READY_PREFIX.strip(), "redis": "Ready to accept connections"}
_WORKER_READY = WORKER_READY.strip()
_POLL_SECONDS = 0.05
_START_ATTEMPTS = 3
_LOG_TAIL_LINES = 30


@dataclass(frozen=True, slots=True)
class ProcessState:
    """One process as supervisord reports it."""

    name: str  #: ``group:process``
    state: str  #: RUNNING, STARTING, BACKOFF, EXITED, FATAL, STOPPED, ...
    pid: int  #: 0 when not running


class SupervisorStack:
    """A running supervisord and the towpath stack it runs (see the module docstring)."""

    def __init__(
        self, config: DeployConfig, config_path: Path, process: asyncio.subprocess.Process
    ):
        self.config = config
        self.config_path = config_path
        self.process = process
        self.log_dir = Path(config.log_dir)
        #: every pid any process of the stack had, to kill leftovers at exit
        self.seen_pids: set[int] = set()

    # -- addresses -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.config.bind

    @property
    def port(self) -> int:
        """The shared socket's port (with ``own_port``: the first server's)."""
        return self.config.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # -- names -----------------------------------------------------------------------------

    def program_processes(self, program: str) -> list[str]:
        """Full names of the processes of ``program`` (``towpath-worker``), in order."""
        name = self.config.name
        if program == f"{name}-serve":
            if self.config.own_port:
                numbers = [str(self.port + n) for n in range(self.config.servers)]
            else:
                numbers = [f"{n:02d}" for n in range(self.config.servers)]
            return [f"{program}:{program}_{number}" for number in numbers]
        if program == f"{name}-redis":
            return [f"{program}:{program}"]
        counts = {f"{name}-worker": self.config.workers}
        counts.update({f"{name}-{pool.name}": pool.processes for pool in self.config.pools})
        if program not in counts:
            raise KeyError(f"no program {program!r}; the stack runs {', '.join(self.programs)}")
        return [f"{program}:{program}_{n:02d}" for n in range(counts[program])]

    @property
    def programs(self) -> list[str]:
        name = self.config.name
        programs = [f"{name}-redis"] if self.config.with_redis else []
        programs += [f"{name}-serve", f"{name}-worker"]
        return programs + [f"{name}-{pool.name}" for pool in self.config.pools]

    @property
    def servers(self) -> list[str]:
        return self.program_processes(f"{self.config.name}-serve")

    @property
    def workers(self) -> list[str]:
        """The main pool's workers."""
        return self.program_processes(f"{self.config.name}-worker")

    @property
    def all_processes(self) -> list[str]:
        return [name for program in self.programs for name in self.program_processes(program)]

    # -- supervisorctl and supervisord's state ---------------------------------------------

    async def ctl(self, *args: str, check: bool = True) -> str:
        """Run ``supervisorctl -c CONFIG *args``; its output. AssertionError with the output
        when it fails and ``check``."""
        ctl = await asyncio.create_subprocess_exec(
            SUPERVISORCTL,
            "-c",
            str(self.config_path),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await ctl.communicate()
        text = out.decode(errors="replace")
        if check and ctl.returncode != 0:
            raise AssertionError(
                f"supervisorctl {' '.join(args)} exited {ctl.returncode}:\n{text}\n{self.output()}"
            )
        return text

    async def states(self) -> dict[str, ProcessState]:
        """Every process's state, from supervisord's XML-RPC interface (as ``status`` shows)."""
        states = {state.name: state for state in await asyncio.to_thread(self._process_info)}
        self.seen_pids.update(state.pid for state in states.values() if state.pid)
        return states

    def _process_info(self) -> list[ProcessState]:
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self._control_socket()}")
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        try:
            infos: Any = proxy.supervisor.getAllProcessInfo()
        finally:
            transport.close()
        return [
            ProcessState(
                f"{info['group']}:{info['name']}", str(info["statename"]), int(info["pid"])
            )
            for info in infos
        ]

    async def pids(self, program: str | None = None) -> dict[str, int]:
        """Running processes (of ``program``, or all) and their pids."""
        names = set(self.program_processes(program)) if program else None
        return {
            name: state.pid
            for name, state in (await self.states()).items()
            if state.state == "RUNNING" and (names is None or name in names)
        }

    async def wait_running(
        self, names: Sequence[str] | None = None, *, not_pids: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        """Wait until every process in ``names`` (default: all) is RUNNING, with a pid other
        than its ``not_pids`` entry; their pids. Bound it with ``asyncio.timeout``."""
        wanted = list(names) if names is not None else self.all_processes
        not_pids = not_pids or {}
        while True:
            self._check_alive()
            states = await self.states()
            for name in wanted:
                if name not in states:
                    raise AssertionError(f"supervisord has no process {name!r}: {list(states)}")
                if states[name].state == "FATAL":
                    raise AssertionError(f"{name} is FATAL\n{self.output()}")
            if all(
                states[n].state == "RUNNING" and states[n].pid != not_pids.get(n) for n in wanted
            ):
                return {name: states[name].pid for name in wanted}
            await asyncio.sleep(_POLL_SECONDS)  # polling supervisord, with the caller's deadline

    # -- logs ------------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name.rpartition(':')[2]}.log"

    def log(self, name: str) -> str:
        """What process ``name`` (all its runs) has written so far."""
        try:
            return self.log_path(name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self, name: str) -> int:
        try:
            return self.log_path(name).stat().st_size
        except FileNotFoundError:
            return 0

    async def wait_for_log(self, name: str, text: str, *, after: int = 0) -> str:
        """The first line of ``name``'s log past byte ``after`` that contains ``text``, waiting
        for it (bound it with ``asyncio.timeout``)."""
        while True:
            self._check_alive()
            line = self._find_in_log(name, text, after)
            if line is not None:
                return line
            await asyncio.sleep(_POLL_SECONDS)  # polling a log file, with the caller's deadline

    def _find_in_log(self, name: str, text: str, after: int) -> str | None:
        try:
            with self.log_path(name).open("rb") as log:
                log.seek(after)
                lines = log.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return None
        return next((line for line in lines if text in line), None)

    def ready_text(self, name: str) -> str:
        """The line process ``name`` logs once it is ready."""
        program = name.partition(":")[0]
        suffix = program[len(self.config.name) + 1 :]
        return _READY.get(suffix, _WORKER_READY)

    def output(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of supervisord's log and of every process's, for failure messages."""
        chunks = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(chunks)

    def _control_socket(self) -> Path:
        return Path(self.config.run_dir, "supervisor.sock")

    def _check_alive(self) -> None:
        if self.process.returncode is not None:
            raise AssertionError(
                f"supervisord exited with status {self.process.returncode}\n{self.output()}"
            )

    # -- restarts --------------------------------------------------------------------------

    async def restart(self, name: str) -> int:
        """``supervisorctl restart NAME`` (a graceful stop, then a start), then wait until the
        new process is RUNNING and ready; its pid. Bound it with ``asyncio.timeout``."""
        old = (await self.states())[name].pid
        offset = self.log_size(name)
        await self.ctl("restart", name)
        return await self.wait_restarted(name, old, log_offset=offset)

    async def wait_restarted(self, name: str, old_pid: int, *, log_offset: int = 0) -> int:
        """Wait until ``name`` runs again under a pid other than ``old_pid`` (supervisord
        restarted it) and has logged its ready line past ``log_offset``; its new pid."""
        pids = await self.wait_running([name], not_pids={name: old_pid})
        await self.wait_for_log(name, self.ready_text(name), after=log_offset)
        return pids[name]

    async def kill(self, name: str, signum: int = signal.SIGKILL) -> int:
        """Send ``signum`` to process ``name`` behind supervisord's back; the pid it had."""
        pid = (await self.states())[name].pid
        assert pid, f"{name} is not running"
        os.kill(pid, signum)
        return pid

    # -- start and stop --------------------------------------------------------------------

    async def _wait_ready(self) -> None:
        while not self._control_socket().exists():
            self._check_alive()
            await asyncio.sleep(_POLL_SECONDS)  # polling for the control socket, with a deadline
        await self.wait_running()
        for name in self.all_processes:
            await self.wait_for_log(name, self.ready_text(name))
        if self.config.own_port:
            ports = [self.port + n for n in range(self.config.servers)]
        else:
            ports = [self.port]
        for port in ports:
            while not await _accepts(self.host, port):
                self._check_alive()
                await asyncio.sleep(_POLL_SECONDS)  # polling the port, with a deadline

    async def _stop(self, wait_seconds: float) -> None:
        with contextlib.suppress(AssertionError, OSError, xmlrpc.client.Error):
            await self.states()  # the pids of the last moment, to kill leftovers
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(wait_seconds):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        self._kill_all()

    def _kill_all(self) -> None:
        """SIGKILL supervisord and every process of the stack it ever ran that is alive."""
        if self.process.returncode is None:  # not reaped: the pid is still ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        for pid in self.seen_pids:
            _kill_if_ours(pid)


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _kill_if_ours(pid: int) -> None:
    """SIGKILL ``pid`` if it is still a towpath or redis-server process (not a reused pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"towpath" in command or b"redis-server" in command:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that were free a moment ago."""
    if count == 1:
        return free_port()
    for _ in range(50):
        first = free_port()
        if first + count - 1 > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(first, first + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"found no {count} consecutive free ports")


@asynccontextmanager
async def supervisor_stack(
    directory: Path,
    settings: str | os.PathLike[str],
    *,
    workers: int = 2,
    servers: int = 2,
    own_port: bool = False,
    pools: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    serve_args: Sequence[str] = (),
    worker_args: Sequence[str] = (),
    graceful_timeout: float = 5.0,
    with_redis: bool = False,
    redis_url: str | None = None,
    redis_server: str = "redis-server",
    project_dir: str | os.PathLike[str] | None = None,
    startup_timeout: float = 30.0,
) -> AsyncIterator[SupervisorStack]:
    """Run a towpath stack under a real ``supervisord -n`` until the block ends.

    ``directory`` holds the rendered ``supervisord.conf`` and the ``logs/``; ``project_dir``
    (default ``directory``) is every process's working directory. ``pools`` are
    ``NAME=CHANNELS:N`` specs, ``env`` is added to every process's environment, and
    ``serve_args``/``worker_args`` are appended to ``towpath serve``/``runworker`` (short
    heartbeats: ``("--heartbeat-timeout", "1")`` and ``("--heartbeat-interval", "0.2")``).
    ``with_redis`` adds the one-box Redis program (``redis_server`` is its executable) on a
    free port, or on ``redis_url``'s; the processes find it in ``REDIS_URL``.
    AssertionError with every log's tail when the stack is not ready in ``startup_timeout``.
    """
    directory = Path(directory)
    run_dir = tempfile.mkdtemp(prefix="towpath-sv-")
    stack: SupervisorStack | None = None
    try:
        for attempt in range(_START_ATTEMPTS):
            config = _deploy_config(
                directory,
                run_dir,
                settings=str(settings),
                project_dir=project_dir,
                workers=workers,
                servers=servers,
                own_port=own_port,
                with_redis=with_redis,
                redis_url=redis_url,
                redis_server=redis_server,
                graceful_timeout=graceful_timeout,
                pools=tuple(WorkerPool.parse(pool) for pool in pools),
                env=tuple((env or {}).items()),
                serve_args=tuple(serve_args),
                worker_args=tuple(worker_args),
            )
            stack = await _start(directory, config)
            try:
                async with asyncio.timeout(startup_timeout):
                    await stack._wait_ready()
                break
            except (AssertionError, TimeoutError) as exc:
                log = stack.output()
                await stack._stop(wait_seconds=3 * (graceful_timeout + 10))
                stack = None
                if "Address already in use" in log and attempt < _START_ATTEMPTS - 1:
                    continue  # someone took the free port first: render again with another
                if isinstance(exc, TimeoutError):
                    raise AssertionError(
                        f"the stack was not ready within {startup_timeout} s\n{log}"
                    ) from None
                raise
        assert stack is not None
        # if the test run dies before the block ends (a hard timeout), take the stack with it
        atexit.register(stack._kill_all)
        try:
            yield stack
        finally:
            atexit.unregister(stack._kill_all)
    finally:
        if stack is not None:
            await stack._stop(wait_seconds=3 * (graceful_timeout + 10))
        shutil.rmtree(run_dir, ignore_errors=True)


def _deploy_config(
    directory: Path,
    run_dir: str,
    *,
    project_dir: str | os.PathLike[str] | None,
    servers: int,
    own_port: bool,
    **options: Any,
) -> DeployConfig:
    """The stack's configuration on free ports, logging to ``directory/logs``."""
    log_dir = directory / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    if options["with_redis"] and options["redis_url"] is None:
        options["redis_url"] = f"redis://127.0.0.1:{free_port()}/0"
    return DeployConfig(
        directory=os.path.realpath(project_dir or directory),
        towpath=TOWPATH,
        servers=servers,
        own_port=own_port,
        port=_free_ports(servers if own_port else 1),
        log_dir=str(log_dir.absolute()),
        run_dir=run_dir,
        **options,
    )


async def _start(directory: Path, config: DeployConfig) -> SupervisorStack:
    """Write the configuration and start ``supervisord -n`` on it (its own output goes to
    ``supervisord.stderr.log`` beside the programs' logs)."""
    config_path, output = _prepare(directory, config)
    with output:
        process = await asyncio.create_subprocess_exec(
            SUPERVISORD,
            "-n",
            "-c",
            str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    return SupervisorStack(config, config_path, process)


def _prepare(directory: Path, config: DeployConfig) -> tuple[Path, BinaryIO]:
    """Write the configuration, remove what a failed attempt left; the config file's path and
    supervisord's output file, open."""
    config_path = directory / "supervisord.conf"
    config_path.write_text(render_supervisord(config))
    log_dir = Path(config.log_dir)
    for stale in ("supervisord.log", "supervisord.stderr.log"):
        (log_dir / stale).unlink(missing_ok=True)
    Path(config.run_dir, "supervisor.sock").unlink(missing_ok=True)
    return config_path, open(log_dir / "supervisord.stderr.log", "wb")
