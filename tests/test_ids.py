"""Ids are Letta-shaped (``prefix-<uuid4>``), unique, and differ between forked processes."""

from __future__ import annotations

import os
import uuid

from letta_nb.store.store import new_id


def test_ids_are_valid_uuid4_with_prefix():
    ids = [new_id("message") for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for i in ids[:500]:
        prefix, _, rest = i.partition("-")
        u = uuid.UUID(rest)
        assert prefix == "message" and u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == rest


def test_forked_child_does_not_repeat_the_parents_ids():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.write(w, new_id("x").encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 100).decode()
    assert child != new_id("x")
