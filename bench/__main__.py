"""``python -m bench SUITE [options]``: run a benchmark suite and print its table.

Suites register here as ``name -> (module, help)``; a suite module provides
``add_arguments(parser)`` and ``main(args, parser, argv) -> exit status``. Every measuring
suite also takes ``--plot PNG``: its results drawn as a bar chart (``bench/plot.py``) once the
run is done; ``python -m bench plot RESULTS.json -o PNG`` draws results saved with ``--json``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

SUITES: dict[str, tuple[str, str]] = {
    "layers": ("bench.layers", "channel layers: towpath beside Channels' and channels_redis'"),
    "servers": ("bench.servers", "interface servers: towpath serve beside uvicorn, hypercorn, ..."),
    "decoupled": ("bench.decoupled", "HTTP through Redis and a worker beside direct mode"),
    "processes": ("bench.processes", "two processes over the IPC and Redis layers"),
    "restarts": (
        "bench.restarts",
        "redeploying a live WebSocket chat: towpath beside daphne + Channels 4",
    ),
    "attacks": (
        "bench.attacks",
        "hostile clients and broken environments: memory, CPU, answers beside the peers",
    ),
    "fanout": (
        "bench.fanout",
        "one event to thousands of WebSockets in a group: towpath beside Channels 4",
    ),
    "plot": ("bench.plot", "draw results saved with --json as a PNG bar chart"),
}


def _plot(args: argparse.Namespace) -> int:
    """Draw the run's ``--json`` file into ``--plot``; 2 when there is nothing to draw."""
    from bench.plot import PlotError, render_file

    if not Path(args.json).is_file() or Path(args.json).stat().st_size == 0:
        print("--plot: the run saved no results (nothing was measured)", file=sys.stderr)
        return 2
    try:
        path = render_file([args.json], args.plot)
    except PlotError as exc:
        print(f"--plot: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="towpath benchmarks (tables, not tests)"
    )
    subparsers = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    modules = {}
    for name, (module_name, help_text) in SUITES.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        # plot.py draws throughput/latency tables only
        if name not in ("plot", "restarts", "processes", "attacks", "fanout"):
            sub.add_argument(
                "--plot",
                metavar="PNG",
                help="also draw the results as a bar chart into this PNG (needs matplotlib)",
            )
        sub.set_defaults(_parser=sub)
    args = parser.parse_args(argv)
    if getattr(args, "plot", None) is None:
        status: int = modules[args.suite].main(args, args._parser, argv)
        return status
    with tempfile.TemporaryDirectory(prefix="bench-plot-") as scratch:
        if not args.json:  # the figures travel through the suite's own --json output
            args.json = str(Path(scratch) / "results.json")
        status = modules[args.suite].main(args, args._parser, argv)
        plotted = _plot(args)
    return status or plotted


if __name__ == "__main__":
    sys.exit(main())
