"""``python -m letta_nb.bench NAME [NAME ...] [--quick] [--json] [--backend postgres [--redis]]``: run benchmarks,
report ratios. ``--backend``/``--redis`` apply to the benchmarks that use a store (bench/_backend.py);
``--agents N --messages M`` size the ones that take them and ``--rounds R`` repeats them (concurrency)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys

from letta_nb.bench._backend import BACKENDS, BenchBackend
from letta_nb.bench._report import dump

BENCHMARKS = {"step": "letta_nb.bench.step", "concurrency": "letta_nb.bench.concurrency",
              "embed": "letta_nb.bench.embed", "vector": "letta_nb.bench.vector", "ingest": "letta_nb.bench.ingest"}
BENCHMARKS["startup"] = "letta_nb.bench.startup"  # %load_ext letta_nb in a fresh interpreter
BENCHMARKS["sandbox"] = "letta_nb.bench.sandbox"  # one sandboxed tool call against a bare `python -I`
BENCHMARKS["multikernel"] = "letta_nb.bench.multikernel"  # P processes on one store vs one process
BENCHMARKS["retrieval"] = "letta_nb.bench.retrieval"  # recall@k of text/vector/hybrid search, batched inserts
BENCHMARKS["serve"] = "letta_nb.bench.serve"  # the letta-client SDK over HTTP vs the in-process API


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m letta_nb.bench", description=__doc__)
    parser.add_argument("names", nargs="+", metavar="NAME", help=f"one or more of: {', '.join(BENCHMARKS)}, all")
    parser.add_argument("--quick", action="store_true", help="a smaller size of the same workload")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite",
                        help="the store: a SQLite file (default) or a throw-away PostgreSQL + pgvector server")
    parser.add_argument("--redis", action="store_true", help="coordinate through a throw-away Redis (postgres)")
    parser.add_argument("--agents", type=_positive, metavar="N", help="agents talking at once (concurrency)")
    parser.add_argument("--messages", type=_positive, metavar="M", help="messages per agent (concurrency)")
    parser.add_argument("--rounds", type=_positive, metavar="R",
                        help="runs of the workload; the round with the median ratio is reported (concurrency)")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; available: {', '.join(BENCHMARKS)}")
    runs = {name: importlib.import_module(BENCHMARKS[name]).run for name in names}
    storeless = [n for n, run in runs.items() if "backend" not in inspect.signature(run).parameters]
    if (args.backend != "sqlite" or args.redis) and storeless:
        parser.error(f"bench {storeless[0]} uses no store: --backend/--redis do not apply to it")
    if args.redis and args.backend != "postgres":
        parser.error("--redis coordinates kernels of a PostgreSQL store: add --backend postgres")
    size = {k: v for k, v in (("agents", args.agents), ("messages", args.messages), ("rounds", args.rounds))
            if v is not None}
    unsized = [n for n, run in runs.items() if size and not set(size) <= set(inspect.signature(run).parameters)]
    if unsized:
        parser.error(f"bench {unsized[0]} takes no --{'/--'.join(size)}: run it alone or without them")
    results = []
    with BenchBackend(args.backend, redis=args.redis) as backend:
        for name, run in runs.items():
            kwargs = {"quick": args.quick, **size, **({} if name in storeless else {"backend": backend})}
            result = run(**kwargs)
            results.append(result)
            if not args.json:
                print(result.table(), flush=True)
    if args.json:
        print(dump(results))
    return 0


def _positive(text: str) -> int:
    """An ``--agents``/``--messages``/``--rounds`` count: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
