"""``towpath deploy`` loads the settings, layers and routing the way the rendered processes will
(the rendered ``towpath``, in ``--directory``, with the rendered environment, nothing
connected) before it writes a file: a broken project is ``Error: ...`` with exit status 3 and
no file; ``--no-check`` writes anyway. Real ``towpath`` child processes, no Redis needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from towpath.cli import EXIT_STARTUP_FAILURE, main
from towpath.deploy import DeployConfig, WorkerPool
from towpath.deploy.check import check_config, process_commands

ROOT = Path(__file__).resolve().parents[2]
CHAT = "examples/chat/settings.py"
#: settings that take the Redis address from REDIS_URL, as docs/deployment.md's do
FROM_ENV = (
    "import os\n"
    "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.redis.RedisChannelLayer',\n"
    "    'CONFIG': {'hosts': [os.environ['REDIS_URL']]}, 'ROUTING': 'routes:routes'}}\n"
)
ROUTES = (
    "from towpath.consumers import reply\n"
    "from towpath.routing import route\n"
    "async def hello(message):\n"
    "    await reply(message, 200, 'hi')\n"
    "routes = [route('http.request', hello), route('thumbnail', hello)]\n"
)


def deploy(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Result:
    """``towpath deploy *args`` run from ``cwd``."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, ["deploy", *args], env=env, catch_exceptions=False)
    finally:
        os.chdir(old)


def refused(result: Result, *fragments: str) -> None:
    assert result.exit_code == EXIT_STARTUP_FAILURE, result.output
    assert result.output.startswith("Error: "), result.output
    assert "Nothing was written" in result.output and "--no-check" in result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory with a route list and settings reading REDIS_URL."""
    (tmp_path / "routes.py").write_text(ROUTES)
    (tmp_path / "settings.py").write_text(FROM_ENV)
    return tmp_path


def test_a_mistyped_settings_path_writes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "supervisord.conf"
    result = deploy("supervisord", "--settings", "examples/chat/setings.py", "-o", str(output))
    refused(
        result,
        "the interface servers would not start (towpath serve): Settings file "
        "'examples/chat/setings.py' does not exist",
        f"in {ROOT} with their environment",
    )
    assert not output.exists()


def test_the_chat_settings_render(tmp_path: Path) -> None:
    output = tmp_path / "supervisord.conf"
    result = deploy("supervisord", "--settings", CHAT, "-o", str(output))
    assert result.exit_code == 0, result.output
    assert f'TOWPATH_SETTINGS="{CHAT}"' in output.read_text()


def test_the_check_runs_with_the_rendered_environment(project: Path, tmp_path: Path) -> None:
    """The settings read REDIS_URL: without --redis-url the processes would die of a
    KeyError, which the error shows with the settings line; with it they would start."""
    result = deploy("systemd", "--settings", "settings.py", cwd=project, env={"REDIS_URL": "x"})
    refused(result, f"KeyError in {project}/settings.py, line 3: 'REDIS_URL'")
    good = deploy(
        "systemd", "--settings", "settings.py", "--redis-url", "redis://h:1/0", cwd=project
    )
    assert good.exit_code == 0, good.output
    # a dotted module name, found through the rendered PYTHONPATH from another directory
    elsewhere = deploy(
        "supervisord", "--settings", "settings", "--directory", str(project),
        "--redis-url", "redis://h:1/0", cwd=tmp_path.parent,
    )  # fmt: skip
    assert elsewhere.exit_code == 0, elsewhere.output


def test_the_rendering_shells_towpath_variables_do_not_count(project: Path) -> None:
    """The process manager does not pass them on: TOWPATH_LAYER set here neither breaks
    nor rescues the check; set through --env it reaches the processes, and the check."""
    args = ("supervisord", "--settings", "settings.py", "--redis-url", "redis://h:1/0")
    assert deploy(*args, cwd=project, env={"TOWPATH_LAYER": "nope"}).exit_code == 0
    refused(
        deploy(*args, "--env", "TOWPATH_LAYER=nope", cwd=project),
        "CHANNEL_LAYERS in settings.py has no 'nope' entry; configured: default",
    )


def test_a_routing_that_does_not_import(project: Path) -> None:
    (project / "settings.py").write_text(FROM_ENV.replace("routes:routes", "routs:routes"))
    result = deploy("supervisord", "--settings", "settings.py", "--redis-url", "redis://h:1/0",
                    cwd=project)  # fmt: skip
    refused(result, "the workers would not start (towpath runworker)", "'routs'")


def test_a_pool_whose_channels_nothing_routes(project: Path) -> None:
    args = ("systemd", "--settings", "settings.py", "--redis-url", "redis://h:1/0")
    ok = deploy(*args, "--extra-worker-pool", "thumbnails=thumbnail:2", cwd=project)
    assert ok.exit_code == 0, ok.output
    refused(
        deploy(*args, "--extra-worker-pool", "thumbnails=thumbnails:2", cwd=project),
        "the thumbnails pool's workers would not start (towpath runworker): no channel of the "
        "routing matches --only-channels thumbnails",
    )


def test_the_in_memory_layer_is_refused(project: Path) -> None:
    (project / "memory.py").write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.InMemoryChannelLayer',"
        " 'ROUTING': 'routes:routes'}}\n"
    )
    refused(deploy("supervisord", "--settings", "memory.py", cwd=project), "InMemoryChannelLayer")


def test_settings_with_a_syntax_error(project: Path) -> None:
    (project / "broken.py").write_text("CHANNEL_LAYERS = {\n")
    refused(
        deploy("supervisord", "--settings", "broken.py", cwd=project),
        f"SyntaxError in {project}/broken.py, line 1",
    )


def test_settings_that_exit_or_crash_the_child(project: Path) -> None:
    (project / "exits.py").write_text("import sys\nsys.exit('no settings here')\n")
    refused(
        deploy("supervisord", "--settings", "exits.py", cwd=project),
        f"SystemExit('no settings here') while loading (at {project}/exits.py, line 2)",
    )
    (project / "dies.py").write_text("import os\nos._exit(7)\n")
    refused(
        deploy("supervisord", "--settings", "dies.py", cwd=project),
        "deploy check-processes` exited with status 7 while loading the settings and routing",
    )


def test_a_towpath_that_is_not_there(project: Path) -> None:
    refused(
        deploy("supervisord", "--settings", "settings.py", "--python", "/srv/venv/bin/python",
               cwd=project),
        "--towpath: /srv/venv/bin/towpath is not an executable file",
    )  # fmt: skip


def test_a_towpath_without_the_check(project: Path) -> None:
    """An older towpath (here a stand-in that answers as click does) is named as such."""
    old = project / "old-towpath"
    old.write_text("#!/bin/sh\necho \"Error: No such command 'check-processes'.\" >&2\nexit 2\n")
    old.chmod(0o755)
    refused(
        deploy("supervisord", "--settings", "settings.py", "--towpath", str(old), cwd=project),
        f"--towpath: {old} has no `towpath deploy check-processes` (an older towpath?)",
    )


def test_no_check_writes_the_file_anyway(tmp_path: Path) -> None:
    output = tmp_path / "supervisord.conf"
    result = deploy("supervisord", "--settings", "mysite.settings", "--directory", "/srv/mysite",
                    "--no-check", "-o", str(output))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "[fcgi-program:towpath-serve]" in output.read_text()
    assert "--no-check" not in output.read_text()  # the file is the same either way


def test_the_library_checks_each_kind_of_process(project: Path) -> None:
    config = DeployConfig(
        settings="settings.py",
        directory=str(project),
        redis_url="redis://h:1/0",
        pools=(WorkerPool.parse("thumbs=thumbnail:1"),),
    )
    labels = [label for label, _ in process_commands(config)]
    assert labels == ["the interface servers", "the workers", "the thumbs pool's workers"]
    assert check_config(config) is None
    missing = DeployConfig(settings="settings.py", directory=str(project / "nowhere"))
    assert check_config(missing) == f"--directory: {project}/nowhere is not a directory"
