"""Sandboxed tools run in a killable child process that cannot see the user's secrets."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from letta_nb.llm.base import ToolCall
from letta_nb.runtime.executor import ToolExecutor
from letta_nb.runtime.sandbox import SandboxOutcome, run_in_sandbox, sandbox_env
from letta_nb.runtime.tool_schema import tool_from_function


def sandboxed(source: str, name: str, arguments: dict | None = None, timeout: float | None = 30) -> SandboxOutcome:
    return asyncio.run(run_in_sandbox(source, name, arguments or {}, timeout=timeout))


def test_returns_json_value_and_captures_prints() -> None:
    source = "def add(a, b):\n    print('adding', a, b)\n    return {'sum': a + b, 'parts': [a, b]}\n"
    outcome = sandboxed(source, "add", {"a": 2, "b": 3})
    assert outcome.ok and outcome.error is None
    assert outcome.value == {"sum": 5, "parts": [2, 3]}
    assert outcome.stdout == "adding 2 3\n"
    assert outcome.duration_ms > 0


def test_async_tool_and_unserializable_value() -> None:
    source = (
        "import asyncio\n"
        "async def later(x: int) -> object:\n"
        "    await asyncio.sleep(0)\n"
        "    return {x}\n"
    )
    outcome = sandboxed(source, "later", {"x": 7})
    assert outcome.ok and outcome.value == "{7}"


def test_stray_stdout_does_not_corrupt_the_reply() -> None:
    source = (
        "import os, sys\n"
        "def noisy():\n"
        "    os.write(1, b'junk\\n')\n"
        "    sys.__stdout__.write('{\"ok\": false, \"error\": \"forged\"}\\n')  # flushed at exit, after the reply\n"
        "    return 1\n"
    )
    outcome = sandboxed(source, "noisy")
    assert outcome.ok and outcome.value == 1


def test_raising_tool() -> None:
    source = "def fail(x: int):\n    print('about to fail')\n    raise ValueError(f'bad x {x}')\n"
    outcome = sandboxed(source, "fail", {"x": 1})
    assert not outcome.ok
    assert outcome.error == "ValueError: bad x 1"
    assert outcome.stdout == "about to fail\n"


def test_interpreter_crash_reports_stderr_tail() -> None:
    source = "import os, sys\ndef crash():\n    sys.stderr.write('dying now\\n'); sys.stderr.flush()\n    os._exit(3)\n"
    outcome = sandboxed(source, "crash")
    assert not outcome.ok
    assert "exited with code 3" in outcome.error and "dying now" in outcome.error


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped yet
    except FileNotFoundError:
        return False
    except OSError:  # pragma: no cover - no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_hanging_tool_is_killed_with_its_process_group(tmp_path: Path) -> None:
    source = (
        "import os, subprocess, sys, time\n"
        "def hang(pid_file: str):\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "    with open(pid_file, 'w') as f:\n"
        "        f.write(f'{os.getpid()} {os.getpgid(0)} {child.pid}')\n"
        "    time.sleep(600)\n"
    )
    pid_file = tmp_path / "pids"
    outcome = sandboxed(source, "hang", {"pid_file": str(pid_file)}, timeout=2)
    assert not outcome.ok and outcome.error == "timed out after 2s"
    runner, group, grandchild = map(int, pid_file.read_text().split())
    assert group == runner != os.getpgid(0)  # the tool led its own group, apart from ours
    deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously; give the kernel time to reap
    while (_alive(runner) or _alive(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(runner) and not _alive(grandchild)


def test_env_hides_secrets_but_keeps_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("FOO_TOKEN", "t")
    monkeypatch.setenv("db_password", "p")
    monkeypatch.setenv("LETTA_NB_VISIBLE", "yes")
    env = sandbox_env({"EXTRA_KEY": "given on purpose"})
    assert "OPENAI_API_KEY" not in env and "FOO_TOKEN" not in env and "db_password" not in env
    assert env["EXTRA_KEY"] == "given on purpose" and env["PATH"] == os.environ["PATH"]

    outcome = sandboxed("import os\ndef keys():\n    return sorted(os.environ)\n", "keys")
    assert outcome.ok
    assert "OPENAI_API_KEY" not in outcome.value and "FOO_TOKEN" not in outcome.value
    assert "PATH" in outcome.value and "LETTA_NB_VISIBLE" in outcome.value


def test_executor_runs_sandboxed_spec_end_to_end() -> None:
    def shout(text: str, times: int = 1) -> str:
        """Shout the text."""
        import os  # sandboxed tools import what they need inside their body

        print("shouting")
        return text.upper() * times + ("!" if "OPENAI_API_KEY" not in os.environ else "?")

    def boom() -> None:
        raise KeyError("missing")

    specs = {s.name: s for s in (tool_from_function(shout, sandbox=True, parallel_safe=True),
                                 tool_from_function(boom, sandbox=True, parallel_safe=True),
                                 tool_from_function(shout, name="shout_slowly", sandbox=True, timeout=30))}
    calls = [ToolCall("1", "shout", '{"text": "hi", "times": 2}'), ToolCall("2", "boom", "{}"),
             ToolCall("3", "shout_slowly", '{"text": "yo"}'), ToolCall("4", "shout", '{"text": 5}')]

    async def main() -> list:
        async with ToolExecutor() as executor:
            return await executor.execute(calls, specs)

    ok, raised, renamed, invalid = asyncio.run(main())
    assert (ok.status, ok.value, ok.content, ok.stdout) == ("success", "HIHI!", "HIHI!", "shouting\n")
    assert (raised.status, raised.error_type, raised.content) == ("error", "KeyError", "KeyError: 'missing'")
    assert renamed.value == "YO!"
    assert invalid.error_type == "InvalidArgumentError"
