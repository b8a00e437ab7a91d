"""A throwaway RabbitMQ node for tests that must kill and restart the broker.

The shared broker of ``RABBITMQ_URL`` is not ours to stop, so fault tests start a node of
their own: ``rabbitmq-server`` with its own node name, AMQP port and distribution port (free
loopback ports), its data and logs in a temporary directory, no plugins and no configuration
file, and ``HOME`` there too (for its Erlang cookie). :meth:`RabbitMQNode.kill` ends it with
SIGKILL, as a crash would; :meth:`RabbitMQNode.restart` starts it again on the same ports and
data directory, so durable queues and exchanges come back and clients can redial. A node takes
a few seconds to start.

It uses the ``epmd`` already running for a system broker, or starts one (which outlives it, as
``epmd`` always does). Nothing here imports pytest at module level.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

from towpath.testing.services import LOOPBACK, free_port, rabbitmq_reachable

__all__ = ["RABBITMQ_SERVER_HINT", "RabbitMQNode", "RabbitMQNodeError", "find_rabbitmq_server"]

RABBITMQ_SERVER_HINT = "apt-get install -y rabbitmq-server (or set TOWPATH_RABBITMQ_SERVER)"

# The distribution's /usr/sbin/rabbitmq-server switches to the rabbitmq user and drops the
# environment; the script it wraps keeps it.
_SCRIPT_CANDIDATES = (
    "/usr/lib/rabbitmq/bin/rabbitmq-server",
    "/usr/local/lib/rabbitmq/bin/rabbitmq-server",
    "/opt/homebrew/sbin/rabbitmq-server",
    "/usr/local/sbin/rabbitmq-server",
)


class RabbitMQNodeError(RuntimeError):
    """A private RabbitMQ node could not be started."""


def find_rabbitmq_server() -> str | None:
    """The ``rabbitmq-server`` script: ``$TOWPATH_RABBITMQ_SERVER``, a known install location
    whose script keeps the environment, or the one on PATH."""
    override = os.environ.get("TOWPATH_RABBITMQ_SERVER")
    if override:
        return shutil.which(override)
    for candidate in _SCRIPT_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("rabbitmq-server")
    return found


class RabbitMQNode:
    """One private ``rabbitmq-server`` node on free loopback ports (guest/guest)."""

    def __init__(self, binary: str | None = None, *, startup_timeout: float = 60.0) -> None:
        resolved = binary if binary is not None else find_rabbitmq_server()
        if resolved is None:
            raise RabbitMQNodeError(
                f"rabbitmq-server not found; install it: {RABBITMQ_SERVER_HINT}"
            )
        self.binary = resolved
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.dist_port = free_port()
        self.nodename = f"towpath-test-{uuid.uuid4().hex[:8]}@localhost"
        self.directory = Path(tempfile.mkdtemp(prefix="towpath-rabbitmq-"))
        self._proc: subprocess.Popen[bytes] | None = None
        for sub in ("mnesia", "log", "home"):
            (self.directory / sub).mkdir()
        (self.directory / "enabled_plugins").write_text("[].\n")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{LOOPBACK}:{self.port}/%2F"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _environment(self) -> dict[str, str]:
        base = self.directory
        return {
            **os.environ,
            "HOME": str(base / "home"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        }

    def start(self) -> Self:
        """Start the node and wait until it answers AMQP; returns ``self``."""
        if self.running:
            return self
        output = open(self.directory / "output.log", "ab")  # noqa: SIM115 - kept for the child
        try:
            self._proc = subprocess.Popen(
                [self.binary],
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            output.close()
        deadline = time.monotonic() + self.startup_timeout
        while not rabbitmq_reachable(self.url, timeout=0.5):
            if self._proc.poll() is not None:
                raise RabbitMQNodeError(
                    f"rabbitmq-server exited with {self._proc.returncode}\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RabbitMQNodeError(
                    f"rabbitmq-server did not answer on port {self.port} within "
                    f"{self.startup_timeout:g} s\n{self.log_tail()}"
                )
            time.sleep(0.1)  # polling a condition with a deadline
        return self

    def kill(self) -> None:
        """SIGKILL the node's whole process group and wait: a crash, no clean shutdown."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while rabbitmq_reachable(self.url, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.05)  # the port closes when the VM is gone
        self._proc = None

    def restart(self) -> Self:
        """Kill (if running) and start again on the same ports and data directory."""
        self.kill()
        return self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        chunks = []
        for path in (self.directory / "output.log", *(self.directory / "log").glob("*.log")):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            chunks.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(chunks)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
