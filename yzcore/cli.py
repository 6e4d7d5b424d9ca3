"""The ``yz`` command line.

Only ``yz version`` exists so far; the node, bootstrap, bridge, diagnostics
and simulator commands arrive with their subsystems.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

import yzcore

__all__ = ["main"]


def _version(_: argparse.Namespace) -> int:
    impl = "compiled (Cython)" if yzcore.USE_EXTENSIONS else "pure-Python twins"
    print(f"yzcore {yzcore.__version__}")
    print(f"core: {impl}")
    print(f"python: {platform.python_implementation()} {platform.python_version()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yz", description="yzcore: a Kademlia DHT network.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    version = sub.add_parser("version", help="print the version and which core implementation runs")
    version.set_defaults(func=_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
