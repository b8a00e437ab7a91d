"""Start-up failures, the same way in every command: the real ``towpath`` process prints one
``Error: ...`` line that names the problem (for user code: the exception, its file and line,
and what was being loaded), no traceback, and exits with ``EXIT_STARTUP_FAILURE`` (3)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from towpath.cli import EXIT_STARTUP_FAILURE
from towpath.testing.processes import TOWPATH

REPO = Path(__file__).resolve().parents[2]

#: every command that loads settings, with what it needs besides --settings to get that far
SETTINGS_COMMANDS = {
    "check": ["check"],
    "runworker": ["runworker", "--routing", "no_routes_needed:routes"],
    "runserver": ["runserver", "-p", "0", "--routing", "no_routes_needed:routes"],
    "serve": ["serve", "-p", "0"],
}


def towpath(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOWPATH_")}
    return subprocess.run(
        [TOWPATH, *args], capture_output=True, text=True, timeout=30, cwd=cwd, env=env
    )


def startup_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed start (log lines of the command may come before it)."""
    assert result.returncode == EXIT_STARTUP_FAILURE, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip().endswith(errors[0])
    return errors[0]


# -- settings modules ----------------------------------------------------------------------------


SETTINGS_FAILURES = {
    "syntax": (
        "CHANNEL_LAYERS = {}\nx = = 1\n",
        "SyntaxError in {path}, line 2: invalid syntax",
    ),
    "missing package": (
        "import os\nimport no_such_package_xyz\nCHANNEL_LAYERS = {}\n",
        "ModuleNotFoundError in {path}, line 2: No module named 'no_such_package_xyz'",
    ),
    "name error": (
        "CHANNEL_LAYERS = {'default': {'BACKEND': undefined_backend}}\n",
        "NameError in {path}, line 1: name 'undefined_backend' is not defined",
    ),
}


@pytest.mark.parametrize("command", SETTINGS_COMMANDS)
@pytest.mark.parametrize("case", SETTINGS_FAILURES)
def test_settings_that_do_not_load(tmp_path: Path, command: str, case: str) -> None:
    source, expected = SETTINGS_FAILURES[case]
    path = tmp_path / "broken_settings.py"
    path.write_text(source)
    result = towpath(*SETTINGS_COMMANDS[command], "--settings", str(path), cwd=tmp_path)
    assert startup_error(result) == (
        f"Error: {expected.format(path=path)} (loading the settings module '{path}')"
    )


@pytest.mark.parametrize("command", SETTINGS_COMMANDS)
def test_dotted_settings_module_names_the_module(tmp_path: Path, command: str) -> None:
    package = tmp_path / "mysite"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text("from mysite import helpers\nCHANNEL_LAYERS = {}\n")
    (package / "helpers.py").write_text("import os\n\nVALUE = undefined_helper\n")
    result = towpath(*SETTINGS_COMMANDS[command], "--settings", "mysite.settings", cwd=tmp_path)
    assert startup_error(result) == (
        f"Error: NameError in {package / 'helpers.py'}, line 3: name 'undefined_helper' is not "
        "defined (loading the settings module 'mysite.settings')"
    )


def test_deploy_reports_settings_that_do_not_load(tmp_path: Path) -> None:
    path = tmp_path / "broken_settings.py"
    path.write_text("CHANNEL_LAYERS = {}\nx = = 1\n")
    result = towpath(
        "deploy", "supervisord", "--settings", str(path), "--directory", str(tmp_path), cwd=tmp_path
    )
    # deploy says which rendered process would not start, then the same description
    error = startup_error(result)
    assert error.startswith("Error: the interface servers would not start (towpath serve): ")
    assert (
        f"SyntaxError in {path}, line 2: invalid syntax (loading the settings module '{path}')"
        in error
    )


# -- apps and route lists ------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose app module imports a package that is not installed, and whose route
    list module fails with a NameError inside a helper it calls at import time."""
    package = tmp_path / "proj"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "asgi.py").write_text(
        "import os\nimport not_installed_dep\n\nasync def app(scope, receive, send):\n    pass\n"
    )
    (package / "routes.py").write_text("from proj import helper\n\nroutes = helper.make()\n")
    (package / "helper.py").write_text("def make():\n    return undefined_thing\n")
    (tmp_path / "ipc_settings.py").write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.ipc.IPCChannelLayer', "
        f"'CONFIG': {{'directory': {str(tmp_path)!r}}}}}}}\n"
    )
    return tmp_path


def missing_dep(project: Path, loading: str) -> str:
    return (
        f"Error: ModuleNotFoundError in {project / 'proj' / 'asgi.py'}, line 2: No module named "
        f"'not_installed_dep' (loading {loading})"
    )


def name_error(project: Path, loading: str) -> str:
    return (
        f"Error: NameError in {project / 'proj' / 'helper.py'}, line 2: name 'undefined_thing' "
        f"is not defined (loading {loading})"
    )


def test_serve_app_that_does_not_import(project: Path) -> None:
    result = towpath("serve", "proj.asgi:app", "-p", "0", cwd=project)
    assert startup_error(result) == missing_dep(project, "the app 'proj.asgi:app'")


def test_runworker_asgi_app_that_does_not_import(project: Path) -> None:
    result = towpath(
        "runworker", "--settings", "ipc_settings.py", "--asgi", "proj.asgi:app", cwd=project
    )
    assert startup_error(result) == missing_dep(project, "--asgi 'proj.asgi:app'")


def test_runserver_asgi_app_that_does_not_import(project: Path) -> None:
    result = towpath("runserver", "-p", "0", "--asgi", "proj.asgi:app", cwd=project)
    assert startup_error(result) == missing_dep(project, "--asgi 'proj.asgi:app'")


def test_runworker_routing_that_does_not_import(project: Path) -> None:
    result = towpath(
        "runworker", "--settings", "ipc_settings.py", "--routing", "proj.routes:routes", cwd=project
    )
    assert startup_error(result) == name_error(project, "ROUTING 'proj.routes:routes'")


def test_runserver_routing_that_does_not_import(project: Path) -> None:
    result = towpath("runserver", "-p", "0", "--routing", "proj.routes:routes", cwd=project)
    assert startup_error(result) == name_error(project, "ROUTING 'proj.routes:routes'")


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "examples.framework.app", "-p", "0"],
        ["runserver", "-p", "0", "--asgi", "examples.framework.app"],
    ],
    ids=["serve", "runserver"],
)
def test_dotted_path_to_a_module_suggests_module_attr(args: list[str]) -> None:
    result = towpath(*args, cwd=REPO)
    assert startup_error(result) == (
        "Error: 'examples.framework.app' is a module: name the object in it as "
        "\"<module>:<attribute>\"; did you mean 'examples.framework.app:app'?"
    )


def test_module_attr_with_a_missing_attribute(project: Path) -> None:
    (project / "proj" / "plain.py").write_text("application = None\n")
    result = towpath("serve", "proj.plain:app", "-p", "0", cwd=project)
    assert startup_error(result) == (
        "Error: Attribute 'app' not found in 'proj.plain' (from 'proj.plain:app')"
    )


# -- the IPC layer's directory -------------------------------------------------------------------


@pytest.mark.parametrize("command", SETTINGS_COMMANDS)
def test_ipc_directory_that_does_not_exist(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "no" / "such"
    path = tmp_path / "ipc_settings.py"
    path.write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.ipc.IPCChannelLayer', "
        f"'CONFIG': {{'directory': {str(missing)!r}}}}}}}\n"
    )
    result = towpath(*SETTINGS_COMMANDS[command], "--settings", str(path), cwd=tmp_path)
    assert startup_error(result) == (
        f"Error: Channel layer 'default': IPC layer: directory='{missing}' does not exist; the "
        f"store is made inside an existing directory: create it (mkdir -p {missing}) or set "
        "directory= to one, the same in every process (default /dev/shm)"
    )
    assert not (tmp_path / "no").exists()
