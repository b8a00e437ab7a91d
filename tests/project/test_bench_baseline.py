"""``towpath-baseline`` of ``python -m bench servers``: another checkout's ``towpath serve``,
to measure a change before and after in one interleaved run (docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import BASELINE_ENV, SERVERS


def test_without_a_baseline_the_server_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(BASELINE_ENV, raising=False)
    assert SERVERS["towpath-baseline"].missing() == (
        f"{BASELINE_ENV} is not set (a checkout of towpath with its .venv)"
    )
    monkeypatch.setenv(BASELINE_ENV, "/nonexistent/checkout")
    assert SERVERS["towpath-baseline"].missing() == (
        "/nonexistent/checkout/.venv/bin/towpath not found"
    )


def test_the_baseline_runs_the_towpath_of_its_own_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a checkout whose towpath only says where it is: what the bench would start
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "towpath"
    script.write_text(f"#!{sys.executable}\nimport sys\nprint(sys.argv[0], *sys.argv[1:])\n")
    script.chmod(0o755)
    monkeypatch.setenv(BASELINE_ENV, str(tmp_path))
    spec = SERVERS["towpath-baseline"]
    assert spec.missing() is None and not spec.default
    argv = spec.argv("bench.apps:hello", 8123)
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.split() == [
        str(script),
        "serve",
        "bench.apps:hello",
        "--bind",
        "127.0.0.1",
        "--port",
        "8123",
    ]


def test_decoupled_stacks_of_the_baseline_run_its_serve_and_runworker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bench import decoupled

    monkeypatch.delenv(BASELINE_ENV, raising=False)
    assert not [name for name in decoupled._configs() if "baseline" in name]
    monkeypatch.setenv(BASELINE_ENV, str(tmp_path))
    configs = decoupled._configs()
    stack = configs["decoupled-asgi-baseline@split"]
    assert stack.baseline and stack.worker_args == configs["decoupled-asgi@split"].worker_args
    assert configs["direct-baseline"].server is SERVERS["towpath-baseline"]
    assert stack.missing() == f"{tmp_path.resolve()}/.venv/bin/towpath not found"
    for spec in (decoupled.SERVE_BASELINE, decoupled.WORKER_BASELINE):
        assert spec.argv("settings", 1)[0] == f"{tmp_path.resolve()}/.venv/bin/towpath"
