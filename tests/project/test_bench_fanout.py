"""``python -m bench fanout`` (bench/fanout.py) in its smallest configuration -- 20 clients, one
rate, 2 s, towpath's two set-ups -- so that the harness cannot rot: real servers, workers,
redis-server, client and publisher processes, and the report's columns. At that load nothing
may be lost, closed or left behind; the figures themselves are the benchmark's, not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUPS = ["towpath-workers", "towpath-members"]
#: the columns issue 18 asks for (bench/fanout_report.py's HEADER)
HEADER = [
    *("set-up", "events/s", "scenario", "offered/s", "delivered/s", "lost"),
    *("clients closed (codes)", "memberships left", "p50 ms", "p99 ms", "server CPU %"),
    *("worker CPU %", "redis CPU %", "client CPU %", "server RSS MiB", "worker RSS MiB"),
]


@pytest.mark.timeout(150)
def test_fanout_smallest(tmp_path: Path) -> None:
    results = tmp_path / "fanout.json"
    argv = [
        *("--clients", "20", "--rates", "5", "--duration", "2", "--drain", "10"),
        *("--setups", ",".join(SETUPS), "--json", str(results), "--markdown", "--quiet"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "fanout", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    rows = json.loads(results.read_text())["rows"]
    assert [(row["setup"], row["rate"], row["scenario"]) for row in rows] == [
        (setup, 5.0, "steady") for setup in SETUPS
    ]
    for row in rows:
        assert "error" not in row, row
        assert row["ready"] == 20 and row["members_at_start"] == 20, row["connect_errors"]
        assert row["published"] == 10
        assert (row["lost"], row["closed"], row["memberships_left"]) == (0, 0, 0), row
        assert row["delivered"] == 20 * 10 and row["duplicates"] == row["out_of_order"] == 0
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["serve_rss_mib"] > 5 and row["worker_rss_mib"] > 5  # real processes measured
        assert row["delivered_per_s"] > 0 and row["offered_per_s"] == 100
    # the text table and the Markdown table, each with every column
    text, _, markdown = done.stdout.partition("**Fan-out")
    for header in HEADER:
        assert header in text.splitlines()[1], header
    assert "| " + " | ".join(HEADER) + " |" in markdown
    for setup in SETUPS:
        assert f"| {setup} | 5 | steady |" in markdown
