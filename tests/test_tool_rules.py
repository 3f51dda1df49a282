"""Tool rules enforced (runtime/rule_solver.py): the solver rule by rule, the offline model honouring
``tool_choice``, and whole turns through the real agent loop, in process and against the loopback server
(asserting the ``tools`` and ``tool_choice`` the server received each step).

The end-to-end agent is a small support desk: ``run_first`` lookup -> ``constrain_child_tools`` classify ->
``conditional`` on classify's output (urgent -> escalate, routine -> file_ticket) -> ``exit_loop``. Each tool
counts its runs in ``runs``, so "the tool never ran" is a fact about the tool, not about messages.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import letta_nb
from letta_nb.llm._offline_rules import decide
from letta_nb.llm.registry import resolve_model
from letta_nb.runtime.rule_solver import REFUSAL, Offer, Ran, RuleState, check_call, needs_approval
from letta_nb.schemas import Message
from letta_nb.testing import LoopbackServer
from tests.agent_helpers import assert_consistent, call, tool_messages

runs: Counter[str] = Counter()


def lookup(query: str) -> str:
    """Look a ticket up.

    Args:
        query: Words of the ticket.
    """
    runs["lookup"] += 1
    return "ticket 7: " + query


def classify(text: str) -> str:
    """Classify a ticket as urgent or routine.

    Args:
        text: The ticket.
    """
    runs["classify"] += 1
    return "urgent" if "down" in text.lower() else "routine"


def escalate(reason: str) -> str:
    """Page the on-call engineer.

    Args:
        reason: Why.
    """
    runs["escalate"] += 1
    return "paged"


def file_ticket(summary: str) -> str:
    """File a ticket for later.

    Args:
        summary: What it is about.
    """
    runs["file_ticket"] += 1
    return "filed"


DESK_TOOLS = [lookup, classify, escalate, file_ticket]
DESK_RULES: list[dict[str, Any]] = [
    {"type": "run_first", "tool_name": "lookup"},
    {"type": "constrain_child_tools", "tool_name": "lookup", "children": ["classify"]},
    {"type": "conditional", "tool_name": "classify",
     "child_output_mapping": {"urgent": "escalate", "routine": "file_ticket"}},
    {"type": "exit_loop", "tool_name": "escalate"},
    {"type": "exit_loop", "tool_name": "file_ticket"},
]
TOOLS = ("send_message", "conversation_search", "lookup", "classify", "escalate", "file_ticket")


@pytest.fixture(autouse=True)
def _reset_counts() -> Iterator[None]:
    runs.clear()
    yield
    runs.clear()


def state(rules: list[dict[str, Any]], *ran: Ran | str, tools: tuple[str, ...] = TOOLS) -> RuleState:
    return RuleState(rules, tools, [r if isinstance(r, Ran) else Ran(r, True, "ok") for r in ran])


def forced(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


# ---- the solver, rule by rule ---------------------------------------------------------------------------


def test_no_rules_offer_everything_and_force_nothing() -> None:
    s = state([])
    assert s.offer() == Offer(TOOLS, None)
    assert all(s.refusal(t) is None for t in TOOLS)
    assert s.turn_ends([("send_message", True)], True) is True


def test_run_first_forces_the_first_call_and_only_the_first() -> None:
    rules = [{"type": "run_first", "tool_name": "lookup"}]
    assert state(rules).offer() == Offer(("lookup",), forced("lookup"))
    message = check_call(state(rules), "escalate")
    assert message is not None and message.startswith(REFUSAL)
    assert "run_first" in message and "must be lookup" in message and "Allowed now: lookup." in message
    assert state(rules, "lookup").offer() == Offer(TOOLS, None)  # done: no constraint after the first call
    two = rules + [{"type": "run_first", "tool_name": "classify"}]
    assert state(two).offer() == Offer(("lookup", "classify"), "required")
    # a run_first rule naming a tool the agent lacks is ignored (Letta would offer the missing tool alone)
    assert state([{"type": "run_first", "tool_name": "gone"}]).offer() == Offer(TOOLS, None)


def test_constrain_child_tools_restricts_the_next_step_only() -> None:
    rules = [{"type": "constrain_child_tools", "tool_name": "lookup", "children": ["classify", "escalate"]}]
    assert state(rules).offer().tools == TOOLS
    after = state(rules, "lookup")
    assert after.offer() == Offer(("classify", "escalate"), "required")
    why = after.refusal("send_message")
    assert why is not None and why.startswith("constrain_child_tools: after lookup")
    assert state(rules, "lookup", "classify").offer() == Offer(TOOLS, None)


@pytest.mark.parametrize(("output", "key"), [
    ("urgent", "urgent"), (" urgent\n", "urgent"), ('"urgent"', "urgent"),
    ('{"status": "OK", "message": "urgent"}', "urgent"),  # Letta's packaging of a result
    ("true", "True"), ("True", "true"), ("1", "1.0"), ("2.50", "2.5"), ('{"message": 3}', "3"),
])
def test_conditional_matches_outputs_by_value(output: str, key: str) -> None:
    rules = [{"type": "conditional", "tool_name": "classify", "child_output_mapping": {key: "escalate"}}]
    assert state(rules, Ran("classify", True, output)).offer() == Offer(("escalate",), forced("escalate"))


@pytest.mark.parametrize(("output", "key"), [("false", "true"), ("10", "1"), ("truex", "true"), ("", "0")])
def test_conditional_does_not_match_look_alikes(output: str, key: str) -> None:
    rules = [{"type": "conditional", "tool_name": "classify", "child_output_mapping": {key: "escalate"}}]
    assert state(rules, Ran("classify", True, output)).offer() == Offer(TOOLS, None)


def test_conditional_default_child_and_require_output_mapping() -> None:
    base = {"type": "conditional", "tool_name": "classify", "child_output_mapping": {"urgent": "escalate"}}
    s = state([{**base, "default_child": "file_ticket"}], Ran("classify", True, "meh"))
    assert s.offer() == Offer(("file_ticket",), forced("file_ticket"))
    assert "default_child file_ticket" in (s.refusal("escalate") or "")
    strict = state([{**base, "require_output_mapping": True}], Ran("classify", True, "meh"))
    assert strict.offer() == Offer((), None)  # nothing may follow: the model answers in plain text
    assert "No tool is allowed now" in (check_call(strict, "escalate") or "")
    # an empty output or a failed call is no crash (Letta raises on an empty response): it matches nothing
    assert state([base], Ran("classify", True, "")).offer() == Offer(TOOLS, None)
    failed = state([{**base, "default_child": "file_ticket"}], Ran("classify", False, "ValueError: boom"))
    assert failed.offer().tools == ("file_ticket",)


def test_parent_last_tool_gates_the_child_only() -> None:
    rules = [{"type": "parent_last_tool", "tool_name": "lookup", "children": ["escalate"]},
             {"type": "parent_last_tool", "tool_name": "classify", "children": ["escalate"]}]
    assert "escalate" not in state(rules).offer().tools
    assert "parent_last_tool" in (state(rules, "send_message").refusal("escalate") or "")
    # right after either parent (Letta: after neither, its two rules intersect) ...
    assert state(rules, "lookup").refusal("escalate") is None
    assert state(rules, "classify").refusal("escalate") is None
    # ... and the parent does not confine the next step to its children (Letta's solver does)
    assert state(rules, "lookup").offer() == Offer(TOOLS, None)
    assert state(rules, "lookup", "send_message").refusal("escalate") is not None


def test_max_count_per_step_caps_calls_in_a_turn_and_within_one_step() -> None:
    rules = [{"type": "max_count_per_step", "tool_name": "lookup", "max_count_limit": 2}]
    assert state(rules, "lookup").refusal("lookup") is None
    two = state(rules, "lookup", "classify", "lookup")
    assert "already ran 2 time(s) this turn (limit 2)" in (two.refusal("lookup") or "")
    assert "lookup" not in two.offer().tools
    verdicts = state(rules).screen(["lookup", "lookup", "lookup", "classify"])
    assert [v is None for v in verdicts] == [True, True, False, True]


def test_required_before_exit_withholds_exit_tools_until_the_required_tool_succeeded() -> None:
    rules = [{"type": "required_before_exit", "tool_name": "file_ticket"},
             {"type": "exit_loop", "tool_name": "escalate"}]
    s = state(rules)
    offer = s.offer()
    assert "send_message" not in offer.tools and "escalate" not in offer.tools
    assert offer.tool_choice == "required"  # the turn cannot end in plain text either
    assert "required_before_exit: call file_ticket before send_message" in (s.refusal("send_message") or "")
    assert s.turn_ends([], True) is False
    # a failed run does not count
    assert state(rules, Ran("file_ticket", False, "RuntimeError: x")).refusal("send_message") is not None
    done = state(rules, "file_ticket")
    assert done.offer() == Offer(TOOLS, None) and done.turn_ends([("file_ticket", True)], False) is False
    # in one step: file_ticket then send_message is fine; the reverse order is refused
    assert s.screen(["file_ticket", "send_message"]) == [None, None]
    assert [v is None for v in s.screen(["send_message", "file_ticket"])] == [False, True]


def test_a_required_tool_that_is_itself_an_exit_tool_stays_allowed_and_ends_the_turn() -> None:
    rules = [{"type": "required_before_exit", "tool_name": "escalate"},
             {"type": "exit_loop", "tool_name": "escalate"}]
    s = state(rules)
    assert "escalate" in s.offer().tools and s.refusal("escalate") is None
    assert s.refusal("send_message") is not None
    assert s.after([("escalate", True, "paged")]).turn_ends([("escalate", True)], False) is True


def test_exit_loop_and_continue_loop_decide_whether_the_turn_goes_on() -> None:
    rules = [{"type": "exit_loop", "tool_name": "escalate"},
             {"type": "continue_loop", "tool_name": "send_message"}]
    s = state(rules)
    assert s.after([("escalate", True, "paged")]).turn_ends([("escalate", True)], False) is True
    assert s.turn_ends([("escalate", False)], False) is False  # failed: the model may fix its call
    assert s.turn_ends([("send_message", True)], True) is False  # continue_loop overrides the reply's end
    # calls after an exit tool in the same step never run
    verdicts = s.screen(["escalate", "lookup"])
    assert verdicts[0] is None and "exit_loop: escalate ends the turn" in (verdicts[1] or "")


def test_a_call_after_a_conditional_tool_in_the_same_step_waits_for_its_output() -> None:
    rules = [{"type": "conditional", "tool_name": "classify", "child_output_mapping": {"urgent": "escalate"}}]
    verdicts = state(rules).screen(["classify", "escalate"])
    assert verdicts[0] is None and "after classify's result" in (verdicts[1] or "")


def test_state_from_messages_counts_only_calls_that_ran_this_turn() -> None:
    def msg(role: str, name: str | None = None, content: str = "", status: str | None = None) -> Message:
        return Message(id="m", agent_id="a", seq=0, created_at=None, role=role, content=content,  # type: ignore[arg-type]
                       name=name, status=status)

    reminder = state([{"type": "required_before_exit", "tool_name": "lookup"}]).reminder()
    messages = [msg("user", content="old turn"), msg("tool", "lookup", "x", "success"),
                msg("user", content="new turn"), msg("tool", "classify", "urgent", "success"),
                msg("tool", "escalate", REFUSAL + "escalate was not run", "error"),
                msg("tool", "unknown_tool", "ToolNotFoundError", "error"),
                msg("user", content=reminder),  # a reminder is not the user's words: the turn goes on
                msg("tool", "file_ticket", "RuntimeError: x", "error")]
    s = RuleState.from_messages([], TOOLS, messages)
    assert s.history == [Ran("classify", True, "urgent"), Ran("file_ticket", False, "RuntimeError: x")]
    assert json.loads(reminder)["type"] == "heartbeat" and "lookup" in json.loads(reminder)["reason"]


def test_an_approved_call_is_checked_against_the_turn_it_belongs_to() -> None:
    """Letta 0.16.8 runs an approved call without checking its rules; check_call is what approvals use."""
    waiting = [Message(id="u", agent_id="a", seq=1, created_at=None, role="user", content="hi"),  # type: ignore[arg-type]
               Message(id="c", agent_id="a", seq=2, created_at=None, role="assistant", content=None,  # type: ignore[arg-type]
                       status="requires_approval")]
    s = RuleState.from_messages(DESK_RULES, TOOLS, waiting)
    assert "run_first" in (check_call(s, "escalate") or "")
    assert check_call(s, "lookup") is None
    assert needs_approval([{"type": "requires_approval", "tool_name": "escalate"}], "escalate")
    assert not needs_approval(DESK_RULES, "escalate")


# ---- the offline model honours tool_choice ----------------------------------------------------------------


def _schemas(*tools: Any) -> list[dict[str, Any]]:
    from letta_nb.runtime.tool_schema import tool_from_function

    return [tool_from_function(t).openai_schema() for t in tools]


def test_the_offline_model_honours_tool_choice() -> None:
    messages = [{"role": "system", "content": "You are a desk."}, {"role": "user", "content": "Hello there"}]
    tools = _schemas(lookup, classify)
    assert decide(messages, tools).calls == ()  # left alone it answers in text
    plan = decide(messages, tools, forced("classify"))
    assert [(n, json.loads(a)) for n, a in plan.calls] == [("classify", {"text": "Hello there"})]
    assert [n for n, _ in decide(messages, tools, "required").calls] == ["lookup"]
    # an explicit /call is a test hook: a model that ignores tool_choice
    explicit = [messages[0], {"role": "user", "content": call("classify", text="x")}]
    assert [n for n, _ in decide(explicit, tools, forced("lookup")).calls] == ["classify"]


# ---- whole turns through the agent loop ------------------------------------------------------------------


class ChoiceRecorder:
    """Wraps a model; keeps the tool names and tool_choice of every request."""

    supports_parallel_tool_calls = True

    def __init__(self, inner: Any):
        self.inner, self.name, self.context_window = inner, inner.name, inner.context_window
        self.seen: list[tuple[list[str], Any]] = []

    async def stream(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                     tool_choice: Any = None) -> AsyncIterator[Any]:
        self.seen.append(([t["function"]["name"] for t in tools], tool_choice))
        async for event in self.inner.stream(messages, tools, tool_choice):
            yield event


def _desk(client: letta_nb.Client, model: str = "offline") -> letta_nb.AgentState:
    return client.agents.create("desk", model=model, tools=DESK_TOOLS, tool_rules=DESK_RULES)


def test_rules_drive_a_turn_through_the_real_loop(client: letta_nb.Client) -> None:
    recorder = ChoiceRecorder(resolve_model("offline"))
    client.runtime.model_cache.set("offline", recorder)
    agent = _desk(client)
    r = client.agents.messages.create(agent, "The build server is down!")
    assert [s.tool_names for s in r.steps] == [("lookup",), ("classify",), ("escalate",)]
    assert r.stop_reason == "end_turn" and runs == Counter(lookup=1, classify=1, escalate=1)
    assert recorder.seen == [(["lookup"], forced("lookup")), (["classify"], forced("classify")),
                             (["escalate"], forced("escalate"))]  # and no 4th step: exit_loop ended the turn

    # the conditional follows the output: routine -> file_ticket
    r = client.agents.messages.create(agent, "Please rename the wiki page.")
    assert [s.tool_names for s in r.steps] == [("lookup",), ("classify",), ("file_ticket",)]
    assert runs["file_ticket"] == 1 and runs["escalate"] == 1
    assert_consistent(client, agent.id)


def test_a_call_breaking_a_rule_is_refused_and_the_tool_never_runs(client: letta_nb.Client) -> None:
    agent = _desk(client)
    r = client.agents.messages.create(agent, call("escalate", reason="skip the queue"))
    refused = tool_messages(r.messages, "escalate")[0]
    assert refused.status == "error" and refused.content is not None
    assert refused.content.startswith(REFUSAL) and "run_first" in refused.content
    assert "Allowed now: lookup." in refused.content
    # the model read the error and went the allowed way; escalate ran only when the rules led to it
    assert [m.name for m in tool_messages(r.messages)] == ["escalate", "lookup", "classify", "file_ticket"]
    assert runs == Counter(lookup=1, classify=1, file_ticket=1) and runs["escalate"] == 0
    assert r.stop_reason == "end_turn"
    assert_consistent(client, agent.id)


def test_a_call_recovered_from_json_text_is_checked_too(client: letta_nb.Client) -> None:
    agent = _desk(client, model="offline?calls=json")
    r = client.agents.messages.create(agent, call("file_ticket", summary="later"))
    first = next(m for m in r.messages if m.role == "assistant")
    assert first.tool_calls[0].recovered and first.tool_calls[0].name == "file_ticket"
    refused = tool_messages(r.messages, "file_ticket")[0]
    assert refused.content is not None and refused.content.startswith(REFUSAL) and "run_first" in refused.content
    assert runs["lookup"] == 1  # then the forced path ran


def test_required_before_exit_holds_the_reply_back_until_the_tool_ran(client: letta_nb.Client) -> None:
    rules = [{"type": "required_before_exit", "tool_name": "file_ticket"}]
    agent = client.agents.create("careful", model="offline", tools=[file_ticket], tool_rules=rules)
    r = client.agents.messages.create(agent, call("send_message", message="bye"))
    assert [s.tool_names for s in r.steps] == [("send_message",), ("file_ticket",), ("send_message",)]
    first = [m for m in r.messages if m.name == "send_message"][0]
    assert first.status == "error" and first.content is not None
    assert "required_before_exit: call file_ticket" in first.content and "Allowed now: file_ticket." in first.content
    assert runs["file_ticket"] == 1 and r.stop_reason == "end_turn"
    assert_consistent(client, agent.id)


def test_a_model_ending_in_plain_text_before_a_required_tool_is_reminded(client: letta_nb.Client) -> None:
    rules = [{"type": "required_before_exit", "tool_name": "file_ticket"}]
    with LoopbackServer() as srv:
        agent = client.agents.create("careful", model=f"openai/loopback-chat?base_url={srv.base_url}",
                                     tools=[file_ticket], tool_rules=rules)
        srv.reply(content="All done, goodbye.")  # a model that ignores tool_choice="required"
        r = client.agents.messages.create(agent, "Close my case")
        chats = [q for q in srv.requests if q["path"] == "/v1/chat/completions"]
        assert chats[0]["tool_choice"] == "required" and "send_message" not in chats[0]["tools"]
        assert (chats[1]["tools"], chats[1]["tool_choice"]) == (["file_ticket"], forced("file_ticket"))
        reminder = [m for m in r.messages if m.role == "user"][1]
        assert json.loads(reminder.content or "")["type"] == "heartbeat"
        assert runs["file_ticket"] == 1 and r.stop_reason == "end_turn"
        assert r.steps[-1].tool_names == ("send_message",)
        assert_consistent(client, agent.id)


def test_the_loopback_server_receives_the_allowed_tools_and_tool_choice(client: letta_nb.Client) -> None:
    with LoopbackServer() as srv:
        agent = _desk(client, model=f"openai/loopback-chat?base_url={srv.base_url}")
        r = client.agents.messages.create(agent, "Prod database is down")
        chats = [q for q in srv.requests if q["path"] == "/v1/chat/completions"]
        assert [(q["tools"], q["tool_choice"]) for q in chats] == [
            (["lookup"], forced("lookup")), (["classify"], forced("classify")), (["escalate"], forced("escalate"))]
        assert runs == Counter(lookup=1, classify=1, escalate=1) and r.stop_reason == "end_turn"

        # a model that ignores tool_choice: its call is refused, the tool never runs, the next request forces again
        srv.reply(tool_calls=[("file_ticket", {"summary": "no"})])
        r = client.agents.messages.create(agent, "Rename the wiki page")
        chats = [q for q in srv.requests if q["path"] == "/v1/chat/completions"][3:]
        assert [q["tool_choice"] for q in chats] == [forced("lookup"), forced("lookup"), forced("classify"),
                                                     forced("file_ticket")]
        assert "run_first" in (tool_messages(r.messages, "file_ticket")[0].content or "")
        assert runs["file_ticket"] == 1 and runs["lookup"] == 2  # file_ticket ran once: the allowed time


def test_an_agent_without_rules_sends_no_tool_choice(client: letta_nb.Client) -> None:
    with LoopbackServer() as srv:
        agent = client.agents.create("free", model=f"openai/loopback-chat?base_url={srv.base_url}", tools=[lookup])
        client.agents.messages.create(agent, "Hello")
        chats = [q for q in srv.requests if q["path"] == "/v1/chat/completions"]
        assert chats and all(q["tool_choice"] is None and "lookup" in q["tools"] for q in chats)


# ---- Agent Files ------------------------------------------------------------------------------------------

AGENT_FILES = Path(__file__).parent / "agent_files"


def test_evie_rules_load_and_hold(client: letta_nb.Client) -> None:
    report = client.agents.import_file(AGENT_FILES / "evie.af", model="offline", embedding="hash")
    evie = report.agent
    assert evie.tool_rules == [{"type": "continue_loop", "tool_name": "conversation_search"}]
    r = client.agents.messages.create(evie, call("conversation_search", query="cats"))
    names = [s.tool_names for s in r.steps]
    i = names.index(("conversation_search",))
    assert i < len(names) - 1 and r.stop_reason == "end_turn"  # continue_loop: a step followed it

    sleeper = next(a for a in client.agents.list() if a.name != evie.name)
    assert {"type": "exit_loop", "tool_name": "memory_finish_edits"} in sleeper.tool_rules
    r = client.agents.messages.create(sleeper, call("memory_finish_edits"))
    # exit_loop: the turn ends with the tool's own step (without the rule the model would be asked again)
    assert [s.tool_names for s in r.steps] == [("memory_finish_edits",)] and r.stop_reason == "end_turn"


# ---- %letta rules -----------------------------------------------------------------------------------------


def test_letta_rules_shows_adds_and_removes(shell: Any) -> None:
    from IPython.core.error import UsageError

    sh = shell
    sh.user_ns.update(lookup=lookup, classify=classify)
    sh.run_line_magic("letta", "create desk")
    sh.run_line_magic("letta", "tool add lookup")
    sh.run_line_magic("letta", "tool add classify")
    assert sh.run_line_magic("letta", "rules desk").empty
    sh.run_line_magic("letta", "rules desk add run_first lookup")
    frame = sh.run_line_magic("letta", "rules add constrain_child_tools lookup --children classify")
    assert frame[["type", "tool_name"]].values.tolist() == [["run_first", "lookup"],
                                                            ["constrain_child_tools", "lookup"]]
    assert json.loads(frame["detail"][1]) == {"children": ["classify"]}
    with pytest.raises(UsageError, match="tool_rules\\[2\\]"):  # checked by agents.update: nothing changes
        sh.run_line_magic("letta", "rules add max_count_per_step lookup")
    frame = sh.run_line_magic("letta", "rules desk remove 0")
    assert frame["type"].tolist() == ["constrain_child_tools"]
    with pytest.raises(UsageError, match="INDEX"):
        sh.run_line_magic("letta", "rules desk remove 5")
