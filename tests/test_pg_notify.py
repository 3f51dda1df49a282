"""Change notices between processes on PostgreSQL without Redis: NOTIFY out, LISTEN in (store/postgres/notices.py).

The widget's memory panel refreshes from ``runtime.leases.subscribe``; with Redis, pub/sub carries other
processes' changes to it, and without Redis PostgreSQL must. Checked with two real processes on one real
server: a turn and a block edit in this process reach a subscriber in a child process; the child's listening
connection, killed by the server, comes back and delivers again; closing a client closes its listener.
Every wait is for a condition (a line the child printed, a row of ``pg_stat_activity``), never a sleep.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import textwrap
import threading
from typing import Any

import sqlalchemy as sa
from agent_helpers import wait_until

import letta_nb
from letta_nb.store.postgres.notices import LISTENER_NAME

# The other process: subscribes, says when its listener is up (again), prints every notice it hears.
_CHILD = textwrap.dedent("""
    import json, sys, time
    import letta_nb

    with letta_nb.connect(sys.argv[1]) as c:
        notices = c.runtime.leases.notices
        c.runtime.leases.subscribe(lambda n: print(json.dumps({"notice": n}), flush=True))
        ups = 0
        for line in sys.stdin:  # "up": report once the listener is connected (after `reconnects` reconnects)
            want = json.loads(line)
            while not (notices.listening and notices.reconnects >= want["reconnects"]):
                time.sleep(0.002)
            print(json.dumps({"up": notices.reconnects}), flush=True)
""")


class _Child:
    def __init__(self, url: str):
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.notices: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "notice" in msg:
                self.notices.append(msg["notice"])
            else:
                self.lines.put(msg)

    def up(self, reconnects: int = 0) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"reconnects": reconnects}) + "\n")
        self.proc.stdin.flush()
        return int(self.lines.get(timeout=60)["up"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _listeners(server: Any, url: str) -> int:
    database = sa.make_url(url).database
    return int(server.admin(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{LISTENER_NAME}' "
                            f"AND datname = '{database}'")[0][0])


def test_a_change_in_one_process_reaches_a_subscriber_in_another_by_notify(pg_store_url, pg_server):
    with letta_nb.connect(pg_store_url) as a:
        a.runtime.leases.notices.recheck_s = 0.0  # see the child's listener at once (default: within a second)
        agent_id = a.agents.create("a", model="offline").id
        child = _Child(pg_store_url)
        try:
            child.up()
            a.agents.messages.create("a", "hello there")
            last_seq = a.agents.retrieve("a").last_seq
            wait_until(lambda: any(n["agent_id"] == agent_id and n["last_seq"] == last_seq for n in child.notices),
                       "the turn's notice to reach the other process", timeout=30)
            notice = [n for n in child.notices if n["agent_id"] == agent_id][-1]
            assert notice["holder"] == a.runtime.leases.holder and notice["pid"] != child.proc.pid
            assert a.runtime.leases.notices.sent >= 1

            # the server drops the listener's connection: it reconnects and delivers again
            seen = len(child.notices)
            pg_server.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                            f"'{LISTENER_NAME}' AND datname = '{sa.make_url(pg_store_url).database}'")
            assert child.up(reconnects=1) >= 1
            a.agents.blocks.update("a", "human", value="Name: Ada")
            wait_until(lambda: any(n["agent_id"] == agent_id for n in child.notices[seen:]),
                       "a block edit's notice to reach the reconnected listener", timeout=30)
        finally:
            child.close()
        assert child.proc.returncode == 0


def test_notices_go_out_only_while_another_runtime_listens_and_come_back_only_to_others(pg_store_url, pg_server):
    a, b = letta_nb.connect(pg_store_url), letta_nb.connect(pg_store_url)
    try:
        na, nb = a.runtime.leases.notices, b.runtime.leases.notices
        na.recheck_s = 0.0  # count the listeners at every send (default: trusted for a second)
        agent_id = a.agents.create("a", model="offline").id
        seen_a: list[dict[str, Any]] = []
        a.runtime.leases.subscribe(seen_a.append)
        wait_until(lambda: na.listening and _listeners(pg_server, pg_store_url) == 1, "a's LISTEN connection")
        a.agents.messages.create("a", "hi")
        wait_until(lambda: na.unheard >= 1, "a's notice to be counted unheard")
        assert na.sent == 0  # only a listens: nothing sent
        assert any(n["agent_id"] == agent_id for n in seen_a)  # a's own subscriber heard it directly

        seen_b: list[dict[str, Any]] = []
        b.runtime.leases.subscribe(seen_b.append)
        wait_until(lambda: nb.listening and _listeners(pg_server, pg_store_url) == 2, "b's LISTEN connection")
        direct = len(seen_a)
        a.agents.messages.create("a", "hi again")
        last_seq = a.agents.retrieve("a").last_seq
        wait_until(lambda: any(n["last_seq"] == last_seq for n in seen_b), "a's notice to reach b", timeout=30)
        wait_until(lambda: na.own >= 1, "a's own NOTIFY to come back to a's listener", timeout=30)
        assert na.sent >= 1 and na.received == 0  # a's own came back and was dropped, not delivered twice
        assert len([n for n in seen_a if n["last_seq"] == last_seq]) == 1 and len(seen_a) > direct
    finally:
        a.close()
        b.close()
    wait_until(lambda: _listeners(pg_server, pg_store_url) == 0, "the listeners to close with their clients")


def test_a_sqlite_store_has_no_notices_channel(tmp_path):
    with letta_nb.connect(tmp_path / "s.db") as c:
        assert c.runtime.leases.notices is None
