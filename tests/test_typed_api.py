"""What a type checker sees of the public API: mypy ``--strict`` on a user's script, as an editor would run it.

The sync/async twins are typed descriptors (letta_nb/_twins.py); these tests check the result from the
outside: a script written against the README's API type-checks, the types mypy infers are the real ones
(``reveal_type`` against the expected type written beside it: ``AgentState``, not ``Any``), the same script
runs, and mistakes a user makes (a misspelt method, a wrong argument, awaiting a blocking call, forgetting
to await an async one) are errors before anything runs.

mypy follows letta_nb's own modules silently (errors inside the package are .ci/run's business, not the
user's) and skips third-party packages: that can only turn a type into ``Any``, which the exact expected
types here refuse, so it cannot hide a mistake; it keeps the run to seconds instead of a minute.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

MYPY_CONFIG = """\
[mypy]
strict = True
follow_imports = skip
[mypy-letta_nb.*]
follow_imports = silent
"""

# A user's script. ``# -> T`` after a reveal_type is the type mypy must infer there, exactly.
GOOD = '''\
import asyncio
import sys

from typing_extensions import reveal_type

import letta_nb


def shout(text: str) -> str:
    """Say ``text`` louder."""
    return text.upper()


client = letta_nb.connect(sys.argv[1])
blocks = [{"label": "persona", "value": "A concise assistant."}, {"label": "human", "value": ""}]
agent = client.agents.create("sam", memory_blocks=blocks, tools=[shout])
reveal_type(agent)  # -> letta_nb.schemas.AgentState
agents = client.agents.list()
reveal_type(agents)  # -> list[letta_nb.schemas.AgentState]
r = client.agents.messages.create(agent, input="My name is Ada.")
reveal_type(r)  # -> letta_nb.schemas.Response
reveal_type(r.text)  # -> str
reveal_type(client.agents.blocks.retrieve("sam", "human"))  # -> letta_nb.schemas.Block
reveal_type(client.agents.blocks.modify(agent.id, "human", value="Name: Ada"))  # -> letta_nb.schemas.Block
reveal_type(client.agents.passages.create("sam", "Paging moves memory.", tags=["os"]))  # -> letta_nb.schemas.Passage
reveal_type(client.agents.passages.search("sam", "paging", top_k=3))  # -> list[letta_nb.schemas.Passage]
reveal_type(client.agents.messages.list(agent, limit=2))  # -> list[letta_nb.schemas.Message]
reveal_type(client.agents.files.list(agent))  # -> list[letta_nb.embeddings.ingest_report.UploadedFile]
reveal_type(client.tools.retrieve("shout"))  # -> letta_nb.runtime.tool_schema.ToolSpec
reveal_type(client.agents.tools.attach(agent, "shout"))  # -> list[str]
reveal_type(client.query("SELECT name FROM agents"))  # -> pandas.core.frame.DataFrame
reveal_type(client.agents.messages.cancel)  # -> def (agent_id: str | letta_nb.schemas.AgentState) -> bool
for event in client.agents.messages.stream(agent, "What is my name?"):
    reveal_type(event)  # -> letta_nb.runtime.events.StreamEvent
reveal_type(letta_nb.ChatWidget.send)  # -> def (self: letta_nb.notebook.widget.ChatWidget, text: str) -> bool


async def main() -> None:
    r2 = await client.agents.messages.acreate(agent, input="What is my name?")
    reveal_type(r2)  # -> letta_nb.schemas.Response
    reveal_type(await client.agents.alist())  # -> list[letta_nb.schemas.AgentState]
    reveal_type(await client.agents.passages.asearch(agent, "paging"))  # -> list[letta_nb.schemas.Passage]
    async for event in client.agents.messages.astream(agent, "hello"):
        reveal_type(event)  # -> letta_nb.runtime.events.StreamEvent


asyncio.run(main())
client.close()
print("ran to the end")
'''

# Mistakes, one a line; ``# error: TEXT`` is what mypy must say about that line.
BAD = '''\
import letta_nb

client = letta_nb.connect(":memory:")
agent = client.agents.create("sam")
client.agents.lsit()  # error: "Agents" has no attribute "lsit"
client.agents.messages.create(agent, input=3)  # error: Argument "input" has incompatible type "int"
client.agents.messages.create(agent, "hi", mesages=[])  # error: Unexpected keyword argument "mesages"
client.agents.messages.create(42, "hi")  # error: Argument 1 has incompatible type "int"
client.agents.blocks.retrieve(agent, 3)  # error: Argument 2 has incompatible type "int"
client.agents.messages.acreate(agent, "hi").text  # error: "Coroutine[Any, Any, Response]" has no attribute "text"
letta_nb.ChatWidgt  # error: Module has no attribute "ChatWidgt"


async def main() -> None:
    await client.agents.messages.create(agent, "hi")  # error: Incompatible types in "await" (actual type "Response"
'''


def _expected(script: str, marker: str) -> dict[int, str]:
    """Line number -> what the ``# -> ...`` or ``# error: ...`` comment on that line expects."""
    return {n: line.split(marker, 1)[1].strip() for n, line in enumerate(script.splitlines(), 1) if marker in line}


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """mypy --strict on both scripts in one run (one cache, one start-up)."""
    work = tmp_path_factory.mktemp("typed_api")
    (work / "good.py").write_text(GOOD)
    (work / "bad.py").write_text(BAD)
    (work / "mypy.ini").write_text(MYPY_CONFIG)
    env = {**os.environ, "MYPYPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", ".mypy_cache",
                           "--show-error-codes", "--no-pretty", "good.py", "bad.py"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert "error: Cannot find implementation or library stub" not in done.stdout, done.stdout
    return done.stdout + done.stderr


def _lines(output: str, script: str, kind: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for m in re.finditer(rf"^{script}:(\d+): {kind}: (.*)$", output, re.M):
        found.setdefault(int(m.group(1)), []).append(m.group(2))
    return found


def test_a_user_script_type_checks_strictly_with_the_real_types(mypy_output: str) -> None:
    assert _lines(mypy_output, "good.py", "error") == {}, mypy_output
    revealed = {n: [re.sub(r'^Revealed type is "(.*)"$', r"\1", note) for note in notes]
                for n, notes in _lines(mypy_output, "good.py", "note").items()}
    expected = _expected(GOOD, "# -> ")
    assert len(expected) >= 20
    for line, want in expected.items():
        assert revealed.get(line) == [want], f"good.py:{line}: {GOOD.splitlines()[line - 1].strip()}"
    assert set(revealed) == set(expected)


def test_mistakes_are_type_errors_before_anything_runs(mypy_output: str) -> None:
    errors = _lines(mypy_output, "bad.py", "error")
    expected = _expected(BAD, "# error: ")
    assert len(expected) == 8
    for line, want in expected.items():
        assert any(want in e for e in errors.get(line, [])), f"bad.py:{line}: {errors.get(line)}\n{mypy_output}"
    assert set(errors) == set(expected), mypy_output  # and nothing else is an error


def test_the_type_checked_script_runs(tmp_path: Path) -> None:
    """The script mypy accepted is a working program against the real runtime (offline model, a store file)."""
    (tmp_path / "good.py").write_text(GOOD)
    done = subprocess.run([sys.executable, "good.py", str(tmp_path / "s.db")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ran to the end")
    assert "Runtime type is 'AgentState'" in done.stderr  # typing_extensions.reveal_type at run time
