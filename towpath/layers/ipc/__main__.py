"""``python -m towpath.layers.ipc [--prefix P] [--directory D] [--check]``: what an IPC store
holds (its queues, their messages and waiters, its groups), or whether it is sound."""

from __future__ import annotations

import argparse
import json
import os
import sys

from towpath.layers.ipc.check import check_store, describe_store
from towpath.layers.ipc.store import default_directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m towpath.layers.ipc", description=__doc__)
    parser.add_argument("--prefix", default="towpath", help="the layer's prefix")
    parser.add_argument("--directory", default=None, help="the layer's directory")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 on problems")
    args = parser.parse_args(argv)
    base = args.directory or default_directory()
    path = os.path.join(os.path.abspath(base), f"towpath-ipc-{args.prefix}")
    if not os.path.isdir(path):
        print(f"no IPC store at {path}", file=sys.stderr)
        return 2
    if args.check:
        problems = check_store(path)
        for problem in problems:
            print(problem)
        if not problems:
            print(f"{path}: ok")
        return 1 if problems else 0
    print(json.dumps(describe_store(path), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
