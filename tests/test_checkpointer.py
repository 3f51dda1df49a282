"""WAL checkpoints run on the checkpointer's thread, never inside a step's commit on the runtime loop."""

from __future__ import annotations

import os
import time

import letta_nb
from tests.store_query import query


def _wal_growth(path, every_rows: int, batches: int = 6, turns: int = 25) -> tuple[int, int]:
    """(bytes the WAL file grew after the first batch, checkpoints run) for a store checkpointed every N rows."""
    with letta_nb.connect(path) as client:
        agent = client.agents.create("ck").id
        checkpointer = client.runtime.store.writer.checkpointer
        checkpointer.every_rows = every_rows
        sizes = []
        for b in range(batches):
            for i in range(turns):
                client.agents.messages.create(agent, f"note {b}.{i}: the kettle is on shelf {i}")
            time.sleep(0.05)  # let the thread finish (a PASSIVE checkpoint takes well under this)
            sizes.append(os.path.getsize(f"{path}-wal"))
        assert checkpointer.errors == 0
        stored = query(str(path), "SELECT count(*) FROM messages WHERE agent_id = ? AND role = 'user'", agent)
        assert stored == [(batches * turns,)]
        return sizes[-1] - sizes[0], checkpointer.checkpoints


def test_wal_is_checkpointed_by_the_thread_not_by_commits(tmp_path):
    never_growth, never_checkpoints = _wal_growth(tmp_path / "never.db", every_rows=10**9)
    often_growth, often_checkpoints = _wal_growth(tmp_path / "often.db", every_rows=40)
    # Step commits never checkpoint (the WAL only grows) ...
    assert never_checkpoints == 0 and never_growth > 0
    # ... the thread does, and after a complete checkpoint writers restart the WAL from its beginning.
    assert often_checkpoints >= 6
    assert often_growth < never_growth / 2
