"""The options of ``towpath deploy``, checked once: :class:`DeployConfig` (and the
:class:`WorkerPool` entries it holds) refuses what would render a broken file, naming the
field, and derives what every template needs (commands, environment, stop timeout)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_LOG_DIR",
    "DEFAULT_REDIS_URL",
    "DEFAULT_RUN_DIR",
    "STOP_MARGIN_SECONDS",
    "DeployConfig",
    "DeployConfigError",
    "WorkerPool",
    "default_towpath",
    "seconds",
]

DEFAULT_LOG_DIR = "/var/log/towpath"
DEFAULT_RUN_DIR = "/run/towpath"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: seconds a process manager waits beyond ``--graceful-timeout`` before SIGKILL: the lifespan
#: shutdown, the layer's close and the hand-back of WebSockets come after the drain
STOP_MARGIN_SECONDS = 10

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
_RESERVED_POOLS = ("serve", "worker", "redis")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: the environment keys the options own: key -> the option to use instead
_OWNED_ENV = {"TOWPATH_SETTINGS": "--settings", "REDIS_URL": "--redis-url"}
#: the environment keys the fields set: key -> field
_ENV_FIELDS = {"TOWPATH_SETTINGS": "settings", "PYTHONPATH": "directory", "REDIS_URL": "redis_url"}


class DeployConfigError(ValueError):
    """A deploy option is invalid; ``setting`` names the :class:`DeployConfig` field and the
    message says what it accepts."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


def default_towpath() -> str:
    """The ``towpath`` console script beside the running interpreter (its virtualenv's)."""
    return str(Path(sys.executable).with_name("towpath"))


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerPool:
    """Workers of their own for some channels: ``thumbnails=thumbnail:2`` is two processes
    running ``runworker --only-channels thumbnail``; the main pool then excludes ``thumbnail``."""

    name: str
    channels: tuple[str, ...]
    processes: int = 1

    @classmethod
    def parse(cls, text: str) -> WorkerPool:
        """``NAME=GLOB[,GLOB...]:N`` (``:N`` optional, 1) as a pool; DeployConfigError if not."""
        name, equals, rest = text.partition("=")
        channels, _, count = rest.rpartition(":") if ":" in rest else (rest, "", "1")
        if not equals or not name or not channels or not count.isdigit():
            raise DeployConfigError(
                "pools", f"expected NAME=CHANNELS:N (e.g. thumbnails=thumbnail:2), got {text!r}"
            )
        globs = tuple(glob.strip() for glob in channels.split(","))
        pool = cls(name.strip(), globs, int(count))
        pool.check()
        return pool

    def check(self) -> None:
        if not _NAME.match(self.name) or self.name in _RESERVED_POOLS:
            raise DeployConfigError(
                "pools",
                f"pool name {self.name!r} must be lower-case letters, digits, '-' or '_' "
                f"(starting with a letter) and none of {', '.join(_RESERVED_POOLS)}",
            )
        if not self.channels or any(not g or any(c.isspace() for c in g) for g in self.channels):
            raise DeployConfigError(
                "pools", f"pool {self.name!r}: channels must be non-empty globs without spaces"
            )
        if self.processes < 1:
            raise DeployConfigError("pools", f"pool {self.name!r}: needs at least 1 process")

    @property
    def spec(self) -> str:
        return f"{self.name}={','.join(self.channels)}:{self.processes}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeployConfig:
    """Everything ``towpath deploy`` renders from. Paths must be absolute (the process manager
    does not start in your shell's directory); ``__post_init__`` refuses what would render a
    broken file, naming the field."""

    #: settings module (dotted name, importable from ``directory``) or .py path
    settings: str
    #: the project directory: working directory and PYTHONPATH of every process
    directory: str = dataclasses.field(default_factory=os.getcwd)
    #: the ``towpath`` console script to run
    towpath: str = dataclasses.field(default_factory=default_towpath)
    workers: int = 2
    servers: int = 2
    #: IPv4 address or host name, or ``unix:/path`` (a unix socket; not with ``own_port``)
    bind: str = "127.0.0.1"
    port: int = 8000
    #: each server on its own port (port, port+1, ...) behind a proxy, not one shared socket
    own_port: bool = False
    with_redis: bool = False
    #: REDIS_URL for the settings module; with ``with_redis`` it defaults to the local Redis
    redis_url: str | None = None
    redis_server: str = "redis-server"
    graceful_timeout: float = 30.0
    log_dir: str = DEFAULT_LOG_DIR
    run_dir: str = DEFAULT_RUN_DIR
    pools: tuple[WorkerPool, ...] = ()
    #: extra environment of every process, after TOWPATH_SETTINGS, PYTHONPATH and REDIS_URL
    env: tuple[tuple[str, str], ...] = ()
    serve_args: tuple[str, ...] = ()
    worker_args: tuple[str, ...] = ()
    #: run the processes as this user (supervisord must then run as root)
    user: str | None = None
    #: prefix of every program and unit name
    name: str = "towpath"
    #: supervisord: only the program sections, for an ``[include]`` of an existing supervisord
    programs_only: bool = False

    def __post_init__(self) -> None:
        if not self.settings or any(c.isspace() for c in self.settings):
            raise DeployConfigError("settings", f"a module name or path, got {self.settings!r}")
        for field in ("directory", "towpath", "log_dir", "run_dir"):
            value = getattr(self, field)
            if not os.path.isabs(value) or "\n" in value:
                raise DeployConfigError(field, f"must be an absolute path, got {value!r}")
        for field in ("workers", "servers"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DeployConfigError(field, f"must be a whole number >= 1, got {value!r}")
        last_port = self.port + (self.servers - 1 if self.own_port else 0)
        if self.port < 1 or last_port > 65535:
            raise DeployConfigError(
                "port", f"ports {self.port}..{last_port} do not fit in 1..65535"
            )
        if self.bind.startswith("unix:"):
            if self.own_port:
                raise DeployConfigError(
                    "bind", "a unix socket is one shared socket: drop own_port, or bind a host"
                )
            if not os.path.isabs(self.unix_path or ""):
                raise DeployConfigError("bind", f"unix:/absolute/path, got {self.bind!r}")
        elif not self.bind or any(c.isspace() or c in "[]/" for c in self.bind):
            raise DeployConfigError("bind", f"an address or host name, got {self.bind!r}")
        if not math.isfinite(self.graceful_timeout) or self.graceful_timeout <= 0:
            raise DeployConfigError(
                "graceful_timeout", f"must be positive seconds, got {self.graceful_timeout!r}"
            )
        self._check_redis()
        names = [pool.name for pool in self.pools]
        for pool in self.pools:
            pool.check()
            if names.count(pool.name) > 1:
                raise DeployConfigError("pools", f"pool {pool.name!r} is given twice")
        for key, value in self.env:
            if not _ENV_KEY.match(key):
                raise DeployConfigError("env", f"{key!r} is not an environment variable name")
            if key in _OWNED_ENV:
                raise DeployConfigError("env", f"set {key} with {_OWNED_ENV[key]}")
            # one line of a config file each: no line breaks (what else a format cannot
            # carry, its renderer refuses: render.py)
            if any(c in value for c in "\n\r\0"):
                raise DeployConfigError(
                    "env", f"{key}: the value may not hold a line break or a NUL character"
                )
        for field in ("serve_args", "worker_args"):
            if any("\n" in arg for arg in getattr(self, field)):
                raise DeployConfigError(field, "arguments may not hold a newline")
        if self.user is not None and not _USER.match(self.user):
            raise DeployConfigError("user", f"a user name, got {self.user!r}")
        if not _NAME.match(self.name):
            raise DeployConfigError(
                "name", f"lower-case letters, digits, '-' or '_', got {self.name!r}"
            )

    def _check_redis(self) -> None:
        if self.redis_url is None:
            return
        parts = urlsplit(self.redis_url)
        if parts.scheme not in ("redis", "rediss", "unix") or any(
            c.isspace() or c in "\"'\\" for c in self.redis_url
        ):
            raise DeployConfigError(
                "redis_url", f"redis://host:port/db, rediss:// or unix://, got {self.redis_url!r}"
            )
        if self.with_redis and (parts.scheme != "redis" or parts.hostname not in _LOOPBACK):
            raise DeployConfigError(
                "redis_url",
                "with_redis runs Redis on this machine, so the URL must be "
                f"redis://127.0.0.1:PORT/DB, got {self.redis_url!r}",
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise DeployConfigError("redis_url", f"bad port in {self.redis_url!r}") from None

    # -- derived values --------------------------------------------------------------------

    @property
    def unix_path(self) -> str | None:
        return self.bind[len("unix:") :] if self.bind.startswith("unix:") else None

    @property
    def stop_wait_seconds(self) -> int:
        """supervisord's ``stopwaitsecs`` / systemd's ``TimeoutStopSec``: the graceful timeout
        plus :data:`STOP_MARGIN_SECONDS`, so a process still finishing is never SIGKILLed."""
        return math.ceil(self.graceful_timeout) + STOP_MARGIN_SECONDS

    @property
    def effective_redis_url(self) -> str | None:
        if self.redis_url is None and self.with_redis:
            return DEFAULT_REDIS_URL
        return self.redis_url

    @property
    def redis_port(self) -> int:
        url = self.effective_redis_url
        return (urlsplit(url).port if url else None) or 6379

    def environment(self) -> list[tuple[str, str]]:
        """The environment of every process, in order: what the options set, then ``env``
        (which may replace PYTHONPATH)."""
        pairs = {"TOWPATH_SETTINGS": self.settings, "PYTHONPATH": self.directory}
        if self.effective_redis_url is not None:
            pairs["REDIS_URL"] = self.effective_redis_url
        pairs.update(self.env)
        return list(pairs.items())

    def environment_setting(self, key: str) -> str:
        """The field that put ``key`` into :meth:`environment`, to name it in an error."""
        if key in dict(self.env):
            return "env"
        return _ENV_FIELDS.get(key, "env")

    def serve_command(self, listen: list[str]) -> list[str]:
        return [
            self.towpath,
            "serve",
            *listen,
            "--graceful-timeout",
            seconds(self),
            *self.serve_args,
        ]

    def worker_command(self, pool: WorkerPool | None) -> list[str]:
        command = [self.towpath, "runworker", "--graceful-timeout", seconds(self)]
        if pool is not None:
            command += [arg for glob in pool.channels for arg in ("--only-channels", glob)]
        else:
            excluded = [glob for other in self.pools for glob in other.channels]
            command += [arg for glob in excluded for arg in ("--exclude-channels", glob)]
        return command + list(self.worker_args)

    def summary(self, redis: str) -> str:
        servers = f"{self.servers} interface server{'s' * (self.servers > 1)}"
        servers += (
            f" on ports {self.port}-{self.port + self.servers - 1}"
            if self.own_port
            else f" sharing {self._listen_label()}"
        )
        parts = [servers, f"{self.workers} worker{'s' * (self.workers > 1)}"]
        parts += [
            f"{p.processes} {p.name} pool worker{'s' * (p.processes > 1)}" for p in self.pools
        ]
        if self.with_redis:
            parts.append(redis)
        return ", ".join(parts)

    def _listen_label(self) -> str:
        if self.unix_path is not None:
            return self.unix_path
        return f"{self.bind}:{self.port}"


def seconds(config: DeployConfig) -> str:
    """``graceful_timeout`` as written on a command line: ``30``, ``2.5``."""
    return f"{config.graceful_timeout:g}"
