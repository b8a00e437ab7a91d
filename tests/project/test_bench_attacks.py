"""``python -m bench attacks`` (bench/attacks.py) in its smallest configuration, against towpath
only and a few attacks (seconds), so that the harness cannot rot: its HTTP/1.1, HTTP/2 and
WebSocket clients, the measuring around them and the tables. The answers themselves are not
asserted beyond their shape: they are the benchmark's figures, and change as towpath is fixed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ATTACKS = ["h2-rapid-reset", "smuggle-cl-te", "ws-bad-utf8-text"]  # one per client, in order


def test_attacks_against_towpath(tmp_path: Path) -> None:
    results = tmp_path / "attacks.json"
    argv = [
        *("--quick", "--no-pin", "--quiet", "--markdown", "--server", "towpath"),
        *("--attack", ",".join(ATTACKS), "--json", str(results)),
        *("--flood-seconds", "0.3", "--drain", "0.2", "--probe-interval", "0.2"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "attacks", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(results.read_text())
    assert doc["servers"] == ["towpath"]
    assert [entry["name"] for entry in doc["attacks"]] == ATTACKS
    figures = {entry["name"]: entry["results"]["towpath"] for entry in doc["attacks"]}
    for name, row in figures.items():
        assert "error" not in row, (name, row)
        assert not row["answer"].startswith("attack failed"), (name, row["details"])
        assert row["exited"] is None, name
        assert row["rss_before_mib"] > 5, name  # a real server process was measured
        assert row["cpu_seconds"] >= 0
        assert row["during"][1] >= 1 and row["after"][1] == 2  # --quick: 2 requests after
    for name in ("smuggle-cl-te", "ws-bad-utf8-text"):
        assert figures[name]["after"] == [2, 2], name  # one bad request: others served after
    smuggled = figures["smuggle-cl-te"]["details"]
    assert smuggled["statuses"] and smuggled["statuses"][0] in (200, 400)
    assert isinstance(smuggled["hidden_served"], bool)
    assert figures["h2-rapid-reset"]["details"]["pairs"] > 0
    assert figures["ws-bad-utf8-text"]["answer"].startswith("close")
    # a text table and a Markdown table per attack, the title naming what a sound server does
    assert done.stdout.count("a sound server:") == 2 * len(ATTACKS)
    assert "| towpath |" in done.stdout


def _doc(answer: str, commit: str) -> dict[str, Any]:
    figures = {
        "answer": answer,
        "seconds": 0.01,
        "rss_peak_mib": 1.5,
        "rss_before_mib": 30.0,
        "cpu_seconds": 0.02,
        "log_bytes": 2048,
        "during": [3, 3],
        "after": [2, 3],
        "exited": None,
        "details": {},
    }
    return {
        "meta": {"commit": commit, "date": "2026-12-07", "load_average": [0.5]},
        "servers": ["towpath", "daphne"],
        "attacks": [
            {
                "name": "xff",
                "group": "9. X-Forwarded-For under proxy headers",
                "title": "X-Forwarded-For: evil<script>",
                "expect": "ignored",
                "results": {"towpath": figures, "daphne": {"skipped": "no WebSocket"}},
            }
        ],
    }


def test_saved_runs_render_with_before_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.__main__ import main

    now, before = tmp_path / "now.json", tmp_path / "before.json"
    now.write_text(json.dumps(_doc("app sees '127.0.0.1:5000'", "new1")))
    before.write_text(json.dumps(_doc("app sees 'evil<script>:0'", "old0")))
    args = ["attacks", "--from-json", str(now), "--before", str(before), "--markdown"]
    assert main(args) == 0
    out = capsys.readouterr().out
    text, markdown = out.split("### 9.")
    assert "towpath (before)  app sees 'evil<script>:0'" in text
    assert "| towpath (before) | app sees 'evil&lt;script>:0' | 1.50 | 0.0200 |" in markdown
    assert "| towpath | app sees '127.0.0.1:5000' |" in markdown
    assert "| daphne | n/a (no WebSocket) |" in markdown
    assert "| 2.00 | 3/3 | 2/3 |" in markdown  # log KiB, served during, served after
    assert "towpath at old0" in markdown and "towpath at new1" in markdown


def test_unknown_attack_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "attacks", "--attack", "h2-rapid-rest"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown attack or server: h2-rapid-rest (see --list)" in done.stderr
