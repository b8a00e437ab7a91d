"""Write docs/cli.md, the reference of every ``towpath`` command and option, from the click
commands themselves, so the page says what ``--help`` says and cannot drift from it.

    .venv/bin/python scripts/cli_reference.py           # rewrite docs/cli.md
    .venv/bin/python scripts/cli_reference.py --check   # exit 1 when docs/cli.md is stale

Every module under ``towpath/cli/`` is imported first, so a command added in a new module
(``towpath deploy``) is listed as soon as that module exists. ``tests/docs/test_docs.py`` fails when
the committed page differs from what this script renders.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import pkgutil
import re
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "cli.md"

#: command path -> the page that explains it in depth
SEE_ALSO = {
    "towpath check": "[layers.md](layers.md#registry-and-settings)",
    "towpath serve": "[server.md](server.md), [protocol.md](protocol.md) (decoupled mode)",
    "towpath runworker": "[worker.md](worker.md)",
    "towpath runserver": "[worker.md](worker.md#towpath-runserver)",
    "towpath deploy": "[deployment.md](deployment.md)",
}

#: what an option without ``help=`` means, until the option gets one (``main`` names them)
FALLBACK_HELP = {
    "max_header_bytes": "Largest request head in bytes (431 past it).",
    "keep_alive_timeout": "Seconds an idle keep-alive connection stays open.",
    "lifespan": "ASGI lifespan in direct mode: auto (skipped for an app that raises on the "
    "lifespan scope), on (the app must support it), off.",
    "log_level": "Log level; logs go to stderr.",
}

_TRAILING_DEFAULT = re.compile(r"\s*\[default: ([^\]]*)\]\s*$")


def load_cli() -> click.Group:
    """The ``towpath`` group with every command module under ``towpath/cli/`` imported."""
    import towpath.cli

    for module in pkgutil.iter_modules(towpath.cli.__path__):
        importlib.import_module(f"towpath.cli.{module.name}")
    return towpath.cli.main


def _portable(text: str) -> str:
    """A default as it reads on any machine: no interpreter path, home or working directory."""
    replacements = [
        (sys.executable, "the running Python"),
        (str(Path(sys.executable).parent), "the running Python's bin directory"),
        (os.getcwd(), "the current directory"),
        (str(Path.home()), "~"),
    ]
    for value, label in replacements:
        if value and value in text:
            text = text.replace(value, label)
    return text


def _cell(text: str) -> str:
    """Table cell text: one line, pipes escaped (GitHub needs that inside code spans too)."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{_cell(text)}`" if text else ""


def _help_text(command: click.Command) -> str:
    """The command's docstring as paragraphs, without click's ``\\b`` markers."""
    text = inspect.cleandoc(command.help or "")
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    out = []
    for paragraph in paragraphs:
        if paragraph.startswith("\b"):
            out.append("```\n" + paragraph.lstrip("\b").strip("\n") + "\n```")
        else:
            out.append(" ".join(paragraph.split()))
    return "\n\n".join(out)


def _envvar(param: click.Parameter, ctx: click.Context) -> str:
    envvar = param.envvar
    if (
        not envvar
        and isinstance(param, click.Option)
        and param.allow_from_autoenv
        and ctx.auto_envvar_prefix is not None
        and param.name
    ):
        envvar = f"{ctx.auto_envvar_prefix}_{param.name.upper()}"
    if isinstance(envvar, str):
        return _code(envvar)
    return ", ".join(_code(name) for name in envvar or ())


def _option_row(param: click.Option, ctx: click.Context) -> list[str]:
    record = param.get_help_record(ctx)
    names = record[0] if record else ", ".join(param.opts)
    extra = param.get_help_extra(ctx)
    help_text = " ".join((param.help or FALLBACK_HELP.get(param.name or "", "")).split())
    default = extra.get("default", "")
    found = _TRAILING_DEFAULT.search(help_text)
    if found:
        help_text = help_text[: found.start()]
        default = default or found.group(1)
    notes = []
    if extra.get("range"):
        notes.append(f"Range: `{extra['range']}`.")
    if param.multiple and "repeatable" not in help_text.lower():
        notes.append("Repeatable.")
    if extra.get("required"):
        notes.append("Required.")
    meaning = " ".join(part for part in [help_text, *notes] if part)
    return [_code(names), _code(_portable(default)), _envvar(param, ctx), _cell(meaning)]


def _argument_row(param: click.Argument, ctx: click.Context) -> list[str]:
    name = param.make_metavar(ctx)
    meaning = "Argument" + ("" if param.required else ", optional") + "; see the description."
    if param.nargs == -1:
        meaning = "Arguments (any number); see the description."
    return [_code(name), "", _envvar(param, ctx), meaning]


def _table(command: click.Command, ctx: click.Context) -> list[str]:
    rows = []
    help_option = command.get_help_option(ctx)
    for param in command.get_params(ctx):
        if param is help_option:
            continue
        if isinstance(param, click.Option):
            if param.hidden:
                continue
            rows.append(_option_row(param, ctx))
        elif isinstance(param, click.Argument):
            rows.append(_argument_row(param, ctx))
    if not rows:
        return []
    lines = ["| option | default | environment | meaning |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", path.lower()).replace(" ", "-")


def _commands(group: click.Group, ctx: click.Context) -> list[tuple[str, click.Command]]:
    return [
        (name, command)
        for name, command in sorted(group.commands.items())
        if not getattr(command, "hidden", False)
    ]


def _section(command: click.Command, ctx: click.Context, level: int) -> list[str]:
    path = ctx.command_path
    usage = " ".join([path, *command.collect_usage_pieces(ctx)])
    lines = [f"{'#' * level} `{path}`", "", "```", usage, "```", ""]
    description = _help_text(command)
    if description:
        lines += [description, ""]
    if path in SEE_ALSO:
        lines += [f"More: {SEE_ALSO[path]}.", ""]
    table = _table(command, ctx)
    if table:
        lines += [*table, ""]
    if isinstance(command, click.Group):
        for name, sub in _commands(command, ctx):
            child = click.Context(sub, info_name=name, parent=ctx)
            lines += _section(sub, child, level + 1)
    return lines


def _contents(group: click.Group, ctx: click.Context, depth: int = 0) -> list[str]:
    lines = []
    for name, command in _commands(group, ctx):
        child = click.Context(command, info_name=name, parent=ctx)
        summary = command.get_short_help_str(limit=200)
        link = f"[`{child.command_path}`](#{_anchor(child.command_path)})"
        lines.append(f"{'  ' * depth}- {link}: {summary}")
        if isinstance(command, click.Group):
            lines += _contents(command, child, depth + 1)
    return lines


def _options(group: click.Group) -> list[tuple[str, click.Option]]:
    """(command path, option) for every option of every command."""
    found = []
    ctx = click.Context(group, info_name="towpath", **group.context_settings)

    def walk(command: click.Command, ctx: click.Context) -> None:
        found.extend(
            (ctx.command_path, p)
            for p in command.get_params(ctx)
            if isinstance(p, click.Option) and p is not command.get_help_option(ctx)
        )
        if isinstance(command, click.Group):
            for name, sub in _commands(command, ctx):
                walk(sub, click.Context(sub, info_name=name, parent=ctx))

    walk(group, ctx)
    return found


def render() -> str:
    """docs/cli.md as it should read for the commands that exist now."""
    main = load_cli()
    from towpath.cli import EXIT_STARTUP_FAILURE

    ctx = click.Context(main, info_name="towpath", **main.context_settings)
    lines = [
        "# Command-line reference",
        "",
        "<!-- Generated by scripts/cli_reference.py from the click commands: do not edit. -->",
        "",
        "This page is generated from the `towpath` commands themselves; `towpath COMMAND "
        "--help` prints the same options. After changing an option, run "
        "`.venv/bin/python scripts/cli_reference.py` to rewrite it (`tests/docs/test_docs.py` "
        "fails while it is out of date).",
        "",
        "- Every option can also be set through the environment variable in its row, which "
        "suits supervisord `environment=` lines and systemd `Environment=`. A command-line "
        "option wins over its variable. A repeatable option takes several values from its "
        "variable separated by spaces (`TOWPATH_ONLY_CHANNELS='http.* websocket.*'`); a flag "
        "takes `true`/`false` (`1`/`0`).",
        f"- Exit status: 0 after a clean stop (SIGTERM or SIGINT), 1 for a crash or a failed "
        f"`towpath check`, 2 for a usage error (a bad option or value, named in the message), "
        f"{EXIT_STARTUP_FAILURE} when the process cannot start (settings, routing or app that "
        "does not load, an address in use, a lifespan startup that failed), so a process "
        'manager can tell "will never start" from "fell over". Every command says why in one '
        "`Error: ...` line on stderr, with no traceback; code that raises while it is imported "
        "is named with the file and line in your code and what was being loaded: `Error: "
        "NameError in /srv/mysite/routing.py, line 12: name 'x' is not defined (loading "
        "ROUTING 'mysite.routing:routes')`.",
        "- Every command takes `--help`.",
        "",
        "Commands:",
        "",
        *_contents(main, ctx),
        "",
    ]
    lines += _section(main, ctx, 2)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write")
    args = parser.parse_args(argv)
    text = render()
    missing = sorted(
        f"{ctx_path} {param.opts[-1]}" for ctx_path, param in _options(load_cli()) if not param.help
    )
    if missing:
        print("options without help= (described from FALLBACK_HELP):", ", ".join(missing))
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run .venv/bin/python scripts/cli_reference.py")
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
