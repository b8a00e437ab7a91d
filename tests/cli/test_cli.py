"""The `towpath` command: only commands that work, errors as one line with a distinct status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from towpath import __version__
from towpath.cli import EXIT_STARTUP_FAILURE, main


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_console_script_is_installed() -> None:
    towpath = Path(sys.executable).with_name("towpath")
    result = subprocess.run([towpath, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "check" in result.stdout


def test_check_round_trips_every_layer(tmp_path: Path) -> None:
    settings = tmp_path / "checked_settings.py"
    settings.write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.InMemoryChannelLayer'},"
        " 'jobs': {'BACKEND': 'towpath.layers.InMemoryChannelLayer'}}\n"
    )
    result = CliRunner().invoke(main, ["check", "--settings", str(settings)])
    assert result.exit_code == 0, result.output
    assert "default: ok (InMemoryChannelLayer" in result.output
    assert "jobs: ok" in result.output


def test_check_reads_the_environment(tmp_path: Path) -> None:
    settings = tmp_path / "env_checked_settings.py"
    settings.write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.InMemoryChannelLayer'}}\n"
    )
    result = CliRunner().invoke(main, ["check"], env={"TOWPATH_SETTINGS": str(settings)})
    assert result.exit_code == 0, result.output


def test_check_misconfiguration_is_one_line_and_a_startup_status(tmp_path: Path) -> None:
    settings = tmp_path / "bad_settings.py"
    settings.write_text(
        "CHANNEL_LAYERS = {'default': {'BACKEND': 'towpath.layers.InMemoryChannelLayer',"
        " 'CONFIG': {'capacityy': 3}}}\n"
    )
    result = CliRunner().invoke(main, ["check", "--settings", str(settings)])
    assert result.exit_code == EXIT_STARTUP_FAILURE
    assert "Error: Channel layer 'default': CONFIG option 'capacityy'" in result.output
    assert "did you mean 'capacity'" in result.output
    assert "Traceback" not in result.output
