"""``python -m letta_nb.bench NAME [NAME ...] [--quick] [--json]``: run benchmarks, report ratios."""

from __future__ import annotations

import argparse
import importlib
import sys

from letta_nb.bench._report import dump

BENCHMARKS = {"step": "letta_nb.bench.step", "concurrency": "letta_nb.bench.concurrency",
              "embed": "letta_nb.bench.embed", "vector": "letta_nb.bench.vector", "ingest": "letta_nb.bench.ingest"}
BENCHMARKS["startup"] = "letta_nb.bench.startup"  # %load_ext letta_nb in a fresh interpreter
BENCHMARKS["sandbox"] = "letta_nb.bench.sandbox"  # one sandboxed tool call against a bare `python -I`
BENCHMARKS["multikernel"] = "letta_nb.bench.multikernel"  # P processes on one store vs one process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m letta_nb.bench", description=__doc__)
    parser.add_argument("names", nargs="+", metavar="NAME", help=f"one or more of: {', '.join(BENCHMARKS)}, all")
    parser.add_argument("--quick", action="store_true", help="a smaller size of the same workload")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; available: {', '.join(BENCHMARKS)}")
    results = []
    for name in names:
        result = importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
        results.append(result)
        if not args.json:
            print(result.table(), flush=True)
    if args.json:
        print(dump(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
