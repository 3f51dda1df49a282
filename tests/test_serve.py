"""Letta's REST API from the kernel (``%letta serve``, ``client.serve``), driven by the unmodified letta-client SDK.

The SDK runs in a child process (tests/serve_sdk_child.py) against a server started by ``%letta serve`` in this
process's IPython shell; the test then reads the same agents through the kernel's own client, so what the SDK
was told and what the kernel holds must agree. Other tests check the gate (401 without the token, the token
never in a repr, an error or the store), the loopback-only bind (the kernel's own socket table), stopping
(``--stop``, ``client.close()``), the probe rows and the missing-extra error.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import letta_nb
from letta_nb.errors import InvalidArgumentError, OptionalDependencyError

HERE = Path(__file__).resolve().parent
CHILD = HERE / "serve_sdk_child.py"
AGENT_FILE = HERE / "agent_files" / "memgpt_agent.af"


def _listening_address(port: int) -> set[str]:
    """The local addresses a socket of this machine listens on at ``port`` (Linux's /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in list(f)[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(addr)
    return found


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "/v1/agents/", timeout=5)
    except httpx.ConnectError:
        return True
    return False


def test_the_unmodified_sdk_drives_the_kernels_agents(shell: Any, tmp_path: Path) -> None:
    from letta_nb.notebook._session import current_session

    notice = shell.run_line_magic("letta", "serve")
    handle = notice.value
    client = current_session().client
    assert handle.token in notice.text and handle.token not in repr(handle)  # shown once, in the output
    assert handle.host == "127.0.0.1" and _listening_address(handle.port) == {"0100007F"}  # 127.0.0.1 only

    out_path = tmp_path / "sdk.json"
    env = {**os.environ, "LETTA_API_KEY": handle.token}
    proc = subprocess.run([sys.executable, str(CHILD), handle.url, str(AGENT_FILE), str(out_path)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    sdk = json.loads(out_path.read_text())

    # what the SDK parsed
    assert sdk["agent"]["name"] == "ada" and sdk["agent"]["blocks"] == ["human", "persona"]
    assert "send_message" in sdk["agent"]["tools"] and sdk["retrieved_name"] == "ada"
    assert "ada" in sdk["listed"]
    assert sdk["plain"]["stop"] == "end_turn" and sdk["plain"]["ids_dated"] and sdk["plain"]["steps"] >= 1
    assert "user_message" not in sdk["plain"]["types"] and "assistant_message" in sdk["plain"]["types"]
    for key in ("streamed", "tokens"):
        assert sdk[key]["types"][-2:] == ["stop_reason", "usage_statistics"], sdk[key]["types"]
        assert "Ada" in sdk[key]["text"]
    assert sdk["tokens"]["types"].count("assistant_message") > sdk["streamed"]["types"].count("assistant_message")
    assert len(sdk["first_page"]) >= 3 and sdk["first_page"][0] != "user_message"  # newest first
    assert sdk["assistant_only"] == ["assistant_message"]
    assert sdk["human"] == "Name: Ada" and sdk["persona_after"] == "Terse."
    assert sdk["labels"] == ["human", "persona"]
    assert sdk["passages"] == ["The MemGPT paper pages memory like an OS."]
    assert sdk["search"]["count"] == 1 and sdk["search"]["contents"] == sdk["passages"]
    assert sdk["export_names"] == ["ada"]
    assert sdk["tool"] == "shout" and sdk["tool_listed"] and sdk["tool_upsert"] == "shout"
    assert sdk["tool_create_again"] == 409 and not sdk["tool_after_delete"]
    assert sdk["status"] == {"unknown_agent": 404, "empty_input": 422, "unserved": 501, "wrong_token": 401,
                             "no_token": 401}
    assert "reset-messages" in sdk["unserved_body"]["detail"]
    assert sdk["temp_deleted"] == 404

    # the kernel sees the same agents
    recall = client.agents.messages.list("ada")
    assert sdk["paged_ids"] == [m.id for m in reversed(recall)]  # every message, once, newest first
    assert sdk["asc_ids"] == [m.id for m in recall]
    assert client.agents.blocks.retrieve("ada", "persona").value == "Terse."
    assert client.agents.blocks.retrieve("ada", "human").value == "Name: Ada"
    passages = client.agents.passages.list("ada")
    assert [p.id for p in passages] == [sdk["passage_id"]] and passages[0].tags == ("papers",)
    names = {a.name for a in client.agents.list()}
    assert set(sdk["imported"]) <= names and "temp" not in names
    assert "shout" not in client.tools.list()

    # every request is a probe row: the route template, its status, its latency
    http = letta_nb.probes.http(client)
    routes = set(http.route)
    assert {"/v1/agents/", "/v1/agents/{agent_id}/messages", "/v1/agents/{agent_id}/archival-memory/search",
            "/v1/agents/import", "/v1/tools/{tool_id}"} <= routes
    assert not any(a.id in r for a in client.agents.list() for r in routes)  # templates, never ids
    assert {401, 404, 409, 422, 501} <= set(http.status) and (http.duration_ms > 0).all()

    shell.run_line_magic("letta", "serve --stop")
    assert not handle.running and _refused(handle.url)


def test_the_token_is_required_and_kept_out_of_reprs_errors_and_the_store(client: letta_nb.Client) -> None:
    with client.serve() as handle:
        r = httpx.get(handle.url + "/v1/agents/", headers={"Authorization": "Bearer " + "y" * 43})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert handle.token not in r.text and "y" * 43 not in r.text
        ok = httpx.post(handle.url + "/v1/agents/", headers={"Authorization": f"Bearer {handle.token}"},
                        json={"name": "kept", "model": "offline", "embedding": "hash"})
        assert ok.status_code == 200 and ok.json()["name"] == "kept"
        assert handle.token not in repr(handle) and handle.token not in repr(client)
        with pytest.raises(InvalidArgumentError, match="already serves"):
            client.serve()
    assert client.agents.retrieve("kept").name == "kept"  # the request reached the store ...
    location = Path(client.store_location)
    if location.exists():  # ... and the token did not (SQLite: the file with its WAL; PostgreSQL: no file here)
        store = b"".join(p.read_bytes() for p in location.parent.glob(location.name + "*"))
        assert b"kept" in store and handle.token.encode() not in store
    with pytest.raises(InvalidArgumentError) as bad:
        client.serve(token="hunter2")
    assert "hunter2" not in str(bad.value)


def test_bad_json_is_422_and_unknown_routes_are_501(client: letta_nb.Client) -> None:
    with client.serve(token="t" * 32) as handle:
        auth = {"Authorization": "Bearer " + "t" * 32}
        bad = httpx.post(handle.url + "/v1/agents/", headers=auth, content=b"{not json")
        assert bad.status_code == 422 and "JSON" in bad.json()["detail"]
        other = httpx.get(handle.url + "/v1/folders/", headers=auth)
        assert other.status_code == 501 and "GET /v1/folders/" in other.json()["detail"]
        no_slash = httpx.get(handle.url + "/v1/agents", headers=auth)  # both spellings, no redirect
        assert no_slash.status_code == 200 and no_slash.json() == []


def test_close_stops_the_server_and_the_port_is_free_again(tmp_path: Path) -> None:
    client = letta_nb.connect(tmp_path / "s.db")
    handle = client.serve()
    assert not _refused(handle.url)
    client.close()
    assert not handle.running and _refused(handle.url)
    with socket.socket() as s:  # the port is released, not held by a leftover listener
        s.bind(("127.0.0.1", handle.port))


def test_without_the_serve_extra_the_error_says_what_to_install(client: letta_nb.Client,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    with pytest.raises(OptionalDependencyError, match=r"letta-nb\[serve\]"):
        client.serve()
    assert client._servers == []


def test_unloading_the_extension_stops_the_server(shell: Any) -> None:
    handle = shell.run_line_magic("letta", "serve").value
    assert not _refused(handle.url)
    shell.run_line_magic("unload_ext", "letta_nb")  # what kernel shutdown does too (notebook/__init__.py)
    assert not handle.running and _refused(handle.url)
    shell.run_line_magic("load_ext", "letta_nb")  # the fixture unloads it again


def _wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds (a condition, not a guessed sleep); fail after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_an_http_turn_queues_on_the_agents_lease_with_the_kernels_turns(client: letta_nb.Client) -> None:
    import threading

    agent = client.agents.create("busy", model="offline?latency_ms=300",
                                 memory_blocks=[{"label": "human", "value": ""}])
    with client.serve() as handle:
        replies: list[Any] = []
        sender = threading.Thread(target=lambda: replies.append(httpx.post(
            f"{handle.url}/v1/agents/{agent.id}/messages", headers={"Authorization": f"Bearer {handle.token}"},
            json={"input": "My name is Ada."}, timeout=60)))
        sender.start()
        _wait_for(lambda: any(m.role == "user" for m in client.agents.messages.list(agent.id)), "the HTTP turn")
        mine = client.agents.messages.create(agent.id, "What is my name?")  # queues behind the HTTP turn
        sender.join()
    assert replies[0].status_code == 200 and replies[0].json()["stop_reason"]["stop_reason"] == "end_turn"
    assert mine.stop_reason == "end_turn" and "Ada" in mine.text  # it ran after the HTTP turn had saved the name
    roles = [m.message_type for m in client.agents.messages.list(agent.id)]
    second = roles.index("user_message", 1)
    assert roles[0] == "user_message" and roles[second - 2] == "assistant_message"  # turn 1 whole, then turn 2


def test_a_client_that_leaves_a_stream_cancels_its_turn(client: letta_nb.Client) -> None:
    agent = client.agents.create("leaver", model="offline?tps=5", memory_blocks=[{"label": "human", "value": ""}])
    with client.serve() as handle:
        with httpx.stream("POST", f"{handle.url}/v1/agents/{agent.id}/messages/stream", timeout=60,
                          headers={"Authorization": f"Bearer {handle.token}"},
                          json={"input": "My name is Ada.", "stream_tokens": True}) as r:
            first = next(line for line in r.iter_lines() if line.startswith("data:"))
        assert json.loads(first[5:])["message_type"] in ("reasoning_message", "assistant_message")
        client.agents.update(agent.id, tags=["after"])  # takes the lease: returns once the turn has ended
    # the turn stopped in its first step (a whole one takes seconds at 5 tokens/s): no tool ran, no reply stored
    assert client.agents.blocks.retrieve(agent.id, "human").value == ""
    assert [m.message_type for m in client.agents.messages.list(agent.id)] == ["user_message"]


@pytest.mark.slow
def test_bench_serve_quick_reports_both_sides_and_the_overhead() -> None:
    from letta_nb.bench import serve as bench

    result = bench.run(quick=True)
    n = result.numbers
    assert n["messages"] == 60 and n["inproc_msgs_per_s"] > 0 and n["http_msgs_per_s"] > 0
    assert n["http_overhead_ms_per_message"] == pytest.approx(n["http_p50_ms"] - n["inproc_p50_ms"])
    assert n["server_overhead_ms_per_message"] + n["sdk_side_ms_per_message"] == pytest.approx(
        n["http_overhead_ms_per_message"])
    assert "== bench serve ==" in result.table()
