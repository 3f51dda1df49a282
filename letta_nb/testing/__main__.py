"""``python -m letta_nb.testing [--port N] [--config JSON]``: serve the loopback server until stdin closes.

Prints the base URL on the first line of stdout. ``--config`` is a JSON object with optional keys
``latency``, ``limits``, ``faults`` (dicts of their dataclass fields), ``vectors``, ``dim``, ``offline`` (the
offline model spec chat answers follow, e.g. ``"offline?reply=content"``) and ``reasoning_field``. Use it to
point another process (a notebook, ``curl``) at a keyless OpenAI-compatible endpoint, or to keep the
server's CPU out of a benchmark's process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from letta_nb.testing.loopback import Faults, Latency, Limits, LoopbackServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m letta_nb.testing", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--config", default="{}", help="JSON: latency, limits, faults, vectors, dim")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config)
    server = LoopbackServer(latency=Latency(**cfg.get("latency", {})), limits=Limits(**cfg.get("limits", {})),
                            faults=Faults(**cfg.get("faults", {})), vectors=cfg.get("vectors", "hash"),
                            dim=cfg.get("dim", 384), port=args.port, offline=cfg.get("offline", "offline"),
                            reasoning_field=cfg.get("reasoning_field", "reasoning_content"))
    with server:
        print(server.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            sys.stdin.read()  # until the parent closes our stdin (or Ctrl-D)
    return 0


if __name__ == "__main__":
    sys.exit(main())
