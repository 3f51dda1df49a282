"""The unmodified letta-client SDK against ``%letta serve``, in its own process (tests/test_serve.py runs it).

``python tests/serve_sdk_child.py URL AGENT_FILE OUT_JSON`` with the token in ``LETTA_API_KEY`` (not on the
command line, where ``ps`` shows it). Every SDK result is re-validated strictly (``model_validate`` of its
JSON: the SDK itself builds responses leniently, so a missing required field would otherwise pass). What the
SDK saw goes to OUT_JSON for the parent to compare with the kernel's own view of the same agents.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import httpx
import letta_client
from letta_client import Letta


def strict(obj: Any) -> Any:
    """``obj`` re-parsed by its own model class with validation (raises if the server left a field out)."""
    return type(obj).model_validate(obj.to_dict(mode="json"))


def status_of(call: Any) -> int:
    try:
        call()
    except letta_client.APIStatusError as e:
        return e.status_code
    return 200


def main(url: str, agent_file: str, out_path: str) -> None:
    sdk = Letta(base_url=url, api_key=os.environ["LETTA_API_KEY"], max_retries=0)
    out: dict[str, Any] = {}

    agent = strict(sdk.agents.create(
        name="ada", model="offline", embedding="hash",
        memory_blocks=[{"label": "human", "value": ""}, {"label": "persona", "value": "A concise assistant."}]))
    out["agent"] = {"id": agent.id, "name": agent.name, "blocks": sorted(b.label for b in agent.memory.blocks),
                    "tools": sorted(t.name for t in agent.tools)}
    out["retrieved_name"] = strict(sdk.agents.retrieve(agent.id)).name
    out["listed"] = [strict(a).name for a in sdk.agents.list()]

    # a plain turn: LettaResponse {messages, stop_reason, usage}
    r = strict(sdk.agents.messages.create(agent.id, messages=[{"role": "user", "content": "My name is Ada."}]))
    out["plain"] = {"types": [m.message_type for m in r.messages], "stop": r.stop_reason.stop_reason,
                    "steps": r.usage.step_count, "ids_dated": all(m.id and m.date for m in r.messages),
                    "reply": [m.content for m in r.messages if m.message_type == "assistant_message"]}

    # streamed turns: whole messages, then token by token; stop_reason and usage_statistics last
    for key, tokens in (("streamed", False), ("tokens", True)):
        chunks = [strict(c) for c in sdk.agents.messages.create(agent.id, input="What is my name?", streaming=True,
                                                                stream_tokens=tokens)]
        out[key] = {"types": [c.message_type for c in chunks],
                    "text": "".join(c.content for c in chunks if c.message_type == "assistant_message")}

    # recall memory, newest first, paged 3 at a time until an empty page (the SDK's auto-pagination)
    first = sdk.agents.messages.list(agent.id, limit=3)
    out["first_page"] = [strict(m).message_type for m in first.items]
    paged = [strict(m) for m in sdk.agents.messages.list(agent.id, limit=3)]
    out["paged_ids"] = list(dict.fromkeys(m.id for m in paged))
    asc = [m.id for m in sdk.agents.messages.list(agent.id, limit=2, order="asc")]
    out["asc_ids"] = list(dict.fromkeys(asc))
    only = sdk.agents.messages.list(agent.id, include_return_message_types=["assistant_message"])
    out["assistant_only"] = sorted({strict(m).message_type for m in only})

    # core memory
    out["human"] = strict(sdk.agents.blocks.retrieve("human", agent_id=agent.id)).value
    out["persona_after"] = strict(sdk.agents.blocks.update("persona", agent_id=agent.id, value="Terse.")).value
    out["labels"] = sorted(strict(b).label for b in sdk.agents.blocks.list(agent.id))

    # archival memory
    made = [strict(p) for p in sdk.agents.passages.create(agent.id, text="The MemGPT paper pages memory like an OS.",
                                                          tags=["papers"])]
    out["passage_id"] = made[0].id
    out["passages"] = [strict(p).text for p in sdk.agents.passages.list(agent.id)]
    found = strict(sdk.agents.passages.search(agent.id, query="paging memory", top_k=3))
    out["search"] = {"count": found.count, "contents": [x.content for x in found.results]}

    # Agent Files: export this agent, import one of Letta's own
    exported = json.loads(sdk.agents.export_file(agent.id))
    out["export_names"] = [a["name"] for a in exported["agents"]]
    with open(agent_file, "rb") as f:
        imported = strict(sdk.agents.import_file(file=f, model="offline", embedding="hash"))
    out["imported"] = [strict(sdk.agents.retrieve(i)).name for i in imported.agent_ids]

    # tools: create, 409 on a second create, upsert, delete
    source = ('def shout(text: str) -> str:\n    """Upper-case a text.\n\n    Args:\n        text: The text.\n'
              '    """\n    return text.upper()\n')
    tool = strict(sdk.tools.create(source_code=source))
    out["tool"] = tool.name
    out["tool_listed"] = tool.name in [strict(t).name for t in sdk.tools.list()]
    out["tool_create_again"] = status_of(lambda: sdk.tools.create(source_code=source))
    out["tool_upsert"] = strict(sdk.tools.upsert(source_code=source)).name
    sdk.tools.delete(tool.id)
    out["tool_after_delete"] = tool.name in [t.name for t in sdk.tools.list()]

    # errors as Letta answers them
    out["status"] = {
        "unknown_agent": status_of(lambda: sdk.agents.retrieve("agent-00000000-0000-0000-0000-000000000000")),
        "empty_input": status_of(lambda: sdk.agents.messages.create(agent.id, input="")),
        "unserved": status_of(lambda: sdk.agents.messages.reset(agent.id)),
        "wrong_token": status_of(lambda: Letta(base_url=url, api_key="x" * 43, max_retries=0).agents.list()),
        "no_token": httpx.get(f"{url}/v1/agents/").status_code,
    }
    out["unserved_body"] = httpx.post(f"{url}/v1/agents/{agent.id}/reset-messages",
                                      headers={"Authorization": f"Bearer {os.environ['LETTA_API_KEY']}"}).json()

    temp = sdk.agents.create(name="temp", model="offline", embedding="hash")
    sdk.agents.delete(temp.id)
    out["temp_deleted"] = status_of(lambda: sdk.agents.retrieve(temp.id))
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
