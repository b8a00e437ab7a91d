"""``bench/plot.py`` draws benchmark results as a PNG: from each suite's ``--json`` output, from
a list of them (docs/benchmarks.json), and through ``python -m bench plot``. Fast: small
results files, no benchmark is run."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def plot(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    import bench.plot

    return bench.plot


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails unless the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"), f"{path} is truncated"
    return width, height


def layers_results() -> dict[str, Any]:
    """What ``python -m bench layers --json`` writes, cut down to two scenarios."""

    def scenario(name: str, key: str, unit: str, higher: bool, ours: float, theirs: float):
        ratio = ours / theirs if higher else theirs / ours
        return {
            "name": name,
            "description": "",
            "metrics": [{"key": key, "unit": unit, "higher_is_better": higher}],
            "results": {
                "towpath": {"runs": [], "median": {key: ours}},
                "channels": {"runs": [], "median": {key: theirs}},
            },
            "ratios": {"channels": {key: ratio}},
            "paired_ratios": {"channels": {key: ratio}},
        }

    return {
        "meta": {"preset": "memory", "date": "2026-11-22T14:21:00+00:00"},
        "sizes": {},
        "repeat": 1,
        "layers": [
            {"name": "towpath", "path": "x.A", "config": {}, "shared": False},
            {"name": "channels", "path": "y.B", "config": {}, "shared": False},
        ],
        "scenarios": [
            scenario("send_receive", "throughput", "msgs/s", True, 230_000.0, 90_000.0),
            scenario("process_roundtrip", "p50", "ms", False, 0.02, 0.036),
        ],
    }


def servers_results() -> dict[str, Any]:
    def run(**median: float) -> dict[str, Any]:
        return {"runs": [], "errors": [], "median": median}

    return {
        "meta": {},
        "skipped": {},
        "scenarios": {
            "http1": {"towpath": run(rps=14_000.0), "uvicorn-h11": run(rps=11_000.0)},
            "memory": {"towpath": run(kib_per_conn=9.2), "uvicorn-h11": run(kib_per_conn=16.1)},
        },
        "goals": [],
    }


def decoupled_results() -> dict[str, Any]:
    return {
        "meta": {},
        "configurations": {
            "direct": {"runs": [], "errors": [], "median": {"rps": 16_000.0}},
            "decoupled-asgi@none": {"runs": [], "errors": [], "median": {"rps": 7_500.0}},
        },
        "goals": [],
    }


def test_plot_writes_a_png_of_layer_results(plot: ModuleType, tmp_path: Path) -> None:
    results = tmp_path / "layers.json"
    results.write_text(json.dumps(layers_results()), encoding="utf-8")
    output = plot.render_file([results], tmp_path / "layers.png")
    width, height = png_size(output)
    assert width > 300 and height > 150


def test_panels_follow_each_suite(plot: ModuleType) -> None:
    documents = [layers_results(), servers_results(), decoupled_results()]
    assert [plot.suite(d) for d in documents] == ["layers", "servers", "decoupled"]
    layers, http1, memory, decoupled = plot.panels(documents)
    assert layers.log and [(b.label, b.text) for b in layers.bars] == [
        ("send_receive", "2.56x"),
        ("process_roundtrip p50", "1.80x"),
    ]
    assert [(b.label, b.value, b.series) for b in http1.bars] == [
        ("towpath", 14_000.0, 0),
        ("uvicorn-h11", 11_000.0, 1),
    ]
    assert "lower is better" in memory.xlabel
    assert [b.text for b in decoupled.bars] == ["16,000", "7,500 (47%)"]


def test_a_list_of_documents_is_one_figure_and_can_be_saved(
    plot: ModuleType, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(layers_results()), encoding="utf-8")
    second.write_text(json.dumps([servers_results(), decoupled_results()]), encoding="utf-8")
    saved = tmp_path / "all.json"
    output = plot.render_file([first, second], tmp_path / "all.png", "title", saved)
    assert png_size(output)[0] > png_size(plot.render_file([first], tmp_path / "one.png"))[0]
    assert [plot.suite(d) for d in plot.load(saved)] == ["layers", "servers", "decoupled"]


def test_what_is_not_a_results_file_is_refused(plot: ModuleType, tmp_path: Path) -> None:
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps({"hello": "world"}), encoding="utf-8")
    with pytest.raises(plot.PlotError, match="--json"):
        plot.load(stray)
    with pytest.raises(plot.PlotError, match="cannot read"):
        plot.load(tmp_path / "missing.json")


def test_committed_benchmark_figures_draw(plot: ModuleType) -> None:
    documents = plot.load(ROOT / "docs" / "benchmarks.json")
    assert [plot.suite(d) for d in documents] == ["layers", "layers", "servers", "decoupled"]
    assert len(plot.panels(documents)) == 7
    png_size(ROOT / "docs" / "benchmarks.png")


def test_python_m_bench_plot(tmp_path: Path) -> None:
    results = tmp_path / "decoupled.json"
    results.write_text(json.dumps(decoupled_results()), encoding="utf-8")
    output = tmp_path / "out.png"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "plot", str(results), "-o", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert png_size(output)[0] > 0
    refused = subprocess.run(
        [sys.executable, "-m", "bench", "plot", str(tmp_path / "nope.json"), "-o", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and "cannot read" in refused.stderr


def test_a_suite_run_with_plot_draws_its_own_results(tmp_path: Path) -> None:
    """``--plot`` on a measuring suite, without ``--json``: a tiny in-memory layers run, its
    results passed to the plot through a scratch file, drawn right after."""
    output = tmp_path / "layers.png"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "layers", "--preset", "memory", "--scale", "0.01",
         "--repeat", "1", "--scenario", "send_receive", "--quiet", "--plot", str(output)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert png_size(output)[0] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers.png"]  # no file left behind
