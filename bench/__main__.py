"""``python -m bench SUITE [options]``: run a benchmark suite and print its table.

Suites register here as ``name -> (module, help)``; a suite module provides
``add_arguments(parser)`` and ``main(args, parser, argv) -> exit status``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUITES: dict[str, tuple[str, str]] = {
    "layers": ("bench.layers", "channel layers: towpath beside Channels' and channels_redis'"),
    "servers": ("bench.servers", "interface servers: towpath serve beside uvicorn, hypercorn, ..."),
    "decoupled": ("bench.decoupled", "HTTP through Redis and a worker beside direct mode"),
}


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
        sub.set_defaults(_parser=sub)
    args = parser.parse_args(argv)
    status: int = modules[args.suite].main(args, args._parser, argv)
    return status


if __name__ == "__main__":
    sys.exit(main())
