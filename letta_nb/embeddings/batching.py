"""How a list of texts becomes embedding requests: drop empties, fix oversized inputs, pack batches.

Pure planning, no I/O. Invariants:

- every non-empty input becomes one or more *pieces* (more than one only when it is over the per-input
  token limit and ``oversize="split"``); the embedder gives each input one vector, the token-weighted mean
  of its pieces' vectors, renormalised, as OpenAI's cookbook does for long texts;
- batches hold consecutive pieces, so results fall back into input order by position;
- a batch fits ``max_inputs`` and ``max_request_tokens x safety`` by the packing estimate
  (:mod:`letta_nb.embeddings.tokens`); batches are balanced so the request count is a multiple of the
  concurrency: with 8 slots, 16 requests of 1250 inputs finish sooner than 10 of 2000 (waves of 8 + 2).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

from letta_nb.embeddings.tokens import TokenCounter

__all__ = ["Piece", "Plan", "plan_batches", "split_oversized", "split_deferred", "pack", "MIN_BATCH"]

MIN_BATCH = 16  # below this, one more request costs more than the parallelism gains


class Piece(NamedTuple):  # a tuple: 20k of them are made before a call's first request goes out
    owner: int  # input index
    text: str
    tokens: int  # packing estimate (exact when the input was counted)


@dataclasses.dataclass
class Plan:
    pieces: list[Piece]
    batches: list[list[int]]  # piece ids
    empty: list[int]
    truncated: list[int]
    split: list[int]
    tokens: int
    deferred: list[int] = dataclasses.field(default_factory=list)  # owners still to split (see plan_batches)


def split_oversized(text: str, counter: TokenCounter, max_input_tokens: int, oversize: str,
                    estimate: int | None = None) -> list[str] | None:
    """None when ``text`` fits; else its pieces (``split``) or its first ``max_input_tokens`` (``truncate``).
    ``estimate``: ``counter.estimate(text)`` when the caller has it already."""
    if (counter.estimate(text) if estimate is None else estimate) <= max_input_tokens // 4:  # >= 1 byte a token
        return None
    pieces = counter.pieces_if_over(text, max_input_tokens)
    if pieces is None:
        return None
    return pieces[:1] if oversize == "truncate" else pieces


def split_deferred(texts: Sequence[str], owners: list[int], counter: TokenCounter, max_input_tokens: int,
                   oversize: str) -> tuple[list[Piece], list[int], list[int]]:
    """Pieces of the inputs :func:`plan_batches` deferred (BPE work: run it in a thread, it drops the GIL)."""
    pieces: list[Piece] = []
    truncated: list[int] = []
    split: list[int] = []
    for i in owners:
        parts = split_oversized(texts[i], counter, max_input_tokens, oversize)
        if parts is None:
            pieces.append(Piece(i, texts[i], min(max_input_tokens, counter.estimate(texts[i]))))
            continue
        (truncated if oversize == "truncate" else split).append(i)
        pieces.extend(Piece(i, p, min(max_input_tokens, max(counter.estimate(p), 1))) for p in parts)
    return pieces, truncated, split


def plan_batches(texts: Sequence[str], counter: TokenCounter, *, max_inputs: int, max_request_tokens: int,
                 max_input_tokens: int, concurrency: int = 1, oversize: str = "split",
                 safety: float = 0.95, defer_oversized: bool = False) -> Plan:
    """Batches for ``texts``. With ``defer_oversized``, inputs that might exceed the per-input limit are
    not tokenised here but listed in ``Plan.deferred`` (one batch is left for them): the caller splits them
    in a thread while the other batches are on the wire."""
    pieces: list[Piece] = []
    empty: list[int] = []
    truncated: list[int] = []
    split: list[int] = []
    deferred: list[int] = []
    for i, text in enumerate(texts):
        if not text or text.isspace():  # blank; strip() would copy every text
            empty.append(i)
            continue
        estimate = counter.estimate(text)  # once: it is a pass over the text's bytes
        if defer_oversized and estimate > max_input_tokens // 4:  # might be oversized: tokenise later
            deferred.append(i)
            continue
        parts = split_oversized(text, counter, max_input_tokens, oversize, estimate)
        if parts is None:
            pieces.append(Piece(i, text, estimate))
            continue
        (truncated if oversize == "truncate" else split).append(i)
        pieces.extend(Piece(i, p, min(max_input_tokens, max(counter.estimate(p), 1))) for p in parts)
    budget = max(1, int(max_request_tokens * safety))
    total = sum(p.tokens for p in pieces)
    n = len(pieces)
    later = sum(counter.estimate(texts[i]) for i in deferred)
    fewest = max(math.ceil(n / max_inputs), math.ceil((total + later) / budget), 1)
    slots = max(1, concurrency)
    wanted = max(fewest, min(slots, math.ceil(n / MIN_BATCH))) if fewest <= slots else math.ceil(fewest / slots) * slots
    if deferred and wanted > 1:
        wanted -= max(1, math.ceil(later / budget))  # leave room for the deferred inputs' batch
    wanted = max(1, wanted)
    slack = 1.05  # a little slack so a heavy piece does not leave a straggler batch; grown until it fits
    while True:
        cap_inputs = min(max_inputs, max(1, math.ceil(n / wanted * (1 if slack < 1.2 else slack))))
        cap_tokens = min(budget, max(1, math.ceil(total / wanted * slack)))
        batches = pack(pieces, cap_inputs, cap_tokens)
        if len(batches) <= wanted or (cap_inputs == max_inputs and cap_tokens == budget) or slack > 2:
            break
        slack += 0.1
    return Plan(pieces, batches, empty, truncated, split, total, deferred)


def pack(pieces: list[Piece], cap_inputs: int, cap_tokens: int) -> list[list[int]]:
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for pid, piece in enumerate(pieces):
        if current and (len(current) >= cap_inputs or used + piece.tokens > cap_tokens):
            batches.append(current)
            current, used = [], 0
        current.append(pid)
        used += piece.tokens
    if current:
        batches.append(current)
    return batches
