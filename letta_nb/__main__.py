"""``python -m letta_nb demo`` (the offline demo) and ``python -m letta_nb version``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m letta_nb", description="letta_nb command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a scripted offline conversation showing memory and step timings")
    demo.add_argument("--store", help="store path (default: a temporary file)")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "version":
        import letta_nb

        print(letta_nb.__version__)
        return 0
    from letta_nb._demo import run

    run(args.store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
