"""Would the rendered processes start? ``towpath deploy`` asks before it writes a file.

:func:`check_config` runs the ``towpath`` the file will run (``DeployConfig.towpath``) in the
project directory, with the environment the file gives every process, as
``towpath deploy check-processes COMMANDS``. That child (:func:`check_processes`) parses each
process's command line with the real ``serve`` / ``runworker`` commands (so their
``TOWPATH_*`` variables apply) and loads what each would load before serving: the settings
module, its ``CHANNEL_LAYERS``, the layer alias, the routing or ``--asgi`` app, the channels a
pool listens on. Nothing connects (Redis need not run yet) and nothing listens. A settings
module that fails (a typo in the path, ``os.environ["REDIS_URL"]`` with no ``--redis-url``)
is found here, not in a crash loop under the process manager.
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from towpath.deploy.config import DeployConfig

__all__ = [
    "CHECK_COMMAND",
    "CHECK_TIMEOUT_SECONDS",
    "RESULT_PREFIX",
    "check_config",
    "check_processes",
    "process_commands",
]

#: the hidden command of the rendered ``towpath`` that runs :func:`check_processes`
CHECK_COMMAND = ("deploy", "check-processes")
#: how long a settings module may take to import before the check gives up
CHECK_TIMEOUT_SECONDS = 60.0
#: the child's last line of output: this, then the JSON result
RESULT_PREFIX = "towpath-deploy-check: "
#: what the rendered file sets, or should: not taken from the shell that renders it
_FILE_SETS = ("REDIS_URL", "PYTHONPATH")


def process_commands(config: DeployConfig) -> list[tuple[str, list[str]]]:
    """Each kind of process the file runs, as (what it is, its ``towpath`` arguments)."""
    # how the servers listen does not matter here: the check binds nothing
    commands = [("the interface servers", config.serve_command(["--fd", "0"])[1:])]
    commands.append(("the workers", config.worker_command(None)[1:]))
    for pool in config.pools:
        commands.append((f"the {pool.name} pool's workers", config.worker_command(pool)[1:]))
    return commands


def check_config(config: DeployConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """None when every process of ``config`` would start, else why not. ``environ`` (default
    ``os.environ``) stands for what the process manager passes on, less what the file itself
    sets (``TOWPATH_*`` variables, ``REDIS_URL``: a file must not work only when the shell
    that starts supervisord happens to have them); the file's environment is added."""
    if not os.path.isdir(config.directory):
        return f"--directory: {config.directory} is not a directory"
    if not (os.path.isfile(config.towpath) and os.access(config.towpath, os.X_OK)):
        return (
            f"--towpath: {config.towpath} is not an executable file; install towpath there, "
            "or give --towpath or --python"
        )
    base = os.environ if environ is None else environ
    env = {
        key: value
        for key, value in base.items()
        if not key.startswith("TOWPATH_") and key not in _FILE_SETS
    }
    env.update(config.environment())
    commands = process_commands(config)
    argv = [config.towpath, *CHECK_COMMAND, json.dumps(commands)]
    try:
        done = subprocess.run(
            argv,
            cwd=config.directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return (
            f"loading the settings and routing took over {CHECK_TIMEOUT_SECONDS:g} s "
            "(does importing them wait for a service?)"
        )
    except OSError as exc:
        return f"--towpath: cannot run {config.towpath}: {exc}"
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            problem = json.loads(line[len(RESULT_PREFIX) :])
            return None if problem is None else str(problem)
    if "No such command" in done.stderr:
        return (
            f"--towpath: {config.towpath} has no `towpath deploy check-processes` (an older "
            "towpath?); use this one, or --no-check"
        )
    output = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
    return (
        f"`{config.towpath} {' '.join(CHECK_COMMAND)}` exited with status {done.returncode} "
        f"while loading the settings and routing: {' / '.join(output) or 'no output'}"
    )


# -- in the child: the rendered towpath, directory and environment ------------------------------


def check_processes(commands: Sequence[tuple[str, Sequence[str]]], main: click.Group) -> str | None:
    """None when each of ``commands`` (what it is, its ``towpath`` arguments) would start,
    else why the first one would not. ``main`` is the ``towpath`` command group (passed in:
    the CLI imports this module, so it does not import the CLI back)."""
    for label, args in commands:
        problem = _check_process(list(args), main)
        if problem is not None:
            return f"{label} would not start (towpath {args[0]}): {problem}"
    return None


def _check_process(args: list[str], main: click.Group) -> str | None:
    parent = click.Context(main, info_name="towpath", **main.context_settings)
    command = main.get_command(parent, args[0]) if args else None
    if command is None:
        return f"no towpath command {args[:1]!r}"
    try:
        params = command.make_context(args[0], args[1:], parent=parent).params
        if args[0] == "serve":
            _load_serve(params)
        else:
            _load_worker(params)
    except click.ClickException as exc:
        return exc.format_message()
    except SystemExit as exc:  # a settings module that exits
        return f"SystemExit({exc.code!r}) while loading{_where(exc)}"
    except Exception as exc:
        return _describe(exc)
    return None


def _load_serve(params: Mapping[str, Any]) -> None:
    from towpath.config import ImportFromStringError, import_from_string
    from towpath.interface.forwarding import forwarding_app_from_settings

    if params.get("app") is not None:
        app = import_from_string(params["app"])
        if not callable(app):
            raise ImportFromStringError(f"{params['app']!r} is not an ASGI app: {app!r:.60}")
        return
    forwarding_app_from_settings(params["settings"], params["layer"])


def _load_worker(params: Mapping[str, Any]) -> None:
    from towpath.config import configure_layers, load_settings
    from towpath.layers.base import InvalidChannelLayerError
    from towpath.layers.memory import InMemoryChannelLayer
    from towpath.worker.config import WorkerConfig
    from towpath.worker.run import make_worker

    alias = params["layer"]
    loaded = load_settings(params["settings"], embedded=True)
    routing = params["routing"] or loaded.layer(alias).routing
    layer = configure_layers(loaded)[alias]
    if isinstance(layer, InMemoryChannelLayer):
        raise InvalidChannelLayerError(
            f"layer {alias!r} is an InMemoryChannelLayer, which cannot cross processes: "
            "configure Redis (or IPC on one machine)"
        )
    if params["asgi_path"] is None and routing is None:
        raise InvalidChannelLayerError(
            "no routing: set ROUTING in the layer's CHANNEL_LAYERS entry, or pass "
            "--worker-args '--routing module:attr' or '--asgi module:app'"
        )
    config = WorkerConfig(
        layer_alias=alias,
        only_channels=params["only_channels"],
        exclude_channels=params["exclude_channels"],
    )
    make_worker(layer, config, None if params["asgi_path"] else routing, params["asgi_path"])


def _describe(exc: BaseException) -> str:
    """An exception as one line: towpath's start-up errors as every command prints them;
    anything else with where it was raised."""
    from towpath.cli.base import STARTUP_ERRORS, describe_startup_error
    from towpath.worker.channels import WorkerConfigError

    if isinstance(exc, (*STARTUP_ERRORS, WorkerConfigError)):
        return describe_startup_error(exc)
    return f"{type(exc).__name__}: {exc}{_where(exc)}"


def _where(exc: BaseException) -> str:
    """`` (at FILE, line N)``: the last frame of ``exc`` outside the standard library and
    towpath, in the project; empty without one."""
    skip = (sysconfig.get_paths()["stdlib"], str(Path(__file__).resolve().parents[1]), "<")
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(skip)
    ]
    return f" (at {frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
