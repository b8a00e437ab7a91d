"""Fill in the templates (package data under ``templates/``) for a :class:`DeployConfig`.

:class:`string.Template` does the filling: its ``$name`` leaves supervisord's own
``%(program_name)s`` expansions alone. A template line holding nothing but a placeholder that
is empty disappears, so optional settings (``user=``) leave no blank lines; a comment a long
value pushed past 100 characters is wrapped. Values are escaped for where they land: ``%``
doubled for supervisord and systemd, ``$`` doubled on systemd command lines, shell quoting.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from importlib import resources
from string import Template

from towpath.deploy.config import DeployConfig, DeployConfigError, seconds

__all__ = ["command_line", "render_supervisord", "render_systemd"]

_PLACEHOLDER_LINE = re.compile(r"^\$\{?(\w+)\}?$")
#: longest line of a rendered comment
_WIDTH = 100


# -- the command that renders a config -------------------------------------------------------


def command_line(config: DeployConfig, target: str) -> str:
    """The ``towpath deploy TARGET ...`` command that renders ``config`` (options at their
    defaults left out), as written at the top of every rendered file."""
    return " ".join(_command_pieces(config, target))


def _command_pieces(config: DeployConfig, target: str) -> list[str]:
    """The words of :func:`command_line`, shell-quoted, each option with its value."""
    defaults = DeployConfig(settings="x", directory="/", towpath="/")
    options: list[tuple[str, str | None]] = [
        ("--settings", config.settings),
        ("--directory", config.directory),
        ("--towpath", config.towpath),
    ]
    for field, option in (
        ("user", "--user"),
        ("name", "--name"),
        ("servers", "--servers"),
        ("workers", "--workers"),
        ("bind", "--bind"),
        ("port", "--port"),
    ):
        value = getattr(config, field)
        if value != getattr(defaults, field):
            options.append((option, str(value)))
    if config.own_port:
        options.append(("--own-port", None))
    if config.graceful_timeout != defaults.graceful_timeout:
        options.append(("--graceful-timeout", seconds(config)))
    options += [("--extra-worker-pool", pool.spec) for pool in config.pools]
    if config.with_redis:
        options.append(("--with-redis", None))
    if config.redis_url is not None:
        options.append(("--redis-url", config.redis_url))
    if target == "supervisord":
        if config.redis_server != defaults.redis_server and config.with_redis:
            options.append(("--redis-server", config.redis_server))
        if config.log_dir != defaults.log_dir:
            options.append(("--log-dir", config.log_dir))
        if config.run_dir != defaults.run_dir and not config.programs_only:
            options.append(("--run-dir", config.run_dir))
        if config.programs_only:
            options.append(("--programs-only", None))
    options += [("--env", f"{key}={value}") for key, value in config.env]
    if config.serve_args:
        options.append(("--serve-args", shlex.join(config.serve_args)))
    if config.worker_args:
        options.append(("--worker-args", shlex.join(config.worker_args)))
    return [f"towpath deploy {target}"] + [
        option if value is None else f"{option} {shlex.quote(value)}" for option, value in options
    ]


# -- templates ---------------------------------------------------------------------------------


def _template(name: str) -> str:
    return resources.files("towpath.deploy").joinpath("templates", name).read_text(encoding="utf-8")


def _fill(name: str, **values: str) -> str:
    """Template ``name`` with ``values``. A line that is only an empty placeholder is dropped;
    a comment line that a value made longer than :data:`_WIDTH` is wrapped."""
    lines = []
    for line in _template(name).splitlines():
        placeholder = _PLACEHOLDER_LINE.match(line)
        if placeholder and not values[placeholder.group(1)]:
            continue
        for filled in Template(line).substitute(values).split("\n"):
            if len(filled) > _WIDTH and filled[:2] in ("; ", "# "):
                lines += [filled[:2] + part for part in textwrap.wrap(filled[2:], _WIDTH - 2)]
            else:
                lines.append(filled)
    return "\n".join(lines) + "\n"


def _wrapped_command(config: DeployConfig, target: str, comment: str) -> str:
    """:func:`command_line` as comment lines of at most :data:`_WIDTH` characters, continued
    with backslashes, each option beside its value."""
    lines = [""]
    for piece in _command_pieces(config, target):
        if lines[-1] and len(comment) + 5 + len(lines[-1]) + 1 + len(piece) + 2 > _WIDTH:
            lines.append("")
        lines[-1] += (" " if lines[-1] else "") + piece
    return f"{comment}   " + f" \\\n{comment}     ".join(lines)


# -- supervisord -------------------------------------------------------------------------------


def _sv(args: list[str]) -> str:
    """A supervisord ``command=``: shell-quoted (supervisord splits it with shlex) and with
    ``%`` doubled (supervisord expands ``%(name)s`` in it)."""
    return shlex.join(args).replace("%", "%%")


#: a blank then ``;`` or ``#`` starts an inline comment in supervisord's config parser
_SV_INLINE_COMMENT = re.compile(r"\s[;#]")


def _sv_value(value: str) -> str | None:
    """One ``environment=`` value as supervisord reads it back, or None when it cannot.

    supervisord splits the line with :class:`shlex.shlex` in non-POSIX mode (a quoted value
    runs to the next quote of its kind, backslashes are literal), then strips every quote
    character from both ends of each value, and its config parser cuts a line at an inline
    comment. So a value is double-quoted, or single-quoted when it holds a double quote; one
    holding both kinds, starting or ending with a quote, or holding a blank followed by ``;``
    or ``#`` cannot be written. ``%`` is doubled (supervisord expands ``%(name)s``)."""
    if value[:1] in ("'", '"') or value[-1:] in ("'", '"') or _SV_INLINE_COMMENT.search(value):
        return None
    quote = "'" if '"' in value else '"'
    if quote in value:
        return None
    return f"{quote}{value}{quote}".replace("%", "%%")


def _sv_environment(config: DeployConfig) -> str:
    pairs = []
    for key, value in config.environment():
        quoted = _sv_value(value)
        if quoted is None:
            raise DeployConfigError(
                config.environment_setting(key),
                f"{key}={value!r} cannot be written in supervisord's environment=: a value may "
                "not start or end with a quote, hold both a single and a double quote, or "
                "hold a blank followed by ';' or '#' (set it in the settings module instead)",
            )
        pairs.append(f"{key}={quoted}")
    return ",".join(pairs)


def _sv_check_comments(config: DeployConfig) -> None:
    """DeployConfigError naming the field when a value would hold a blank followed by ``;``
    or ``#``: supervisord's config parser would cut the line there (no quoting prevents it)."""
    values = [
        ("towpath", config.towpath),
        ("directory", config.directory),
        ("log_dir", config.log_dir),
        ("run_dir", config.run_dir),
        ("bind", config.bind),
        ("redis_server", config.redis_server),
        *(("serve_args", arg) for arg in config.serve_args),
        *(("worker_args", arg) for arg in config.worker_args),
    ]
    for field, value in values:
        if _SV_INLINE_COMMENT.search(value):
            raise DeployConfigError(
                field,
                f"{value!r} holds a blank followed by ';' or '#', where supervisord's config "
                "parser would cut the line (an inline comment)",
            )


def render_supervisord(config: DeployConfig) -> str:
    """The supervisord configuration file for ``config``."""
    _sv_check_comments(config)
    name = config.name
    log_dir = config.log_dir.replace("%", "%%")
    user = f"user={config.user}" if config.user else ""
    common = {
        "directory": config.directory.replace("%", "%%"),
        "environment": _sv_environment(config),
        "user": user,
        "log_dir": log_dir,
        "graceful": seconds(config),
        "stopwaitsecs": str(config.stop_wait_seconds),
    }
    if config.programs_only:
        usage = "; Only program sections: include this file from your supervisord.conf ([include])."
    else:
        usage = (
            "; Start: supervisord -c THIS_FILE; then supervisorctl -c THIS_FILE status.\n"
            f"; Create {config.log_dir} and {config.run_dir} first, writable by supervisord."
        )
    parts = [
        _fill(
            "supervisord/header.conf",
            summary=config.summary("Redis"),
            command=_wrapped_command(config, "supervisord", ";"),
            usage=usage,
        )
    ]
    if not config.programs_only:
        parts.append(
            _fill(
                "supervisord/supervisord.conf",
                log_dir=log_dir,
                run_dir=config.run_dir.replace("%", "%%"),
            )
        )
    if config.with_redis:
        redis = [config.redis_server, "--port", str(config.redis_port), "--bind", "127.0.0.1"]
        redis += ["--save", "", "--appendonly", "no"]
        parts.append(
            _fill(
                "supervisord/redis.conf",
                program=f"{name}-redis",
                command=_sv(redis),
                user=user,
                log_dir=log_dir,
            )
        )
    if config.own_port:
        command = _sv(config.serve_command(["--host", config.bind]))
        parts.append(
            _fill(
                "supervisord/serve-port.conf",
                program=f"{name}-serve",
                command=command + " --port %(process_num)s",
                servers=str(config.servers),
                port=str(config.port),
                last_port=str(config.port + config.servers - 1),
                **common,
            )
        )
    else:
        if ":" in config.bind and config.unix_path is None:
            raise DeployConfigError(
                "bind",
                "supervisord's fcgi-program socket is IPv4 or unix only: bind an IPv4 "
                "address, a unix:/path, or use own_port",
            )
        if config.unix_path is not None:
            socket = f"unix://{config.unix_path}"
            options = "socket_mode=0660" + (f"\nsocket_owner={config.user}" if config.user else "")
        else:
            socket, options = f"tcp://{config.bind}:{config.port}", ""
        parts.append(
            _fill(
                "supervisord/serve-fcgi.conf",
                program=f"{name}-serve",
                socket=socket.replace("%", "%%"),
                socket_options=options,
                command=_sv(config.serve_command(["--fd", "0"])),
                servers=str(config.servers),
                **common,
            )
        )
    for pool in (None, *config.pools):
        if pool is None:
            description = (
                "The workers: run the consumers of every routed channel"
                + (" not served by a pool below" if config.pools else "")
                + "."
            )
        else:
            description = (
                f"Worker pool {pool.name!r}: only {', '.join(pool.channels)}, so slow jobs "
                "there never hold up requests; the main workers exclude these channels."
            )
        parts.append(
            _fill(
                "supervisord/worker.conf",
                program=f"{name}-{pool.name if pool else 'worker'}",
                description=description,
                command=_sv(config.worker_command(pool)),
                workers=str(pool.processes if pool else config.workers),
                **common,
            )
        )
    return "".join(parts)


# -- systemd -----------------------------------------------------------------------------------


def _sd_quote(arg: str, *, dollar: bool = True) -> str:
    """One word of a systemd command line or assignment: ``%`` doubled (specifiers), ``$``
    doubled in commands (variable expansion), quoted when it holds spaces or quotes."""
    arg = arg.replace("%", "%%")
    if dollar:
        arg = arg.replace("$", "$$")
    if arg and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sd_command(args: list[str]) -> str:
    return " ".join(_sd_quote(arg) for arg in args)


def render_systemd(config: DeployConfig) -> dict[str, str]:
    """The systemd units for ``config``: file name -> contents. Workers and servers are
    template units (``name-worker@.service``) instantiated by ``name.target``."""
    name = config.name
    target = f"{name}.target"
    socket_unit = f"{name}-serve.socket"
    header = _fill(
        "systemd/header",
        summary=config.summary("the machine's redis-server.service"),
        command=_wrapped_command(config, "systemd", "#"),
    )
    after = ["network.target"]
    if config.with_redis:
        after.append("redis-server.service")
    common = {
        "directory": _sd_quote(config.directory, dollar=False),
        "environment": "\n".join(
            "Environment=" + _sd_quote(f"{key}={value}", dollar=False)
            for key, value in config.environment()
        ),
        "user": f"User={config.user}" if config.user else "",
        "target": target,
        "graceful": seconds(config),
        "stopwaitsecs": str(config.stop_wait_seconds),
    }
    units: dict[str, str] = {}
    wants: list[list[str]] = []
    if config.own_port:
        instances = [str(config.port + n) for n in range(config.servers)]
        serve_command = _sd_command(config.serve_command(["--host", config.bind])) + " --port %i"
        requires, sockets = "", ""
        serve_after = after
    else:
        instances = [str(n) for n in range(1, config.servers + 1)]
        if config.unix_path is not None:
            listen = config.unix_path
            socket_options = "SocketMode=0660" + (
                f"\nSocketUser={config.user}" if config.user else ""
            )
        else:
            host = f"[{config.bind}]" if ":" in config.bind else config.bind
            listen, socket_options = f"{host}:{config.port}", ""
        units[socket_unit] = header + _fill(
            "systemd/serve.socket",
            serve_unit=f"{name}-serve@N.service",
            listen=listen,
            socket_options=socket_options,
            first_serve=f"{name}-serve@{instances[0]}.service",
        )
        wants.append([socket_unit])
        serve_command = _sd_command(config.serve_command(["--fd", "3"]))
        requires, sockets = f"Requires={socket_unit}", f"Sockets={socket_unit}"
        serve_after = [*after, socket_unit]
    units[f"{name}-serve@.service"] = header + _fill(
        "systemd/serve@.service",
        requires=requires,
        after=" ".join(serve_after),
        command=serve_command,
        sockets=sockets,
        **common,
    )
    wants.append([f"{name}-serve@{instance}.service" for instance in instances])
    for pool in (None, *config.pools):
        unit = f"{name}-{pool.name if pool else 'worker'}"
        if pool is None:
            description = "Worker %i: runs the consumers of every routed channel" + (
                " not served by another pool." if config.pools else "."
            )
            title = "towpath worker"
        else:
            description = (
                f"Worker pool {pool.name!r}, process %i: only {', '.join(pool.channels)}; "
                "the main workers exclude these channels."
            )
            title = f"towpath {pool.name} worker"
        units[f"{unit}@.service"] = header + _fill(
            "systemd/worker@.service",
            description=description,
            title=title,
            after=" ".join(after),
            command=_sd_command(config.worker_command(pool)),
            **common,
        )
        count = pool.processes if pool else config.workers
        wants.append([f"{unit}@{n}.service" for n in range(1, count + 1)])
    if config.with_redis:
        wants.append(["redis-server.service"])
    units[target] = header + _fill(
        "systemd/stack.target",
        target=target,
        summary=config.summary("Redis"),
        wants="\n".join("Wants=" + " ".join(group) for group in wants),
    )
    return units
