"""letta_client 1.x call shapes work on letta_nb: compared by introspection, and Letta's quickstart run verbatim.

letta-client comes from the ``dev`` extra (nothing is installed at run time). For every method of the
supported subset, every parameter of letta_client's method is accepted by letta_nb's under the same name
(letta_client's first positional parameter, ``agent_id``, is letta_nb's first positional too, so both
``create(agent.id, ...)`` and ``create(agent_id=agent.id, ...)`` work), except the parameters listed in
NOT_SUPPORTED with the reason. The list is checked both ways: a listed parameter that letta_nb accepts now,
or that letta_client dropped, fails the test, so the list stays true.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

import pytest
from letta_client import Letta

import letta_nb
from letta_nb.api.chunks import AssistantMessage, LettaStopReason, LettaUsageStatistics, ToolCallMessage
from letta_nb.testing import LoopbackServer

# Transport options of every letta_client method (HTTP headers, query, body, timeout): no HTTP here.
TRANSPORT = {"extra_headers", "extra_query", "extra_body", "timeout"}

_SERVER = "Letta Cloud / server concepts letta_nb has no counterpart of (projects, templates, identities, folders)"
_CONFIG = "model/embedding settings are one spec string in letta_nb (model='openai/gpt-4o-mini?temperature=0.2')"
_LATER = "not implemented yet"
_BLOCK_META = "block metadata/tags/templates: Letta Cloud fields letta_nb's blocks do not store"
_RENDER = "letta_nb returns its own Message objects (role, content, tool_calls): no assistant_message rendering"

NOT_SUPPORTED: dict[tuple[str, str], dict[str, str]] = {
    ("agents", "create"): {
        **dict.fromkeys(["base_template_id", "from_template", "template", "template_id", "project", "project_id",
                         "identity_ids", "folder_ids", "source_ids", "include_default_source", "hidden",
                         "max_files_open", "per_file_view_window_char_limit"], _SERVER),
        **dict.fromkeys(["llm_config", "embedding_config", "model_settings", "context_window_limit", "max_tokens",
                         "max_reasoning_tokens", "reasoning", "enable_reasoner", "embedding_chunk_size",
                         "parallel_tool_calls", "response_format", "compaction_settings"], _CONFIG),
        "enable_sleeptime": "sleep-time agents run only when imported from an Agent File",
        "initial_message_sequence": _LATER, "memory_variables": _LATER, "message_buffer_autoclear": _LATER,
        "include_base_tool_rules": "letta_nb adds no implicit tool rules", "description": _LATER,
        "timezone": _LATER, "secrets": "keys stay in the process: connect(api_keys=...)",
        "tool_exec_environment_variables": "keys stay in the process: connect(api_keys=...)",
        "tool_ids": "pass tool names (or functions) in tools=[...]",
    },
    ("agents", "retrieve"): {"include": "an AgentState is always whole", "include_relationships": "idem"},
    ("agents", "update"): {
        **dict.fromkeys(["base_template_id", "template_id", "project_id", "identity_ids", "folder_ids",
                         "source_ids", "hidden", "max_files_open", "per_file_view_window_char_limit"], _SERVER),
        **dict.fromkeys(["llm_config", "embedding_config", "model_settings", "context_window_limit", "max_tokens",
                         "reasoning", "parallel_tool_calls", "response_format", "compaction_settings"], _CONFIG),
        **dict.fromkeys(["last_run_completion", "last_run_duration_ms", "last_stop_reason"],
                        "run bookkeeping is the runtime's (Response.steps, %letta stats steps)"),
        "message_ids": "the context window is the runtime's; messages.reset empties it",
        "block_ids": "use agents.blocks.attach/detach", "tool_ids": "use agents.tools.attach/detach",
        "enable_sleeptime": "sleep-time agents run only when imported from an Agent File",
        "message_buffer_autoclear": _LATER, "description": _LATER, "timezone": _LATER,
        "secrets": "keys stay in the process", "tool_exec_environment_variables": "keys stay in the process",
    },
    ("agents", "list"): {
        **dict.fromkeys(["base_template_id", "template_id", "project_id", "identity_id", "identifier_keys",
                         "created_by_id"], _SERVER),
        "include": "an AgentState is always whole", "include_relationships": "idem",
        "ascending": "use order='asc'/'desc'", "order_by": "agents are in creation order",
        "sort_by": "agents are in creation order", "query_text": _LATER, "last_stop_reason": _LATER,
    },
    ("agents.messages", "create"): {
        **dict.fromkeys(["assistant_message_tool_kwarg", "assistant_message_tool_name", "use_assistant_message",
                         "include_return_message_types"], _RENDER),
        "streaming": "use messages.stream", "stream_tokens": "use messages.stream (always token by token)",
        "background": "turns run on the runtime thread; messages.stream or the a-prefixed twins for async",
        "include_pings": "no HTTP keep-alive", "client_tools": _LATER, "client_skills": _LATER,
        "enable_thinking": "set by the model spec", "include_compaction_messages": _LATER,
        "override_model": "agents.update(model=...)", "override_system": "agents.update(system=...)",
        **dict.fromkeys(["return_logprobs", "return_token_ids", "top_logprobs"], _LATER),
    },
    ("agents.messages", "list"): {
        **dict.fromkeys(["assistant_message_tool_kwarg", "assistant_message_tool_name", "use_assistant_message",
                         "include_return_message_types"], _RENDER),
        "conversation_id": "one conversation per agent", "group_id": "no groups at run time",
        "include_err": "failed tool calls are kept as tool messages with status 'error'",
        "order_by": "messages are in sequence order",
    },
    ("agents.messages", "reset"): {"add_default_initial_messages": "letta_nb agents have no initial messages"},
    ("agents.messages", "cancel"): {"run_ids": "one turn of an agent runs at a time: cancel stops it"},
    ("agents.messages", "compact"): {"compaction_settings": "the summarizer_model and summarizer_timeout_s settings"},
    ("agents.blocks", "list"): {"order_by": "blocks are in prompt order"},
    ("agents.blocks", "update"): {
        **dict.fromkeys(["base_template_id", "deployment_id", "entity_id", "hidden", "is_template",
                         "preserve_on_migration", "project_id", "template_id", "template_name", "metadata", "tags"],
                        _BLOCK_META),
        "label": "rename a shared block with client.blocks.update(block_id, label=...)",
    },
    ("agents.passages", "create"): {"created_at": "a passage's time is when it was stored"},
    ("agents.passages", "list"): {"search": "use passages.search (ranked)"},
    ("agents.tools", "list"): dict.fromkeys(["after", "before", "limit", "order", "order_by"],
                                            "returns tool names, not Tool objects with ids"),
    ("blocks", "create"): dict.fromkeys(["base_template_id", "deployment_id", "entity_id", "hidden", "is_template",
                                         "preserve_on_migration", "project_id", "template_id", "template_name",
                                         "metadata", "tags"], _BLOCK_META),
    ("blocks", "update"): dict.fromkeys(["base_template_id", "deployment_id", "entity_id", "hidden", "is_template",
                                         "preserve_on_migration", "project_id", "template_id", "template_name",
                                         "metadata", "tags"], _BLOCK_META),
    ("blocks", "list"): {
        **dict.fromkeys(["identifier_keys", "identity_id", "project_id", "templates_only", "name"], _SERVER),
        **dict.fromkeys(["tags", "match_all_tags"], _BLOCK_META),
        **dict.fromkeys(["connected_to_agents_count_eq", "connected_to_agents_count_gt",
                         "connected_to_agents_count_lt", "description_search", "label_search", "value_search"],
                        _LATER + " (filter the list: each block has .agent_ids)"),
        "order_by": "blocks are in creation order",
    },
    **{("tools", m): {
        "json_schema": "the schema comes from the source's signature and docstring",
        "args_json_schema": "idem", "description": "the docstring is the description",
        "source_type": "Python only", "pip_requirements": "install into the kernel's environment",
        "npm_requirements": "Python only", "return_char_limit": _LATER, "tags": _LATER,
    } for m in ("create", "upsert")},
    ("tools", "list"): {
        **dict.fromkeys(["after", "before", "limit", "order", "order_by"], "returns tool names, not Tool objects"),
        **dict.fromkeys(["names", "tool_ids", "tool_types", "exclude_tool_types", "return_only_letta_tools", "search"],
                        _LATER),
    },
}

# letta_client's methods letta_nb implements, by resource path. Agent File import/export, folders, runs,
# archives, identities, MCP servers, templates are outside this subset (Agent Files: tests/test_agent_files.py).
SUPPORTED = {
    "agents": ["create", "retrieve", "update", "list", "delete"],
    "agents.messages": ["create", "stream", "list", "reset", "cancel", "compact"],
    "agents.blocks": ["list", "retrieve", "update", "attach", "detach"],
    "agents.passages": ["create", "list", "search", "delete"],
    "agents.tools": ["list", "attach", "detach"],
    "blocks": ["create", "list", "retrieve", "update", "delete"],
    "tools": ["create", "upsert", "retrieve", "list", "delete"],
}
NOT_SUPPORTED[("agents.messages", "stream")] = NOT_SUPPORTED[("agents.messages", "create")]
# Methods both have that are compared elsewhere: Agent Files (tests/test_agent_files.py), and letta_client's
# raw/streaming HTTP response wrappers (no HTTP here).
ELSEWHERE = {"import_file", "export_file", "with_raw_response", "with_streaming_response"}


def _resource(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


@pytest.fixture(scope="module")
def letta() -> Letta:
    return Letta(api_key="unused", base_url="http://127.0.0.1:9")  # never called: only introspected


@pytest.mark.parametrize("path,method", [(p, m) for p, ms in SUPPORTED.items() for m in ms])
def test_every_letta_client_parameter_is_accepted(client, letta, path, method):
    theirs = inspect.signature(getattr(_resource(letta, path), method)).parameters
    ours = inspect.signature(getattr(_resource(client, path), method)).parameters
    skipped = NOT_SUPPORTED.get((path, method), {})
    for name, param in theirs.items():
        if name in TRANSPORT:
            continue
        if name in skipped:
            assert name not in ours, f"{path}.{method}: {name} is accepted now; remove it from NOT_SUPPORTED"
            continue
        assert name in ours, f"letta_client's {path}.{method}({name}=...) is not accepted by letta_nb's"
        if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:  # e.g. agent_id, block_label: first, positional
            assert list(ours).index(name) == list(theirs).index(name), f"{path}.{method}: {name} out of place"
        assert ours[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    stale = set(skipped) - set(theirs)
    assert not stale, f"NOT_SUPPORTED lists {sorted(stale)} that letta_client's {path}.{method} does not have"


def test_every_letta_client_method_of_a_resource_is_listed(client, letta):
    """A method letta_nb has under letta_client's name is in SUPPORTED (so its parameters are compared)."""
    for path, methods in SUPPORTED.items():
        theirs = {n for n, _ in inspect.getmembers(_resource(letta, path), inspect.ismethod) if not n.startswith("_")}
        ours = {n for n in dir(_resource(client, path)) if not n.startswith("_")}
        assert (theirs & ours) - ELSEWHERE <= set(methods) | {"modify"}, path


# Letta's quickstart (letta-ai/letta-python README, "Simple Hello World example"), verbatim but for the import
# and constructor lines and the model name.
QUICKSTART = '''
agent_state = client.agents.create(
    model="offline",
    embedding="openai/text-embedding-3-small",
    memory_blocks=[
        {
            "label": "human",
            "value": "The human's name is Chad. They like vibe coding."
        },
        {
            "label": "persona",
            "value": "My name is Sam, a helpful assistant."
        }
    ],
    tools=["web_search", "run_code"]
)

print(agent_state.id)
# agent-d9be...0846

response = client.agents.messages.create(
    agent_id=agent_state.id,
    messages=[
        {
            "role": "user",
            "content": "Hey, nice to meet you, my name is Brad."
        }
    ]
)

# the agent will think, then edit its memory using a tool
for message in response.messages:
    print(message)

# The content of this memory block will be something like
# "The human's name is Brad. They like vibe coding."
# Fetch this block's content with:
human_block = client.agents.blocks.retrieve(agent_id=agent_state.id, block_label="human")
print(human_block.value)
'''


def test_the_letta_client_quickstart_runs_verbatim(tmp_path, monkeypatch, capsys):
    with LoopbackServer() as server:  # the quickstart's OpenAI embedding, served locally
        monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        client = letta_nb.connect(tmp_path / "quickstart.db")  # was: client = Letta(api_key="LETTA_API_KEY")
        try:
            exec(compile(textwrap.dedent(QUICKSTART), "quickstart", "exec"), {"client": client})
            agent = client.agents.list()[0]
            assert {"web_search", "run_code"} <= set(agent.tools)  # stubs: calling one tells the model why
            human = client.agents.blocks.retrieve("human", agent_id=agent.id).value
        finally:
            client.close()
    out = capsys.readouterr().out
    assert out.splitlines()[0] == agent.id
    assert "core_memory_append" in out and "Brad" in out
    assert human.endswith("Name: Brad") and out.rstrip().endswith("Name: Brad")


def test_a_stream_in_letta_client_chunks(client):
    agent = client.agents.create(name="streamer", model="offline")
    chunks = list(client.agents.messages.stream(agent_id=agent.id, letta_chunks=True,
                                                messages=[{"role": "user", "content": "My name is Ada."}]))
    kinds = [c.message_type for c in chunks]
    assert kinds[-2:] == ["stop_reason", "usage_statistics"]
    call = next(c for c in chunks if isinstance(c, ToolCallMessage))
    assert call.tool_call.name == "core_memory_append" and "Ada" in call.tool_call.arguments
    returned = next(c for c in chunks if c.message_type == "tool_return_message")
    assert returned.tool_call_id == call.tool_call.tool_call_id and returned.status == "success"
    assert "Ada" in "".join(c.content for c in chunks if isinstance(c, AssistantMessage))
    stop, usage = chunks[-2], chunks[-1]
    assert isinstance(stop, LettaStopReason) and stop.stop_reason == "end_turn"
    assert isinstance(usage, LettaUsageStatistics) and usage.step_count == 2
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
