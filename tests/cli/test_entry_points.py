"""The CLI only translates: each command builds the config objects and calls one library entry
point (``towpath.serve``, ``towpath.run_worker``, ``towpath.run_server``, ``towpath.check``);
the options' defaults and help are the config fields' own."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import towpath
from towpath.cli import main
from towpath.fields import default_of, help_of, option_of
from towpath.interface.config import ServerConfig
from towpath.interface.forwarding.settings import ForwardingSettings
from towpath.worker.config import WorkerConfig


def test_import_towpath_stays_light() -> None:
    code = "import sys, towpath; print(sorted(m for m in sys.modules if m.startswith('towpath')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "['towpath']", done.stderr
    assert callable(towpath.serve) and callable(towpath.check)
    assert {"serve", "run_worker", "run_server", "check"} <= set(towpath.__all__)
    with pytest.raises(AttributeError):
        towpath.no_such_thing  # noqa: B018


def _option(command: str, flag: str) -> click.Option:
    (option,) = [p for p in main.commands[command].params if flag in p.opts]
    assert isinstance(option, click.Option)
    return option


#: options whose default the command translates before it builds the config: --port (none
#: given: 8000, unless other listeners are), --ws-output-limit (decoupled mode only) and
#: --forwarded-allow-ips (a comma list)
TRANSLATED_DEFAULTS = {
    "--port": None,
    "--ws-output-limit": None,
    "--forwarded-allow-ips": "127.0.0.1,::1",
}


@pytest.mark.parametrize(
    ("command", "config"),
    [
        ("serve", ServerConfig),
        ("serve", ForwardingSettings),
        ("runworker", WorkerConfig),
        ("runserver", WorkerConfig),
    ],
)
def test_options_take_default_and_help_from_their_fields(command: str, config: type[Any]) -> None:
    checked = 0
    for field in dataclasses.fields(config):
        flag = option_of(config, field.name)
        if flag is None or field.metadata.get("help") is None:
            continue
        option = _option(command, flag)
        default = option.default if not option.multiple else tuple(option.default or ())
        if flag in TRANSLATED_DEFAULTS:
            assert default == TRANSLATED_DEFAULTS[flag], flag
        else:
            assert default == default_of(config, field.name), flag
        assert option.help == help_of(config, field.name), flag
        checked += 1
    assert checked >= 4


def test_every_serve_option_of_a_server_setting_has_its_help_there() -> None:
    flags = {flag for param in main.commands["serve"].params for flag in param.opts}
    for field in dataclasses.fields(ServerConfig):
        if option_of(ServerConfig, field.name) in flags:
            assert help_of(ServerConfig, field.name), field.name


def test_serve_builds_the_configs_and_calls_towpath_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr("towpath.serving.serve", lambda app, **kw: calls.append((app, kw)))
    args = ["serve", "--settings", "s", "--heartbeat-timeout", "2", "-p", "9", "--max-body-bytes"]
    result = CliRunner().invoke(main, [*args, "64"])
    assert result.exit_code == 0, result.output
    ((app, kwargs),) = calls
    assert app is None and kwargs["settings"] == "s" and kwargs["layer"] == "default"
    assert kwargs["config"] == ServerConfig(port=9, max_body_bytes=64)
    assert kwargs["forwarding"] == ForwardingSettings(
        heartbeat_timeout_seconds=2, max_body_bytes=64
    )
    result = CliRunner().invoke(main, ["serve", "m:app"])
    assert result.exit_code == 0, result.output
    assert calls[1][0] == "m:app" and calls[1][1]["forwarding"] is None


def test_runworker_and_runserver_call_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    for name in ("run_worker", "run_server"):
        monkeypatch.setattr(
            f"towpath.serving.{name}", lambda *a, _n=name, **kw: calls.append((_n, a, kw))
        )
    result = CliRunner().invoke(
        main, ["runworker", "--settings", "s", "--routing", "m:r", "--concurrency", "7"]
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["runserver", "--asgi", "m:app", "-p", "0"])
    assert result.exit_code == 0, result.output
    (worker, server) = calls
    assert worker[:2] == ("run_worker", ("s",))
    assert worker[2]["routing"] == "m:r" and worker[2]["config"] == WorkerConfig(concurrency=7)
    assert server[:2] == ("run_server", (None,)) and server[2]["asgi"] == "m:app"
    assert server[2]["config"] == ServerConfig(port=0) and server[2]["worker"] == WorkerConfig()


def test_towpath_check_reports_each_layer(tmp_path: Path) -> None:
    settings = tmp_path / "settings.py"
    settings.write_text(
        'CHANNEL_LAYERS = {"default": {"BACKEND": "towpath.layers.InMemoryChannelLayer"}}\n'
    )
    (report,) = towpath.check(str(settings), timeout=5)
    assert report.alias == "default" and report.ok, report.failure


def test_towpath_serve_refuses_what_does_not_go_together() -> None:
    from towpath.interface.config import ServerConfigError
    from towpath.interface.forwarding.settings import ForwardingConfigError

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return

    with pytest.raises(ServerConfigError, match="not both"):
        towpath.serve(app, settings="s")
    with pytest.raises(ForwardingConfigError, match="decoupled mode") as caught:
        towpath.serve(app, forwarding=ForwardingSettings())
    assert caught.value.field is None
