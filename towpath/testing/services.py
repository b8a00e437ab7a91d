"""Real services for tests: throwaway ``redis-server`` processes and a RabbitMQ probe.

Tests start their own Redis on a free loopback port so they can kill, restart and shard it.
RabbitMQ is not started here; its address comes from ``RABBITMQ_URL``. When a service is
missing, :func:`require_service` skips the test with the command that would provide it, or
fails it when ``TOWPATH_REQUIRE_SERVICES=1`` (as in CI).

Nothing here imports pytest at module level, so the helpers also work from scripts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote, urlsplit

__all__ = [
    "RABBITMQ_INSTALL_HINT",
    "REDIS_INSTALL_HINT",
    "RedisServer",
    "RedisServerError",
    "RedisServerFactory",
    "RedisTLS",
    "find_redis_server",
    "free_port",
    "rabbitmq_reachable",
    "rabbitmq_url_from_env",
    "require_service",
]

LOOPBACK = "127.0.0.1"
REDIS_INSTALL_HINT = "apt-get install -y redis-server"
RABBITMQ_INSTALL_HINT = (
    "apt-get install -y rabbitmq-server && rabbitmq-server -detached (or set RABBITMQ_URL)"
)
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"

_AMQP_0_9_1_HEADER = b"AMQP\x00\x00\x09\x01"
_AMQP_FRAME_METHOD = 0x01
_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 20


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Another process may take it before the caller binds it; callers that start servers on
    it should retry with a new port when the bind fails (as :class:`RedisServer` does).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def find_redis_server() -> str | None:
    """Path of the ``redis-server`` binary: ``$TOWPATH_REDIS_SERVER`` or the one on PATH."""
    override = os.environ.get("TOWPATH_REDIS_SERVER")
    if override:
        return shutil.which(override)
    return shutil.which("redis-server")


def require_service(name: str, available: bool, install_hint: str) -> None:
    """Skip (or, with ``TOWPATH_REQUIRE_SERVICES=1``, fail) the current test if not available."""
    if available:
        return
    import pytest

    if os.environ.get("TOWPATH_REQUIRE_SERVICES") == "1":
        pytest.fail(
            f"{name} is required (TOWPATH_REQUIRE_SERVICES=1) but missing; "
            f"install it with: {install_hint}",
            pytrace=False,
        )
    pytest.skip(f"{name} is not available; install it with: {install_hint}")


def rabbitmq_url_from_env() -> str:
    """The broker tests use: ``$RABBITMQ_URL`` or ``amqp://guest:guest@127.0.0.1:5672/``."""
    return os.environ.get("RABBITMQ_URL") or DEFAULT_RABBITMQ_URL


def rabbitmq_reachable(url: str, timeout: float = 2.0) -> bool:
    """Whether an AMQP 0-9-1 server answers at ``url``'s host and port.

    Sends the protocol header and expects the first frame of the handshake (Connection.Start)
    back. No credentials are sent. For ``amqps`` the TLS certificate is not verified: this is
    a reachability probe, not a connection.
    """
    parts = urlsplit(url)
    tls = parts.scheme == "amqps"
    host = parts.hostname or LOOPBACK
    try:
        port = parts.port or (5671 if tls else 5672)
    except ValueError:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                with context.wrap_socket(raw, server_hostname=host) as sock:
                    return _amqp_handshake_starts(sock)
            return _amqp_handshake_starts(raw)
    except OSError:
        return False


def _amqp_handshake_starts(sock: socket.socket) -> bool:
    sock.sendall(_AMQP_0_9_1_HEADER)
    reply = sock.recv(7)
    return bool(reply) and reply[0] == _AMQP_FRAME_METHOD


class RedisServerError(RuntimeError):
    """A ``redis-server`` process could not be started."""


@dataclasses.dataclass(frozen=True)
class RedisTLS:
    """The files of a TLS-only :class:`RedisServer` (``--port 0 --tls-port N``).

    ``cert_file``/``key_file`` are the server's certificate chain and key; ``ca_file`` is the
    CA that signed it and, with ``auth_clients``, the clients' certificates too
    (``--tls-auth-clients yes``: a client without a certificate from that CA is refused). The
    readiness probe trusts ``ca_file`` and presents ``client_cert_file``/``client_key_file``
    when given (it must, with ``auth_clients``).
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    auth_clients: bool = False
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    def __post_init__(self) -> None:
        if self.auth_clients and self.client_cert_file is None:
            raise ValueError("RedisTLS(auth_clients=True) needs client_cert_file for the probe")

    def args(self) -> list[str]:
        """redis-server's TLS arguments (the caller adds ``--tls-port``)."""
        return [
            "--tls-cert-file",
            str(self.cert_file),
            "--tls-key-file",
            str(self.key_file),
            "--tls-ca-cert-file",
            str(self.ca_file),
            "--tls-auth-clients",
            "yes" if self.auth_clients else "no",
        ]

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting ``ca_file`` (host name not checked: the probe dials an
        address) and presenting the client certificate, if any."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.check_hostname = False
        if self.client_cert_file is not None:
            key = str(self.client_key_file) if self.client_key_file is not None else None
            context.load_cert_chain(str(self.client_cert_file), key)
        return context


class RedisServer:
    """One ``redis-server`` process on a free loopback port, for tests.

    It binds 127.0.0.1 only, persists nothing (``--save ""``, ``--appendonly no``) and keeps
    its working directory and log in its own temporary directory, which :meth:`close` removes.
    The port is chosen once and kept across :meth:`restart`, so clients can reconnect.

    ``config`` is written to a file passed as the first argument (Sentinel needs one it can
    rewrite); ``extra_args`` follow the standard arguments and so override them.

    ``password`` starts it with ``--requirepass`` (the ``default`` user's password; add ACL
    users with ``extra_args=("--user", "alice on >pw ~* &* +@all")``). ``tls`` makes it listen
    on TLS only (:class:`RedisTLS`). :attr:`url` carries both (``rediss://:password@...``).
    """

    host = LOOPBACK

    def __init__(
        self,
        binary: str | None = None,
        *,
        extra_args: Sequence[str] = (),
        config: str | None = None,
        startup_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        password: str | None = None,
        tls: RedisTLS | None = None,
    ) -> None:
        resolved = binary if binary is not None else find_redis_server()
        if resolved is None:
            raise RedisServerError(f"redis-server not found; install it with: {REDIS_INSTALL_HINT}")
        self.binary = resolved
        self.extra_args = tuple(extra_args)
        self.config = config
        self.password = password
        self.tls = tls
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="towpath-redis-"))
        self._config_path: Path | None = None
        self._has_run = False
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], RedisServer] | None = None
        # If the object is dropped without close(): the process finalizer (set per spawn)
        # kills and reaps a running server, and this one removes the directory.
        self._dir_finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)

    @classmethod
    def sentinel(
        cls,
        master_port: int,
        master_name: str = "mymaster",
        *,
        master_host: str = LOOPBACK,
        binary: str | None = None,
        down_after_milliseconds: int = 1000,
        failover_timeout: int = 2000,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 10.0,
        master_password: str | None = None,
        password: str | None = None,
    ) -> Self:
        """A Sentinel (not started) monitoring ``master_host:master_port`` with quorum 1.

        ``master_password`` is what it authenticates to the master with (``auth-pass``);
        ``password`` is its own (clients give it in ``sentinel_kwargs``).
        """
        config = (
            f"sentinel monitor {master_name} {master_host} {master_port} 1\n"
            f"sentinel down-after-milliseconds {master_name} {down_after_milliseconds}\n"
            f"sentinel failover-timeout {master_name} {failover_timeout}\n"
            f"sentinel parallel-syncs {master_name} 1\n"
        )
        if master_password is not None:
            config += f"sentinel auth-pass {master_name} {master_password}\n"
        return cls(
            binary,
            extra_args=("--sentinel", *extra_args),
            config=config,
            startup_timeout=startup_timeout,
            password=password,
        )

    # -- properties ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """What a client dials: ``redis://`` (``rediss://`` with TLS), with the password."""
        scheme = "rediss" if self.tls is not None else "redis"
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"{scheme}://{auth}{self.host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """Process id while running, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_sentinel(self) -> bool:
        return "--sentinel" in self.extra_args

    @property
    def directory(self) -> Path:
        """The server's temporary working directory (log, config)."""
        return self._dir

    @property
    def log_path(self) -> Path:
        return self._dir / "redis.log"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process and wait until it answers PING; returns ``self``.

        A port taken between choosing and binding is replaced by a fresh one, unless the
        server has run before (a restart keeps its port and fails instead).
        """
        if self.running:
            return self
        self._reap()
        may_move = not self._has_run  # nobody has seen the port yet
        for attempt in range(_PORT_ATTEMPTS):
            self._spawn()
            try:
                self._wait_ready()
            except _PortInUse:
                self._reap()
                if not may_move or attempt == _PORT_ATTEMPTS - 1:
                    raise RedisServerError(
                        f"port {self._port} is in use; redis-server could not bind it\n"
                        + self.log_tail()
                    ) from None
                self._port = free_port()
                continue
            except BaseException:
                self.kill()
                raise
            self._has_run = True
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Send SIGTERM and wait for the process to exit (SIGKILL after ``stop_timeout``)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._reap()

    def kill(self) -> None:
        """Send SIGKILL and wait: the abrupt death fault tests want."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        self._reap()

    def restart(self) -> Self:
        """Stop (if running) and start a new process on the same port; returns ``self``.

        The dataset is empty afterwards: nothing is persisted.
        """
        self.stop()
        return self.start()

    def close(self) -> None:
        """Kill the process if it is still running and remove the temporary directory."""
        self.kill()
        self._dir_finalizer()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's log and of its stdout/stderr."""
        chunks = []
        for name in ("redis.log", "output.log"):
            path = self._dir / name
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    chunks.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(chunks) or f"(no log in {self._dir})"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "sentinel" if self.is_sentinel else "server"
        state = f"running pid={self.pid}" if self.running else "stopped"
        return f"<RedisServer {kind} port={self._port} {state}>"

    # -- internals -------------------------------------------------------------------------

    def _command(self) -> list[str]:
        args = [self.binary]
        if self.config is not None:
            if self._config_path is None:
                # Written once: Sentinel rewrites it with its state, which a restart keeps.
                self._config_path = self._dir / "redis.conf"
                self._config_path.write_text(self.config)
            args.append(str(self._config_path))
        if self.tls is not None:
            args += ["--port", "0", "--tls-port", str(self._port), *self.tls.args()]
        else:
            args += ["--port", str(self._port)]
        if self.password is not None:
            args += ["--requirepass", self.password]
        args += [
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
        ]
        return args + list(self.extra_args)

    def _spawn(self) -> None:
        # Messages printed before the log file opens (bad arguments) land in output.log.
        with open(self._dir / "output.log", "ab") as output:
            try:
                self._proc = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=self._dir,
                )
            except OSError as exc:
                raise RedisServerError(f"cannot run redis-server {self.binary!r}: {exc}") from exc
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _kill_process, self._proc)

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
            self._proc = None

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.002
        while True:
            if proc.poll() is not None:
                if "Address already in use" in self.log_tail(lines=50):
                    raise _PortInUse
                raise RedisServerError(
                    f"redis-server exited with status {proc.returncode} during startup "
                    f"(port {self._port})\n{self.log_tail()}"
                )
            # The answer must come from our process, not from whoever else holds the port.
            if _redis_pid(self._port, password=self.password, tls=self.tls) == proc.pid:
                return
            if time.monotonic() >= deadline:
                raise RedisServerError(
                    f"redis-server on port {self._port} did not answer PING within "
                    f"{self.startup_timeout} s\n{self.log_tail()}"
                )
            time.sleep(delay)  # polling interval between real connection attempts
            delay = min(delay * 2, 0.05)


class _PortInUse(Exception):
    pass


def _kill_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _resp(*words: str) -> bytes:
    """One command in RESP, the Redis wire format."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _redis_pid(
    port: int, timeout: float = 0.1, *, password: str | None = None, tls: RedisTLS | None = None
) -> int | None:
    """PING the server on ``port``; if it answers PONG, return the ``process_id`` it reports.

    The timeout is short because the caller polls: a listener that accepts but does not
    answer (someone else on the port) must not hide our own process exiting. With ``tls`` the
    probe speaks TLS (and presents the client certificate); with ``password`` it AUTHs first.
    """
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((LOOPBACK, port), timeout=timeout))
            if tls is not None:
                sock = stack.enter_context(tls.client_context().wrap_socket(sock))
            auth = _resp("AUTH", password) if password is not None else b""
            sock.sendall(auth + _resp("PING") + _resp("INFO", "server"))
            reader = stack.enter_context(sock.makefile("rb"))
            if password is not None and reader.readline() != b"+OK\r\n":
                return None
            if reader.readline() != b"+PONG\r\n":
                return None  # e.g. -LOADING while the dataset loads
            header = reader.readline()
            if not header.startswith(b"$"):
                return None
            body = reader.read(int(header[1:]) + 2)
    except (OSError, ValueError):
        return None
    for line in body.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(":")
        if key == "process_id":
            return int(value)
    return None


class RedisServerFactory:
    """Makes any number of started :class:`RedisServer` instances and closes them all.

    ``factory()`` starts a server; ``factory.sentinel(master)`` starts a Sentinel watching
    one. :meth:`close` kills whatever is still running, whatever state a test left it in.
    """

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary
        self.servers: list[RedisServer] = []

    def __call__(
        self, *extra_args: str, password: str | None = None, tls: RedisTLS | None = None
    ) -> RedisServer:
        return self._track(
            RedisServer(self.binary, extra_args=extra_args, password=password, tls=tls)
        )

    def sentinel(
        self,
        master: RedisServer | int,
        master_name: str = "mymaster",
        *,
        password: str | None = None,
    ) -> RedisServer:
        """A started Sentinel watching ``master`` (with the master's password, if it has
        one); ``password`` is the Sentinel's own."""
        port = master.port if isinstance(master, RedisServer) else master
        master_password = master.password if isinstance(master, RedisServer) else None
        return self._track(
            RedisServer.sentinel(
                port,
                master_name,
                binary=self.binary,
                master_password=master_password,
                password=password,
            )
        )

    def _track(self, server: RedisServer) -> RedisServer:
        self.servers.append(server)
        return server.start()

    def close(self) -> None:
        while self.servers:
            self.servers.pop().close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
