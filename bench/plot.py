"""``python -m bench plot RESULTS.json ... -o PLOT.png``: the benchmark tables as a bar chart.

Reads what ``python -m bench layers|servers|decoupled --json FILE`` writes (or a JSON list of
such documents, as ``docs/benchmarks.json``) and draws one panel per table, so a reader sees
at a glance where towpath stands beside its peers:

* **layers**: one panel of ratios, *subject vs peer* for every scenario and metric, on a log
  scale with a line at 1x (above 1x: the subject is better). Ratios, because the rows mix
  msgs/s and milliseconds;
* **servers**: one panel per scenario with its compared figure (requests/s, round trips/s,
  KiB per idle WebSocket) per server;
* **decoupled**: requests/s per configuration, with each one's share of direct mode's.

The subject (the first layer, server or configuration of the run) is drawn in colour, peers in
grey. A document may carry a ``"title"`` (the panel's title) and a ``"source"`` (a footnote).
Every suite also takes ``--plot PNG`` to draw its own results right after the run.

matplotlib (in the ``dev`` extras) is imported only here, with the non-interactive Agg backend.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import format_number, format_ratio

__all__ = ["Bar", "Panel", "add_arguments", "load", "main", "panels", "plot", "render_file"]

SUBJECT_COLOUR = "#1f6fb2"
PEER_COLOUR = "#9a9a9a"
#: one colour per peer in a ratio panel
RATIO_COLOURS = ["#1f6fb2", "#e08a2c", "#3f9a4a", "#8e5ab5"]


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: its label on the axis, its value, the text drawn at its end, its series."""

    label: str
    value: float
    text: str
    series: int = 0  # 0: the subject; 1, 2, ...: peers, in the order of the run


@dataclass(slots=True)
class Panel:
    """One chart: bars in table order, top to bottom."""

    title: str
    xlabel: str
    bars: list[Bar] = field(default_factory=list)
    log: bool = False  # log scale with a reference line at 1 (ratios)
    legend: list[str] = field(default_factory=list)  # series names, when there are several
    note: str = ""


class PlotError(Exception):
    """A results file that cannot be drawn; the message says which and why."""


# -- reading results ---------------------------------------------------------------------------


def load(path: str | Path) -> list[dict[str, Any]]:
    """The result documents in ``path``: one suite's ``--json`` output or a list of them."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PlotError(f"cannot read results file {path}: {exc}") from None
    documents = data if isinstance(data, list) else [data]
    for document in documents:
        if not isinstance(document, dict):
            raise PlotError(f"{path}: expected a JSON object per result document")
        suite(document, str(path))
    return documents


def suite(document: dict[str, Any], source: str = "results") -> str:
    """Which suite wrote ``document``: its ``"suite"`` key, else told by its shape."""
    if isinstance(document.get("suite"), str):
        return str(document["suite"])
    if isinstance(document.get("layers"), list) and isinstance(document.get("scenarios"), list):
        return "layers"
    if isinstance(document.get("scenarios"), dict):
        return "servers"
    if isinstance(document.get("configurations"), dict):
        return "decoupled"
    raise PlotError(
        f"{source}: not a results document of python -m bench layers, servers or decoupled "
        "(write one with --json FILE)"
    )


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def _layer_panels(document: dict[str, Any]) -> list[Panel]:
    names = [layer["name"] for layer in document["layers"]]
    subject, peers = names[0], names[1:]
    meta = document.get("meta", {})
    title = document.get("title") or f"Channel layers ({meta.get('preset') or 'custom'})"
    panel = Panel(
        f"{title}: {subject} vs {peers[0] if len(peers) == 1 else 'peers'}",
        f"speed-up of {subject} (log scale; above 1x: {subject} is better)",
        log=True,
        legend=[f"vs {peer}" for peer in peers],
        note=document.get("source", ""),
    )
    for scenario in document["scenarios"]:
        for metric in scenario["metrics"]:
            label = f"{scenario['name']} {metric['key']}".replace("throughput", "").strip()
            for index, peer in enumerate(peers, start=1):
                ratio = _number(scenario.get("ratios", {}).get(peer, {}).get(metric["key"]))
                if ratio is not None:
                    panel.bars.append(Bar(label, ratio, format_ratio(ratio), index))
    if not panel.bars:
        raise PlotError(f"{title}: no ratios to draw (needs at least two layers)")
    return [panel]


def _server_panels(document: dict[str, Any]) -> list[Panel]:
    from bench.procs import SCENARIOS
    from bench.servers import COLUMNS

    result = []
    for scenario, servers in document["scenarios"].items():
        column = next((c for c in COLUMNS.get(scenario, []) if c.ratio is not None), None)
        if column is None or not servers:
            continue
        better = "higher" if column.ratio else "lower"
        described = SCENARIOS.get(scenario, scenario)
        panel = Panel(
            f"{document['title']}: {described}" if document.get("title") else described,
            f"{column.header} ({better} is better)",
            note=document.get("source", ""),
        )
        for index, (server, figures) in enumerate(servers.items()):
            value = _number(figures.get("median", {}).get(column.key))
            if value is not None:
                text = format_number(value, column.unit)
                panel.bars.append(Bar(server, value, text, 0 if index == 0 else 1))
        if panel.bars:
            result.append(panel)
    if not result:
        raise PlotError("servers results: no scenario has figures to draw")
    return result


def _decoupled_panels(document: dict[str, Any]) -> list[Panel]:
    configurations = document["configurations"]
    direct = _number(configurations.get("direct", {}).get("median", {}).get("rps"))
    panel = Panel(
        document.get("title") or "HTTP through Redis and a worker (decoupled) beside direct mode",
        "requests/s (higher is better); in brackets: share of direct mode's",
        note=document.get("source", ""),
    )
    for name, figures in configurations.items():
        value = _number(figures.get("median", {}).get("rps"))
        if value is None:
            continue
        text = format_number(value, "/s")
        if direct and name != "direct":
            text += f" ({value / direct:.0%})"
        series = 0 if name.startswith(("direct", "decoupled")) else 1  # towpath's, or a peer
        panel.bars.append(Bar(name, value, text, series))
    if not panel.bars:
        raise PlotError("decoupled results: no configuration has figures to draw")
    return [panel]


def panels(documents: Sequence[dict[str, Any]]) -> list[Panel]:
    """The panels for ``documents``, in order."""
    builders = {
        "layers": _layer_panels,
        "servers": _server_panels,
        "decoupled": _decoupled_panels,
    }
    result: list[Panel] = []
    for document in documents:
        kind = suite(document)
        if kind not in builders:
            raise PlotError(f"unknown suite {kind!r}; known: {', '.join(builders)}")
        result += builders[kind](document)
    return result


# -- drawing -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotError(
            "matplotlib is not installed: pip install matplotlib (it is in towpath's dev extras)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(ax: Any, panel: Panel, slots: int) -> None:
    """Draw ``panel`` on ``ax`` with room for ``slots`` rows (so bars of panels side by side
    are equally thick)."""
    labels = list(dict.fromkeys(bar.label for bar in panel.bars))
    series = sorted({bar.series for bar in panel.bars})
    grouped = panel.log and len(series) > 1
    height = 0.8 / len(series) if grouped else 0.7
    top = max(bar.value for bar in panel.bars)
    for bar in panel.bars:
        row = labels.index(bar.label)
        offset = (series.index(bar.series) - (len(series) - 1) / 2) * height if grouped else 0.0
        if panel.log:
            colour = RATIO_COLOURS[(bar.series - 1) % len(RATIO_COLOURS)]
        else:
            colour = SUBJECT_COLOUR if bar.series == 0 else PEER_COLOUR
        left = 1.0 if panel.log else 0.0
        ax.barh(row + offset, bar.value - left, height, left=left, color=colour)
        ax.text(
            bar.value * (1.04 if panel.log else 1.0) + (0 if panel.log else top * 0.01),
            row + offset,
            bar.text,
            va="center",
            ha="left" if bar.value >= left else "right",
            fontsize=7,
        )
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(max(slots, len(labels)) - 0.5, -0.5)  # top to bottom, in table order
    ax.set_title(panel.title, fontsize=9, loc="left", wrap=True)
    ax.set_xlabel(panel.xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    if panel.log:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
        lowest = min(bar.value for bar in panel.bars)
        ax.set_xlim(min(0.5, lowest / 1.5), top * 3)
        ax.axvline(1.0, color="black", linewidth=0.8)
        if panel.legend and len(series) > 1:
            from matplotlib.patches import Patch

            handles = [
                Patch(color=RATIO_COLOURS[i % len(RATIO_COLOURS)], label=name)
                for i, name in enumerate(panel.legend)
            ]
            ax.legend(handles=handles, fontsize=7, loc="best")
    else:
        from matplotlib.ticker import FuncFormatter

        ax.set_xlim(0, top * 1.25)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    if panel.note:
        ax.annotate(
            panel.note,
            (0, 0),
            (0, -30),
            xycoords="axes fraction",
            textcoords="offset points",
            fontsize=6,
            color="#555555",
            va="top",
        )


def plot(panel_list: Sequence[Panel], output: str | Path, title: str = "") -> Path:
    """Draw ``panel_list`` two per row into the PNG ``output``; returns its path."""
    if not panel_list:
        raise PlotError("nothing to draw")
    plt = _pyplot()
    columns = 1 if len(panel_list) == 1 else 2
    rows = [list(panel_list[i : i + columns]) for i in range(0, len(panel_list), columns)]
    heights = [max(len({b.label for b in p.bars}) for p in row) * 0.28 + 1.3 for row in rows]
    figure = plt.figure(figsize=(7.5 * columns, sum(heights) + (0.5 if title else 0.2)))
    grid = figure.add_gridspec(len(rows), columns, height_ratios=heights)
    for r, row in enumerate(rows):
        slots = max(len({bar.label for bar in panel.bars}) for panel in row)
        for c, panel in enumerate(row):
            _draw(figure.add_subplot(grid[r, c]), panel, slots)
    if title:
        figure.suptitle(title, fontsize=11, x=0.01, ha="left")
    figure.tight_layout()
    path = Path(output)
    figure.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(figure)
    return path


def render_file(
    inputs: Sequence[str | Path], output: str | Path, title: str = "", save: str | Path = ""
) -> Path:
    """Load every results file in ``inputs`` and draw them into ``output``; with ``save``,
    also write the documents drawn there, as one JSON list (a file ``load`` reads back)."""
    documents = [document for path in inputs for document in load(path)]
    path = plot(panels(documents), output, title)
    if save:
        text = json.dumps(documents, indent=1, ensure_ascii=False) + "\n"
        Path(save).write_text(text, encoding="utf-8")
    return path


# -- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results", nargs="+", metavar="RESULTS.json", help="files written by --json"
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="PNG", help="the PNG file to write"
    )
    parser.add_argument("--title", default="", help="a title above the panels")
    parser.add_argument(
        "--save",
        default="",
        metavar="JSON",
        help="also write the documents drawn as one JSON list (as docs/benchmarks.json)",
    )


def main(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    try:
        path = render_file(args.results, args.output, args.title, args.save)
    except PlotError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
