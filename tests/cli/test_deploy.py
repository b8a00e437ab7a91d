"""``towpath deploy supervisord`` and ``towpath deploy systemd``: what they render, read back
by supervisord's own config parser and checked by ``systemd-analyze verify``; the bad input
they refuse (exit 2, naming the option); and the committed files under ``deploy/``, which must
be exactly what the documented commands render."""

from __future__ import annotations

import configparser
import contextlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from towpath.cli import main
from towpath.deploy import DeployConfig, DeployConfigError, WorkerPool, render_supervisord
from towpath.testing.processes import TOWPATH

ROOT = Path(__file__).resolve().parents[2]
#: the example options the committed files and docs/deployment.md use
EXAMPLE = [
    "--settings", "mysite.settings", "--directory", "/srv/mysite",
    "--towpath", "/srv/mysite/venv/bin/towpath", "--user", "www-data", "--workers", "4",
]  # fmt: skip
COMMITTED = {
    "deploy/supervisord.conf": [
        "supervisord",
        *EXAMPLE,
        "--extra-worker-pool",
        "thumbnails=thumbnail:2",
        "--with-redis",
    ],
    "deploy/supervisord-own-port.conf": [
        "supervisord",
        *EXAMPLE,
        "--own-port",
        "--redis-url",
        "redis://10.0.0.5:6379/0",
    ],
    "deploy/systemd": [
        "systemd",
        *EXAMPLE,
        "--extra-worker-pool",
        "thumbnails=thumbnail:2",
        "--with-redis",
    ],
}


def deploy(*args: str) -> Result:
    """``towpath deploy *args --no-check``: these tests render for a project (``/srv/mysite``)
    that is not on this machine; tests/cli/test_deploy_check.py tests the check."""
    return CliRunner().invoke(main, ["deploy", *args, "--no-check"], catch_exceptions=False)


def supervisord_config(tmp_path: Path, *args: str) -> Any:
    """Render with ``args`` (logs and control socket under tmp_path) and read the file back
    with supervisord's own parser; its ServerOptions."""
    from supervisor.options import ServerOptions

    path = tmp_path / "supervisord.conf"
    result = deploy(
        "supervisord", "--settings", "mysite.settings", "--directory", "/srv/mysite",
        "--log-dir", str(tmp_path), "--run-dir", str(tmp_path), "-o", str(path), *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    options = ServerOptions()
    options.realize(args=["-c", str(path)])
    return options


def groups(options: Any) -> dict[str, Any]:
    return {group.name: group for group in options.process_group_configs}


# -- supervisord ---------------------------------------------------------------------------------


def test_supervisord_defaults(tmp_path: Path) -> None:
    options = supervisord_config(tmp_path)
    found = groups(options)
    assert list(found) == ["towpath-worker", "towpath-serve"]  # by priority: workers first

    serve = found["towpath-serve"]
    assert type(serve).__name__ == "FastCGIGroupConfig"
    assert str(serve.socket_config) == "tcp://127.0.0.1:8000"
    assert serve.priority == 300
    assert [p.name for p in serve.process_configs] == ["towpath-serve_00", "towpath-serve_01"]
    process = serve.process_configs[0]
    towpath = str(Path(sys.executable).with_name("towpath"))
    assert shlex.split(process.command) == [
        towpath, "serve", "--fd", "0", "--graceful-timeout", "30"
    ]  # fmt: skip
    assert process.stopsignal.name == "SIGTERM" and process.stopwaitsecs == 40
    assert process.directory == "/srv/mysite"
    assert process.environment == {
        "TOWPATH_SETTINGS": "mysite.settings",
        "PYTHONPATH": "/srv/mysite",
    }
    assert process.stdout_logfile == str(tmp_path / "towpath-serve_00.log")
    assert process.redirect_stderr

    workers = found["towpath-worker"]
    assert workers.priority == 200
    assert [p.name for p in workers.process_configs] == ["towpath-worker_00", "towpath-worker_01"]
    worker = workers.process_configs[1]
    assert shlex.split(worker.command) == [towpath, "runworker", "--graceful-timeout", "30"]
    assert worker.stopsignal.name == "SIGTERM" and worker.stopwaitsecs == 40
    assert worker.autorestart is not False and worker.startsecs == 1

    assert options.serverurl == f"unix://{tmp_path}/supervisor.sock"
    assert options.logfile == str(tmp_path / "supervisord.log")


def test_supervisord_pools_redis_user_and_arguments(tmp_path: Path) -> None:
    options = supervisord_config(
        tmp_path,
        "--towpath", "/opt/venv/bin/towpath", "--workers", "3", "--servers", "4",
        "--extra-worker-pool", "thumbnails=thumbnail:2",
        "--extra-worker-pool", "mail=mail.*,email:1",
        "--with-redis", "--redis-url", "redis://localhost:6390/2",
        "--graceful-timeout", "2.5", "--user", "www-data", "--name", "shop",
        "--env", "GREETING=hello, 100% world", "--env", "PYTHONPATH=/srv/lib",
        "--serve-args", "--proxy-headers --root-path '/my app'",
        "--worker-args", "--concurrency 20",
    )  # fmt: skip
    found = groups(options)
    assert list(found) == [
        "shop-redis",
        "shop-mail",
        "shop-thumbnails",
        "shop-worker",
        "shop-serve",
    ]
    redis = found["shop-redis"].process_configs[0]
    assert shlex.split(redis.command) == [
        "redis-server", "--port", "6390", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"
    ]  # fmt: skip
    assert found["shop-redis"].priority == 100
    assert redis.uid is not None  # user=www-data

    def command(group: str) -> list[str]:
        return shlex.split(found[group].process_configs[0].command)

    runworker = ["/opt/venv/bin/towpath", "runworker", "--graceful-timeout", "2.5"]
    assert command("shop-worker") == [
        *runworker, "--exclude-channels", "thumbnail",
        "--exclude-channels", "mail.*", "--exclude-channels", "email", "--concurrency", "20",
    ]  # fmt: skip
    assert command("shop-thumbnails") == [
        *runworker, "--only-channels", "thumbnail", "--concurrency", "20"
    ]  # fmt: skip
    assert command("shop-mail") == [
        *runworker, "--only-channels", "mail.*", "--only-channels", "email", "--concurrency", "20"
    ]  # fmt: skip
    assert len(found["shop-worker"].process_configs) == 3
    assert len(found["shop-thumbnails"].process_configs) == 2
    assert len(found["shop-serve"].process_configs) == 4
    assert command("shop-serve") == [
        "/opt/venv/bin/towpath", "serve", "--fd", "0", "--graceful-timeout", "2.5",
        "--proxy-headers", "--root-path", "/my app",
    ]  # fmt: skip
    serve = found["shop-serve"].process_configs[0]
    assert serve.stopwaitsecs == 13  # ceil(2.5) + 10
    assert serve.environment == {
        "TOWPATH_SETTINGS": "mysite.settings",
        "PYTHONPATH": "/srv/lib",
        "REDIS_URL": "redis://localhost:6390/2",
        "GREETING": "hello, 100% world",
    }


def test_supervisord_own_port(tmp_path: Path) -> None:
    options = supervisord_config(
        tmp_path, "--own-port", "--port", "9000", "--servers", "3", "--bind", "0.0.0.0"
    )
    serve = groups(options)["towpath-serve"]
    assert type(serve).__name__ == "ProcessGroupConfig"
    names = [p.name for p in serve.process_configs]
    assert names == ["towpath-serve_9000", "towpath-serve_9001", "towpath-serve_9002"]
    assert [shlex.split(p.command)[-4:] for p in serve.process_configs] == [
        ["--graceful-timeout", "30", "--port", str(port)] for port in (9000, 9001, 9002)
    ]
    assert "--host" in serve.process_configs[0].command
    assert serve.process_configs[0].stdout_logfile == str(tmp_path / "towpath-serve_9000.log")


ENV_VALUES = [
    "",
    "plain",
    "hello, 100% world",
    "x=y,z=w",
    "redis://a:6379 redis://b:6379",
    "it's",
    'say "hi" now',
    "C:\\path\\",
    "semi;colon#hash",
    "%(ENV_HOME)s $HOME",
    "ünïcode\ttab",
]


@pytest.mark.parametrize("value", ENV_VALUES)
def test_supervisord_environment_reads_back_every_value(tmp_path: Path, value: str) -> None:
    """What supervisord's own parser makes of ``environment=`` is the value given."""
    options = supervisord_config(tmp_path, "--env", f"VALUE={value}", "--env", "AFTER=z")
    for group in groups(options).values():
        for process in group.process_configs:
            assert process.environment["VALUE"] == value, process.name
            assert process.environment["AFTER"] == "z"


def test_env_copies_a_variable_of_this_environment(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["deploy", "supervisord", "--settings", "s", "--directory", "/p", "--no-check",
         "--env", "DJANGO_SECRET", "--env", "MODE=prod"],
        env={"DJANGO_SECRET": "s3 cr,et"},
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert 'DJANGO_SECRET="s3 cr,et",MODE="prod"\n' in result.output
    # the command at the top of the file names the value, so rendering it again gives this file
    # (the comment wraps where the path to towpath makes it: compare it unwrapped)
    header = result.output.split("\n\n", 1)[0].replace("\\\n;", " ")
    assert "--env 'DJANGO_SECRET=s3 cr,et' --env MODE=prod" in " ".join(header.split())


def test_supervisord_unix_socket(tmp_path: Path) -> None:
    options = supervisord_config(tmp_path, "--bind", f"unix:{tmp_path}/towpath.sock")
    serve = groups(options)["towpath-serve"]
    assert str(serve.socket_config) == f"unix://{tmp_path}/towpath.sock"
    assert serve.socket_config.get_mode() == 0o660


def test_supervisord_programs_only() -> None:
    result = deploy("supervisord", "--settings", "s", "--directory", "/p", "--programs-only")
    assert result.exit_code == 0, result.output
    parser = configparser.RawConfigParser()
    parser.read_string(result.output)
    assert parser.sections() == ["fcgi-program:towpath-serve", "program:towpath-worker"]
    assert "[include]" in result.output  # it says how to use it


def test_paths_default_to_the_running_towpath_and_directory(tmp_path: Path) -> None:
    with contextlib.chdir(tmp_path):
        result = deploy("supervisord", "--settings", "s")
        venv = deploy("supervisord", "--settings", "s", "--python", "venv/bin/python")
    assert result.exit_code == 0, result.output
    assert f"directory={tmp_path}\n" in result.output
    assert f"command={Path(sys.executable).with_name('towpath')} serve" in result.output
    assert f"command={tmp_path}/venv/bin/towpath serve" in venv.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers"),
        (["--servers", "-1"], "--servers"),
        (["--extra-worker-pool", "thumbnails"], "--extra-worker-pool: expected NAME=CHANNELS:N"),
        (["--extra-worker-pool", "t=thumb:x"], "--extra-worker-pool: expected NAME=CHANNELS:N"),
        (["--extra-worker-pool", "worker=x:1"], "--extra-worker-pool: pool name 'worker'"),
        (["--extra-worker-pool", "Big=x:1"], "--extra-worker-pool: pool name 'Big'"),
        (["--extra-worker-pool", "t=x:0"], "--extra-worker-pool: pool 't': needs at least 1"),
        (
            ["--extra-worker-pool", "t=x:1", "--extra-worker-pool", "t=y:1"],
            "--extra-worker-pool: pool 't' is given twice",
        ),
        (["--env", "1A=b"], "--env: '1A' is not an environment variable name"),
        (["--env", "TOWPATH_SETTINGS=x"], "--env: set TOWPATH_SETTINGS with --settings"),
        (["--env", "A=two\nlines"], "--env: A: the value may not hold a line break"),
        (
            ["--env", "A=it's'"],
            "--env: A=\"it's'\" cannot be written in supervisord's environment=",
        ),
        (["--env", """A='a"b'"""], "may not start or end with a quote, hold both"),
        (["--env", "A=x ;y"], "hold a blank followed by ';' or '#'"),
        (["--env", "UNSET_IN_THIS_TEST"], "--env: 'UNSET_IN_THIS_TEST' is not set in this"),
        (["--directory", "/srv/my\"site'"], "--directory: PYTHONPATH="),
        (["--serve-args", "--root-path '/a ;b'"], "--serve-args: '/a ;b' holds a blank"),
        (["--directory", "/srv/a #b"], "--directory: '/srv/a #b' holds a blank followed by"),
        (["--redis-server", "/opt/r ;x", "--with-redis"], "--redis-server: '/opt/r ;x' holds"),
        (
            ["--with-redis", "--redis-url", "redis://10.0.0.5:6379"],
            "--redis-url: --with-redis runs Redis on this machine",
        ),
        (["--redis-url", "http://x"], "--redis-url: redis://host:port/db"),
        (["--own-port", "--bind", "unix:/run/t.sock"], "--bind: a unix socket is one shared"),
        (["--bind", "unix:relative.sock"], "--bind: unix:/absolute/path"),
        (["--bind", "::1"], "--bind: supervisord's fcgi-program socket is IPv4 or unix only"),
        (["--own-port", "--port", "65535"], "--port: ports 65535..65536 do not fit"),
        (["--graceful-timeout", "0"], "--graceful-timeout"),
        (["--towpath", "/a/towpath", "--python", "/b/python"], "give --towpath or --python"),
        (["--serve-args", "--root-path 'unclosed"], "--serve-args: No closing quotation"),
        (["--user", "bad user"], "--user: a user name"),
        (["--name", "My App"], "--name: lower-case letters"),
        (["--settings", "my settings"], "--settings: a module name or path"),
    ],
)
def test_bad_input_is_a_usage_error_naming_the_option(args: list[str], message: str) -> None:
    base = ["--settings", "mysite.settings"] if "--settings" not in args else []
    result = deploy("supervisord", *base, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_settings_are_required() -> None:
    result = deploy("systemd")
    assert result.exit_code == 2
    assert "Missing option '--settings'" in result.output


def test_the_library_refuses_a_relative_path() -> None:
    with pytest.raises(DeployConfigError, match="log_dir: must be an absolute path") as caught:
        DeployConfig(settings="s", log_dir="logs")
    assert caught.value.setting == "log_dir"
    config = DeployConfig(
        settings="s", directory="/p", towpath="/t", pools=(WorkerPool.parse("a=b"),)
    )
    assert "--only-channels b" in render_supervisord(config)


# -- systemd -------------------------------------------------------------------------------------


def systemd_units(tmp_path: Path, *args: str) -> dict[str, str]:
    out = tmp_path / "units"
    out.mkdir()
    result = deploy(
        "systemd", "--settings", "mysite.settings", "--directory", str(tmp_path),
        "--towpath", TOWPATH, "-o", str(out), *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return {path.name: path.read_text() for path in sorted(out.iterdir())}


def unit(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_systemd_units(tmp_path: Path) -> None:
    units = systemd_units(
        tmp_path, "--workers", "3", "--extra-worker-pool", "thumbnails=thumbnail:2",
        "--with-redis", "--env", "GREETING=100% $HOME", "--graceful-timeout", "20",
    )  # fmt: skip
    assert list(units) == [
        "towpath-serve.socket", "towpath-serve@.service", "towpath-thumbnails@.service",
        "towpath-worker@.service", "towpath.target",
    ]  # fmt: skip
    socket = unit(units["towpath-serve.socket"])
    assert socket["Socket"]["ListenStream"] == "127.0.0.1:8000"
    serve = unit(units["towpath-serve@.service"])
    assert serve["Service"]["ExecStart"] == f"{TOWPATH} serve --fd 3 --graceful-timeout 20"
    assert serve["Service"]["Sockets"] == "towpath-serve.socket"
    assert serve["Service"]["TimeoutStopSec"] == "30"
    assert serve["Service"]["KillSignal"] == "SIGTERM"
    assert 'Environment="GREETING=100%% $HOME"' in units["towpath-serve@.service"]
    worker = unit(units["towpath-worker@.service"])
    assert worker["Service"]["ExecStart"].endswith("--exclude-channels thumbnail")
    assert worker["Service"]["Restart"] == "always"
    assert "redis-server.service" in worker["Unit"]["After"]
    target = units["towpath.target"]
    assert "Wants=towpath-serve@1.service towpath-serve@2.service\n" in target
    assert "Wants=towpath-worker@1.service towpath-worker@2.service towpath-worker@3.service\n" in (
        target
    )
    assert "Wants=towpath-thumbnails@1.service towpath-thumbnails@2.service\n" in target
    assert "Wants=redis-server.service\n" in target
    verify(tmp_path / "units")


def test_systemd_environment_quoting(tmp_path: Path) -> None:
    """systemd takes what supervisord cannot (both quote kinds, a leading quote, `` ;``):
    the assignment is double-quoted with C escapes, ``%`` doubled (specifiers), ``$`` left
    alone (Environment= does not expand variables)."""
    units = systemd_units(
        tmp_path, "--env", """QUOTES='a"b' c""", "--env", "BACKSLASH=C:\\x", "--env", "E=x ;y",
        "--env", "PLAIN=redis://a:6379/0",
    )  # fmt: skip
    text = units["towpath-worker@.service"]
    assert 'Environment="QUOTES=\'a\\"b\' c"\n' in text
    assert 'Environment="BACKSLASH=C:\\\\x"\n' in text
    assert 'Environment="E=x ;y"\n' in text
    assert "Environment=PLAIN=redis://a:6379/0\n" in text
    verify(tmp_path / "units")


def test_systemd_own_port_and_unix_socket(tmp_path: Path) -> None:
    units = systemd_units(tmp_path, "--own-port", "--port", "9000", "--user", "www-data")
    assert "towpath-serve.socket" not in units
    serve = unit(units["towpath-serve@.service"])
    assert serve["Service"]["ExecStart"].endswith("--graceful-timeout 30 --port %i")
    assert serve["Service"]["User"] == "www-data"
    assert "Wants=towpath-serve@9000.service towpath-serve@9001.service" in units["towpath.target"]
    verify(tmp_path / "units")

    other = tmp_path / "other"
    other.mkdir()
    units = systemd_units(other, "--bind", f"unix:{other}/towpath.sock")
    socket = unit(units["towpath-serve.socket"])
    assert socket["Socket"]["ListenStream"] == f"{other}/towpath.sock"
    assert socket["Socket"]["SocketMode"] == "0660"
    verify(other / "units")


def test_systemd_to_stdout() -> None:
    result = deploy("systemd", "--settings", "s", "--directory", "/p", "--towpath", "/t")
    assert result.exit_code == 0, result.output
    assert "### towpath-serve.socket\n" in result.output
    assert "### towpath.target\n" in result.output


def verify(directory: Path) -> None:
    """``systemd-analyze verify`` on every unit (instances through the target), when the
    machine has it: no error, no warning."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the structure was checked above; the verifier is a bonus where it exists
    files = sorted(str(path) for path in directory.iterdir() if "@." not in path.name)
    done = subprocess.run(
        [analyze, "verify", "--man=no", *files],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert str(directory) not in report, report  # a warning about one of our files


# -- the committed files -------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(COMMITTED))
def test_committed_files_are_what_the_documented_command_renders(path: str, tmp_path: Path) -> None:
    args = COMMITTED[path]
    committed = ROOT / path
    if committed.is_dir():
        result = deploy(*args, "-o", str(tmp_path))
        assert result.exit_code == 0, result.output
        rendered = {p.name: p.read_text() for p in tmp_path.iterdir()}
        on_disk = {p.name: p.read_text() for p in committed.iterdir()}
    else:
        result = deploy(*args)
        assert result.exit_code == 0, result.output
        rendered, on_disk = {path: result.output}, {path: committed.read_text()}
    command = " ".join(["towpath deploy", *args, "-o", path])
    assert rendered == on_disk, f"render it again: {command}"
    # the docs show the very command
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert command in " ".join(docs.replace("\\\n", " ").split()), command
