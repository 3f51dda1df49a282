"""Redis commands in pipelines (runtime/redis_batch.py), on a real Redis server.

What must hold: commands asked for together go as one pipeline and each caller gets its own reply (or its own
error); a Redis that lost its scripts (restarted, flushed) runs them anyway; an unreachable Redis fails each
waiting command instead of hanging it; and with Redis coordinating a store's leases a turn's end is one command
(its notice published and its waiters counted together), the notice still reaching other processes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agent_helpers import wait_until

import letta_nb
from letta_nb.runtime.redis_batch import RedisBatcher

ECHO = "return {KEYS[1], ARGV[1]}"
INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def _run(server: Any, body: Any) -> Any:
    """``body(batcher, redis)`` on a fresh event loop with a client of ``server``."""
    import redis.asyncio as aioredis

    async def main() -> Any:
        client = aioredis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
        batcher = RedisBatcher(client, {"echo": ECHO, "incr": INCR})
        try:
            return await body(batcher, client)
        finally:
            await batcher.aclose()
            await client.aclose()
    return asyncio.run(main())


def test_commands_asked_together_go_as_one_pipeline_each_with_its_reply(redis_server):
    redis_server.restart()

    async def body(b: RedisBatcher, _: Any) -> Any:
        replies = await asyncio.gather(*(b.script("echo", [f"k{i}"], [i]) for i in range(40)))
        return replies, b.pipelines, b.commands

    replies, pipelines, commands = _run(redis_server, body)
    assert replies == [[f"k{i}", str(i)] for i in range(40)]
    assert commands == 40 and pipelines <= 2  # the first alone at once; the rest joined while it was out


def test_a_caller_sees_its_commands_in_the_order_it_sent_them(redis_server):
    redis_server.restart()

    async def body(b: RedisBatcher, _: Any) -> Any:
        async def caller(key: str) -> list[int]:
            return [await b.script("incr", [key], [1]) for _ in range(20)]
        return await asyncio.gather(*(caller(f"counter{i}") for i in range(5)))

    assert _run(redis_server, body) == [list(range(1, 21))] * 5


def test_one_failing_command_fails_alone(redis_server):
    redis_server.restart()
    from redis.exceptions import ResponseError

    async def body(b: RedisBatcher, client: Any) -> Any:
        await client.set("text", "not a number")
        return await asyncio.gather(b.script("incr", ["n"], [2]), b.script("incr", ["text"], [1]),
                                    b.command("GET", "text"), return_exceptions=True)

    good, bad, text = _run(redis_server, body)
    assert good == 2 and text == "not a number"
    assert isinstance(bad, ResponseError) and "not an integer" in str(bad)


def test_scripts_a_redis_lost_are_loaded_again(redis_server):
    redis_server.restart()

    async def body(b: RedisBatcher, client: Any) -> Any:
        first = await b.script("echo", ["a"], ["x"])
        await client.script_flush()  # as after a restart: Redis answers NOSCRIPT
        again = await asyncio.gather(b.script("echo", ["b"], ["y"]), b.command("PING"), b.script("incr", ["n"], [5]))
        return first, again

    first, (again, pong, n) = _run(redis_server, body)
    assert first == ["a", "x"] and again == ["b", "y"] and pong in (True, "PONG") and n == 5


def test_an_unreachable_redis_fails_each_waiting_command_then_recovers(redis_server):
    redis_server.restart()
    from redis.exceptions import RedisError

    async def body(b: RedisBatcher, _: Any) -> Any:
        await b.command("PING")
        redis_server.stop(remove=False)
        failed = await asyncio.gather(*(b.script("echo", ["k"], [i]) for i in range(5)), return_exceptions=True)
        redis_server.start()
        return failed, await b.script("echo", ["k"], ["back"])

    failed, back = _run(redis_server, body)
    assert len(failed) == 5 and all(isinstance(e, (RedisError, OSError)) for e in failed), failed
    assert back == ["k", "back"]


def test_a_closed_batcher_refuses_new_commands(redis_server):
    redis_server.restart()

    async def body(b: RedisBatcher, _: Any) -> Any:
        sent = b.script("echo", ["k"], ["last"])
        await b.aclose()  # waits for what was sent
        assert sent.result() == ["k", "last"]
        with pytest.raises(ConnectionError, match="closed"):
            await b.command("PING")

    _run(redis_server, body)


def test_a_turn_end_publishes_and_counts_waiters_in_one_command(pg_store_url, redis_server):
    redis_server.restart()
    with letta_nb.connect(pg_store_url, redis_url=redis_server.url) as a, \
            letta_nb.connect(pg_store_url, redis_url=redis_server.url) as b:
        agents = [a.agents.create(f"r{i}", model="offline").id for i in range(12)]
        sent: list[str] = []
        batch = a.runtime.leases._batch
        command = batch.command

        def recording(*args: Any) -> Any:
            sent.append(args[0] if args[0] != "EVALSHA" else _script_name(batch, args[1]))
            return command(*args)
        batch.command = recording
        heard: list[dict[str, Any]] = []
        b.runtime.leases.subscribe(heard.append)
        wait_until(lambda: _subscribers(redis_server) == 1, "b to subscribe")

        async def talk() -> None:
            await asyncio.gather(*(a.agents.messages.acreate(x, "hello") for x in agents))
        for _ in range(3):
            asyncio.run(talk())
        turns = 3 * len(agents)
        # a turn's end is settled after its caller has the response (runtime/leases.py done): wait for the last ones
        wait_until(lambda: sent.count("end") >= turns, "every turn's end command")
        assert sent.count("end") == turns and "PUBLISH" not in sent, sent  # the notice rode on the end's command
        assert sent.count("peek") + sent.count("acquire") >= turns
        assert batch.pipelines < batch.commands  # turns asking together shared pipelines
        wait_until(lambda: {n["agent_id"] for n in heard if n["holder"] == a.runtime.leases.holder} == set(agents),
                   "a's notices to reach b")


def _script_name(batch: RedisBatcher, sha: str) -> str:
    return next(name for name, s in batch._sha.items() if s == sha)


def _subscribers(server: Any) -> int:
    import redis

    return int(redis.Redis.from_url(server.url).pubsub_numsub("letta_nb:changes")[0][1])
