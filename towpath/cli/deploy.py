"""``towpath deploy supervisord`` and ``towpath deploy systemd``: render the process-manager
configuration of a production stack (interface servers, worker pools, optionally Redis) for a
project. The rendering itself is :mod:`towpath.deploy`; docs/deployment.md explains it."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from towpath.cli.base import POSITIVE_INT, POSITIVE_SECONDS, main, startup_failure
from towpath.deploy import (
    DEFAULT_LOG_DIR,
    DEFAULT_RUN_DIR,
    DeployConfig,
    DeployConfigError,
    WorkerPool,
    default_towpath,
    render_supervisord,
    render_systemd,
)
from towpath.deploy.check import RESULT_PREFIX, check_config, check_processes

#: DeployConfig field -> the option that sets it, to name the option in an error
_OPTION_FOR_SETTING = {
    "settings": "--settings",
    "directory": "--directory",
    "towpath": "--towpath",
    "workers": "--workers",
    "servers": "--servers",
    "bind": "--bind",
    "port": "--port",
    "redis_url": "--redis-url",
    "graceful_timeout": "--graceful-timeout",
    "log_dir": "--log-dir",
    "redis_server": "--redis-server",
    "run_dir": "--run-dir",
    "pools": "--extra-worker-pool",
    "env": "--env",
    "serve_args": "--serve-args",
    "worker_args": "--worker-args",
    "user": "--user",
    "name": "--name",
}


@main.group()
def deploy() -> None:
    """Render the configuration that runs a towpath stack in production: interface servers
    sharing one socket, worker pools, optionally Redis (docs/deployment.md)."""


def _common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--settings",
            required=True,
            help="Settings module with CHANNEL_LAYERS (dotted name importable from --directory, "
            "or a .py path); every process gets it as TOWPATH_SETTINGS.",
        ),
        click.option(
            "--directory",
            default=None,
            help="Project directory: working directory and PYTHONPATH of every process. "
            "[default: the current directory]",
        ),
        click.option(
            "--towpath",
            "towpath_path",
            default=None,
            help="The towpath executable to run. [default: the one beside the running Python]",
        ),
        click.option(
            "--python",
            default=None,
            help="Instead of --towpath: a virtualenv's python; its bin/towpath is run.",
        ),
        click.option(
            "--workers", type=POSITIVE_INT, default=2, help="Worker processes of the main pool."
        ),
        click.option("--servers", type=POSITIVE_INT, default=2, help="Interface server processes."),
        click.option(
            "--bind",
            default="127.0.0.1",
            help="Address the servers listen on (IPv4 for supervisord's shared socket), or "
            "unix:/path for a unix socket.",
        ),
        click.option(
            "--port",
            type=click.IntRange(1, 65535),
            default=8000,
            help="Port of the shared socket; with --own-port, the first server's port.",
        ),
        click.option(
            "--own-port",
            is_flag=True,
            default=False,
            help="Each server on its own port (--port, --port+1, ...) behind a proxy, instead "
            "of one socket shared by all.",
        ),
        click.option(
            "--with-redis",
            is_flag=True,
            default=False,
            help="One-box install: run Redis too (supervisord: a program; systemd: depend on "
            "redis-server.service).",
        ),
        click.option(
            "--redis-url",
            default=None,
            help="REDIS_URL given to every process, for the settings module to read. "
            "[default with --with-redis: redis://127.0.0.1:6379/0]",
        ),
        click.option(
            "--graceful-timeout",
            type=POSITIVE_SECONDS,
            default=30.0,
            help="Seconds servers and workers get to finish in-flight work on SIGTERM; the "
            "process manager's stop timeout is 10 s longer. Keep it above the slowest consumer.",
        ),
        click.option(
            "--extra-worker-pool",
            "pools",
            multiple=True,
            metavar="NAME=CHANNELS:N",
            help="A pool of N workers for some channels (comma-separated globs), e.g. "
            "thumbnails=thumbnail:2; the main pool excludes them (repeatable).",
        ),
        click.option(
            "--env",
            "env",
            multiple=True,
            metavar="KEY=VALUE",
            help="Extra environment variable of every process (repeatable); a bare KEY copies "
            "its value from this environment. Written into the file as given.",
        ),
        click.option(
            "--serve-args",
            multiple=True,
            help="Extra towpath serve arguments, as one shell-quoted string (repeatable), e.g. "
            "'--proxy-headers --heartbeat-timeout 3'.",
        ),
        click.option(
            "--worker-args",
            multiple=True,
            help="Extra towpath runworker arguments, as one shell-quoted string (repeatable).",
        ),
        click.option("--user", default=None, help="Run the processes as this user."),
        click.option("--name", default="towpath", help="Prefix of the program or unit names."),
        click.option(
            "--no-check",
            is_flag=True,
            default=False,
            help="Write the file without first loading the settings, layers and routing the "
            "way its processes will (in --directory, with their environment, nothing "
            "connected); for a project that is not on this machine.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _build(
    *,
    settings: str,
    directory: str | None,
    towpath_path: str | None,
    python: str | None,
    pools: tuple[str, ...],
    env: tuple[str, ...],
    serve_args: tuple[str, ...],
    worker_args: tuple[str, ...],
    **options: Any,
) -> DeployConfig:
    """The DeployConfig for the options; click.UsageError (exit 2) naming the bad option."""
    if towpath_path is not None and python is not None:
        raise click.UsageError("give --towpath or --python, not both")
    if python is not None:
        towpath_path = str(Path(os.path.abspath(python)).with_name("towpath"))
    for field in ("log_dir", "run_dir"):
        if options.get(field) is not None:
            options[field] = os.path.abspath(options[field])
    try:
        return DeployConfig(
            settings=settings,
            directory=os.path.abspath(directory or os.getcwd()),
            towpath=os.path.abspath(towpath_path) if towpath_path else default_towpath(),
            pools=tuple(WorkerPool.parse(pool) for pool in pools),
            env=tuple(_env_pair(pair) for pair in env),
            serve_args=_split("--serve-args", serve_args),
            worker_args=_split("--worker-args", worker_args),
            **options,
        )
    except DeployConfigError as exc:
        raise _usage_error(exc) from None


def _usage_error(exc: DeployConfigError) -> click.UsageError:
    option = _OPTION_FOR_SETTING.get(exc.setting, exc.setting)
    if exc.setting == "redis_url" and "with_redis" in exc.message:
        return click.UsageError(f"--redis-url: {exc.message.replace('with_redis', '--with-redis')}")
    message = exc.message.replace("own_port", "--own-port")
    return click.UsageError(f"{option}: {message}")


def _env_pair(text: str) -> tuple[str, str]:
    """``KEY=VALUE``, or ``KEY`` with its value in this environment (as ``docker run -e``)."""
    key, equals, value = text.partition("=")
    if equals:
        return key, value
    if key not in os.environ:
        raise click.UsageError(
            f"--env: {key!r} is not set in this environment; give KEY=VALUE, or export {key}"
        )
    return key, os.environ[key]


def _check(config: DeployConfig) -> None:
    """SystemExit(3) saying why, when a process of ``config`` would not start."""
    problem = check_config(config)
    if problem is not None:
        raise startup_failure(
            f"{problem}; checked as the rendered processes would start, in {config.directory} "
            "with their environment. Nothing was written: fix it, or add --no-check to write "
            "the file anyway."
        )


def _split(option: str, texts: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(arg for text in texts for arg in shlex.split(text))
    except ValueError as exc:
        raise click.UsageError(f"{option}: {exc} in {texts!r}") from None


def _write(output: str | None, text: str) -> None:
    if output is None or output == "-":
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.UsageError(f"-o/--output: cannot write {output}: {exc}") from None
    click.echo(f"wrote {output}", err=True)


@deploy.command()
@_common_options
@click.option(
    "--redis-server",
    default="redis-server",
    help="The redis-server executable of --with-redis (searched on PATH).",
)
@click.option(
    "--log-dir",
    default=DEFAULT_LOG_DIR,
    help="Directory of every process's log and supervisord's own.",
)
@click.option(
    "--run-dir",
    default=DEFAULT_RUN_DIR,
    help="Directory of supervisord's pid file and control socket.",
)
@click.option(
    "--programs-only",
    is_flag=True,
    default=False,
    help="Only the program sections, to [include] from an existing supervisord.conf.",
)
@click.option("-o", "--output", default=None, help="Write the file here. [default: stdout]")
def supervisord(output: str | None, no_check: bool, **options: Any) -> None:
    """Render a supervisord configuration: the interface servers as an fcgi-program sharing
    one socket (or each on its own port), the workers as numprocs programs that stop
    gracefully, optionally Redis.

    \b
    towpath deploy supervisord --settings mysite.settings --workers 4 -o supervisord.conf
    supervisord -c supervisord.conf
    """
    config = _build(**options)
    try:
        text = render_supervisord(config)
    except DeployConfigError as exc:
        raise _usage_error(exc) from None
    if not no_check:
        _check(config)
    _write(output, text)


@deploy.command()
@_common_options
@click.option(
    "-o",
    "--output",
    default=None,
    help="Directory to write the unit files into. [default: all of them to stdout]",
)
def systemd(output: str | None, no_check: bool, **options: Any) -> None:
    """Render systemd units: a socket the interface servers share (socket activation, fd 3),
    template services for the servers and each worker pool, and a target that starts them.

    \b
    towpath deploy systemd --settings mysite.settings --workers 4 -o /etc/systemd/system
    systemctl daemon-reload && systemctl enable --now towpath.target
    """
    config = _build(**options)
    units = render_systemd(config)
    if not no_check:
        _check(config)
    if output is None or output == "-":
        click.echo("\n".join(f"### {name}\n{text}" for name, text in units.items()), nl=False)
        return
    directory = Path(output)
    if not directory.is_dir():
        raise click.UsageError(f"-o/--output: {output} is not a directory")
    for name, text in units.items():
        _write(str(directory / name), text)


@deploy.command("check-processes", hidden=True)
@click.argument("commands")
def check_processes_command(commands: str) -> None:
    """Internal: run by `towpath deploy` in the rendered directory and environment, loads what
    each process of COMMANDS (JSON: [what it is, its towpath arguments] pairs) would load and
    prints the first problem (towpath/deploy/check.py)."""
    click.echo(RESULT_PREFIX + json.dumps(check_processes(json.loads(commands), main)))
