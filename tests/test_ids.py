"""Ids are Letta-shaped (``prefix-<uuid>``, here version 7: time-ordered), unique, and differ between forked
processes."""

from __future__ import annotations

import functools
import operator
import os
import time
import uuid

from letta_nb.store.ids import new_id


def test_ids_are_valid_uuid7_with_prefix_and_carry_their_creation_time():
    before = time.time_ns() // 1_000_000
    ids = [new_id("message") for _ in range(5000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for i in ids:
        prefix, _, rest = i.partition("-")
        u = uuid.UUID(rest)
        assert prefix == "message" and u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == rest
        assert before <= u.int >> 80 <= after  # RFC 9562: the top 48 bits are the Unix time in ms
    # The 74 random bits vary: no bit below the version field is stuck across 5000 ids.
    low = [uuid.UUID(i.partition("-")[2]).int & ((1 << 76) - 1) for i in ids]
    stuck = ~functools.reduce(operator.or_, low) | functools.reduce(operator.and_, low)
    assert stuck & ((1 << 62) - 1) == 0 and (stuck >> 64) & 0xFFF == 0


def test_ids_made_in_later_milliseconds_sort_later():
    first = new_id("passage")
    time.sleep(0.003)
    second = new_id("passage")
    assert first < second  # so a primary-key index grows at its right edge


def test_forked_child_does_not_repeat_the_parents_ids():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.write(w, new_id("x").encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 100).decode()
    assert child != new_id("x")


def test_ids_are_the_former_128_bit_formula_for_the_same_time_and_random_bits(monkeypatch):
    """new_id formats each group from its own bits (faster); the text is the one the single 128-bit integer
    gave, so old and new ids sort and parse alike."""
    from letta_nb.store import ids

    def former(prefix: str, ms: int, r: int) -> str:
        low_62, uuid7_bits = (1 << 62) - 1, (7 << 76) | (2 << 62)
        h = f"{ms << 80 | (r >> 62) << 64 | r & low_62 | uuid7_bits:032x}"
        return f"{prefix}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    for ms in (0, 1, 1_764_633_600_123, (1 << 48) - 1):
        monkeypatch.setattr(ids.time, "time_ns", lambda ms=ms: ms * 1_000_000 + 999_999)
        for seed in range(50):
            ids._ids.seed(seed)
            r = ids._ids.getrandbits(74)
            ids._ids.seed(seed)
            assert ids.new_id("step") == former("step", ms, r)
