"""Redis coordination (runtime/redis_leases.py) on a real Redis and a real PostgreSQL, in one process.

Several clients in this process are several holders (each runtime has its own identity), so lease hand-overs,
the queue's order, the holder-only release and pub/sub are checked against the servers themselves. The
central claim: **correctness never depends on Redis** -- a Redis that lost every key (a restart, a flush)
hands the lease to a second holder, and the first holder's commit is refused by PostgreSQL's fence.
The multi-process variants (4 processes x 8 agents, Redis restarted mid-run, a holder SIGKILLed) are in
test_redis_multikernel.py.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from agent_helpers import on_loop, wait_until

import letta_nb
from letta_nb.errors import InvalidArgumentError, StaleCommitError, StoreError
from letta_nb.runtime.redis_leases import RedisAgentLeases, _keys
from letta_nb.store.backend import StepWrite


@pytest.fixture
def pg_redis(pg_store_url: str, redis_server: Any) -> Any:
    redis_server.restart()  # every test starts from an empty Redis
    return pg_store_url, redis_server


def _redis(server: Any) -> Any:
    import redis

    return redis.Redis.from_url(server.url, decode_responses=True)


def _done(client: letta_nb.Client, lease: Any) -> None:
    async def done() -> None:
        client.runtime.leases.done(lease)
    on_loop(client, done())


def _agent(client: letta_nb.Client, name: str = "a") -> str:
    return client.agents.create(name, model="offline").id


def test_connect_with_redis_takes_leases_in_redis_and_installs_the_token_in_the_store(pg_redis):
    url, server = pg_redis
    with letta_nb.connect(url, redis_url=server.url) as c:
        assert isinstance(c.runtime.leases, RedisAgentLeases)
        agent_id = _agent(c)
        c.agents.messages.create("a", "hello")
        lease = on_loop(c, c.runtime.leases.acquire(agent_id))
        value = _redis(server).get(_keys(agent_id)["lease"])
        assert value.startswith(f"{lease.token}|{c.runtime.leases.holder}|")  # SET NX PX: token|holder|pid|...
        assert 0 < _redis(server).pttl(_keys(agent_id)["lease"]) <= 30_000
        row = c.query("SELECT token, holder FROM agent_leases WHERE agent_id = $1", [agent_id])
        assert (int(row["token"][0]), row["holder"][0]) == (lease.token, c.runtime.leases.holder)
        _done(c, lease)
        events = letta_nb.probes.leases(c)["event"].tolist()
        assert "acquired" in events


def test_only_the_holder_releases_or_renews_the_redis_lease(pg_redis):
    url, server = pg_redis
    with letta_nb.connect(url, redis_url=server.url) as a, letta_nb.connect(url, redis_url=server.url) as b:
        agent_id = _agent(a)
        lease = on_loop(a, a.runtime.leases.acquire(agent_id))
        key = _keys(agent_id)["lease"]
        on_loop(b, b.runtime.leases._let_go(agent_id, lease.token))  # another holder, the same token: refused
        assert _redis(server).get(key).startswith(f"{lease.token}|{a.runtime.leases.holder}|")
        assert on_loop(b, b.runtime.leases._call("renew", [key], [f"{lease.token}|{b.runtime.leases.holder}|", 5]))\
            == 0
        assert _redis(server).pttl(key) > 1000  # b's pexpire to 5 ms did not touch a's key
        _done(a, lease)
        wait_until(lambda: _redis(server).get(key) is None, "a's idle lease to be released")


def test_a_redis_that_lost_every_key_cannot_make_a_stale_commit_land(pg_redis):
    url, server = pg_redis
    with letta_nb.connect(url, redis_url=server.url) as a, letta_nb.connect(url, redis_url=server.url) as b:
        agent_id = _agent(a)
        a.agents.messages.create("a", "one")
        lease = on_loop(a, a.runtime.leases.acquire(agent_id))  # a holds it, as a turn mid-model-call would
        _redis(server).flushall()  # Redis forgets the lease and its token counter (a restart without persistence)
        b.agents.messages.create("a", "two")  # b is granted token 1 by Redis; the store's row says more: raised
        b_token = int(b.query("SELECT token FROM agent_leases WHERE agent_id = $1", [agent_id])["token"][0])
        assert b_token > lease.token
        write = StepWrite(agent_id, fence=(lease.token, lease.last_seq), last_seq=lease.last_seq + 1)

        async def commit() -> None:
            try:
                await a.runtime.store.writer.submit(write)
            finally:
                a.runtime.leases.refused(lease)
        with pytest.raises(StaleCommitError):
            on_loop(a, commit())  # PostgreSQL's fence refuses a's commit
        assert "two" in [m.content for m in a.agents.messages.list("a") if m.role == "user"]
        a.agents.messages.create("a", "three")  # a takes the lease again (through Redis) and carries on
    with letta_nb.connect(url) as c:
        users = [m.content for m in c.agents.messages.list("a") if m.role == "user"]
        seqs = [m.seq for m in c.agents.messages.list("a")]
    assert users == ["one", "two", "three"] and seqs == list(range(1, len(seqs) + 1))


def test_waiters_are_granted_in_arrival_order(pg_redis):
    url, server = pg_redis
    clients = [letta_nb.connect(url, redis_url=server.url, lease_timeout=30) for _ in range(4)]
    try:
        holder, *waiters = clients
        agent_id = _agent(holder)
        lease = on_loop(holder, holder.runtime.leases.acquire(agent_id))
        granted: list[int] = []
        futures = []
        queue = _keys(agent_id)["queue"]
        for i, w in enumerate(waiters):
            async def take(w: Any = w, i: int = i) -> None:
                got = await w.runtime.leases.acquire(agent_id)
                granted.append(i)
                w.runtime.leases.done(got)
            futures.append(asyncio.run_coroutine_threadsafe(take(), w._thread.loop))
            wait_until(lambda i=i: _redis(server).zcard(queue) == i + 1, f"waiter {i} to queue")
        _done(holder, lease)  # a waiter is queued: given up at once
        for f in futures:
            f.result(timeout=60)
        assert granted == [0, 1, 2]
    finally:
        for c in clients:
            c.close()


def test_a_holder_whose_release_never_reached_redis_is_granted_its_key_again_with_waiters_queued(pg_redis):
    """A release lost on the way (the key stays until its ttl) must not lock the agent for that ttl: its
    holder queued behind a waiter that waits for the holder's own key held both for 30 s after a Redis
    restart (issue 12). The holder is granted it again at once and hands it over at its turn's end."""
    url, server = pg_redis
    with letta_nb.connect(url, redis_url=server.url, lease_timeout=5) as a, \
            letta_nb.connect(url, redis_url=server.url, lease_timeout=30) as b:
        agent_id = _agent(a)
        lease = on_loop(a, a.runtime.leases.acquire(agent_id))
        key, queue = _keys(agent_id)["lease"], _keys(agent_id)["queue"]
        a.runtime.leases._forget(lease)  # a let go in its own books; its release never reached Redis
        assert _redis(server).pttl(key) > 20_000

        async def take() -> int:
            got = await b.runtime.leases.acquire(agent_id)
            b.runtime.leases.done(got)
            return got.token
        waiting = asyncio.run_coroutine_threadsafe(take(), b._thread.loop)
        wait_until(lambda: _redis(server).zcard(queue) == 1, "b to queue behind a's key")
        again = on_loop(a, a.runtime.leases.acquire(agent_id))  # before: AgentBusyError after lease_timeout
        assert again.token > lease.token
        assert _redis(server).get(key).startswith(f"{again.token}|{a.runtime.leases.holder}|")
        assert not waiting.done()  # b still waits: a holds it ...
        _done(a, again)  # ... until a's turn ends (b is queued: given up at once)
        assert waiting.result(timeout=10) > again.token
        events = letta_nb.probes.leases(a)
        assert "timed_out" not in events["event"].tolist()


def test_a_release_right_after_a_redis_restart_reaches_redis(pg_redis):
    """A pooled connection from before the restart fails its next command; that command is retried on a new
    connection, so a release sent then is not lost (its key would hold the agent for a whole ttl)."""
    url, server = pg_redis
    with letta_nb.connect(url, redis_url=server.url) as a:
        agent_id = _agent(a)
        lease = on_loop(a, a.runtime.leases.acquire(agent_id))
        key = _keys(agent_id)["lease"]
        value = _redis(server).get(key)
        server.restart()  # every connection a's client pooled is now closed by the server
        _redis(server).set(key, value, px=30_000)  # the key as a's grant left it
        on_loop(a, a.runtime.leases._let_go(agent_id, lease.token))
        assert _redis(server).get(key) is None
        assert a.runtime.leases.redis_errors == 0


def test_changes_reach_another_process_subscribers_by_pubsub(pg_redis):
    url, server = pg_redis
    with letta_nb.connect(url, redis_url=server.url) as a, letta_nb.connect(url, redis_url=server.url) as b:
        agent_id = _agent(a)
        seen: list[dict[str, Any]] = []
        unsubscribe = b.runtime.leases.subscribe(seen.append)
        wait_until(lambda: _redis(server).pubsub_numsub("letta_nb:changes")[0][1] == 1, "b to subscribe")
        a.agents.messages.create("a", "hello there")
        wait_until(lambda: any(n["agent_id"] == agent_id and n["pid"] for n in seen), "a's notice to reach b")
        last = [n for n in seen if n["agent_id"] == agent_id][-1]
        assert last["last_seq"] == a.agents.retrieve("a").last_seq
        assert last["holder"] == a.runtime.leases.holder
        unsubscribe()


def test_a_local_subscriber_hears_this_process_changes_without_redis(db_path):
    with letta_nb.connect(db_path) as c:
        agent_id = _agent(c)
        seen: list[dict[str, Any]] = []
        c.runtime.leases.subscribe(seen.append)
        c.agents.messages.create("a", "hello")
        assert seen and seen[-1]["agent_id"] == agent_id and seen[-1]["last_seq"] == c.agents.retrieve("a").last_seq


def test_redis_url_errors_say_what_to_fix(pg_store_url, db_path, redis_server):
    with pytest.raises(StoreError) as e:
        letta_nb.connect(pg_store_url, redis_url="redis://user:s3cret-pw@127.0.0.1:1/0")
    assert "127.0.0.1:1" in str(e.value) and "s3cret" not in str(e.value)
    if "://" not in str(db_path):  # a SQLite store: Redis has nothing to add there
        with pytest.raises(InvalidArgumentError, match="PostgreSQL"):
            letta_nb.connect(db_path, redis_url=redis_server.url)
    with pytest.raises(InvalidArgumentError, match="redis_url"):
        letta_nb.connect(pg_store_url, redis_url="localhost:6379")


def test_a_turn_waits_out_a_redis_restart(pg_redis):
    url, server = pg_redis
    with letta_nb.connect(url, redis_url=server.url) as c:
        _agent(c)
        c.agents.messages.create("a", "before")
        server.stop(remove=False)  # Redis is down when the next turn needs a lease
        result: dict[str, Any] = {}
        turn = threading.Thread(target=lambda: result.update(r=c.agents.messages.create("a", "during")))
        turn.start()
        wait_until(lambda: c.runtime.leases.redis_errors > 0, "the turn to meet the dead Redis")
        assert turn.is_alive() and not result  # waiting, not failed
        server.start()
        turn.join(timeout=60)
        assert "r" in result
        assert "during" in [m.content for m in c.agents.messages.list("a") if m.role == "user"]


def test_a_waiter_queued_in_redis_after_our_turn_changes_the_agent_before_our_next_turn_answers(pg_redis,
                                                                                                 monkeypatch):
    """A waiter queued in Redis behind our idle kept lease gets it before our next turn stores anything: its
    ticket makes us give the idle lease up, or else the read overlapping our next turn's model call
    (runtime/leases.py ``speculate``) finds it and the turn drops its first answer and runs again. Either way
    the turn answers from the other holder's change and stores its user message once."""
    from letta_nb.runtime import leases as runtime_leases

    monkeypatch.setattr(runtime_leases, "_GRACE", 600.0)  # kept between our turns unless a read gives it up
    url, server = pg_redis
    with (letta_nb.connect(url, redis_url=server.url) as a,
          letta_nb.connect(url, redis_url=server.url, lease_timeout=60) as b):
        agent_id = _agent(a)
        a.agents.messages.create(agent_id, "hello")
        other = threading.Thread(target=lambda: b.agents.blocks.update(agent_id, "human", value="Name: Zed"))
        other.start()  # queues in Redis behind our kept lease
        wait_until(lambda: _redis(server).zcard(_keys(agent_id)["queue"]) == 1, "the other holder to queue")
        reply = a.agents.messages.create(agent_id, "What is my name?")
        other.join(timeout=60)
        assert 'Name: Zed' in str(reply.text)  # answered after the other holder's change, not before it
        events = [e.event for e in a.runtime.leases.events]
        assert events[0] == "acquired" and events.count("restarted") <= 1 and events[-1] == "acquired"
        asked = [m.content for m in a.agents.messages.list(agent_id) if m.role == "user"]
        assert asked == ["hello", "What is my name?"]
