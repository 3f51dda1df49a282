"""The ``openai`` SDK's import (0.5-3 s) starts in the background when a remote model or embedder is built.

It used to be paid, without a word, by the first archival insert or turn of such an agent. In a fresh
interpreter: creating an agent on the loopback server starts the import in a named daemon thread, before
any request; once that thread is done the SDK is loaded, so the insert does not import it.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, sys, threading
import letta_nb
from letta_nb.testing import LoopbackServer

before = "openai" in sys.modules
client = letta_nb.connect(":memory:")
with LoopbackServer() as srv:
    client.agents.create(name="wire", model=f"openai/loopback-chat?base_url={srv.base_url}",
                         embedding=f"openai/text-embedding-3-small?base_url={srv.base_url}&dimensions=384")
    warming = [t for t in threading.enumerate() if t.name == "letta_nb-import-openai"]
    requests_before = len(srv.requests)
    for t in warming:
        t.join()
    loaded = "openai" in sys.modules
    client.agents.passages.create("wire", "The MemGPT paper pages memory like an OS.")
    embedded = [r for r in srv.requests if r.get("inputs")]
client.close()
print(json.dumps({"before": before, "warming": len(warming), "loaded": loaded,
                  "requests_before": requests_before, "embedded": len(embedded)}))
"""


def test_creating_a_remote_agent_starts_the_sdk_import_in_the_background() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] is False  # nothing imported it earlier: what follows is the warm-up's doing
    assert out["loaded"] is True and out["requests_before"] == 0
    # the thread was seen running, or had already finished (a fast disk): either way before any request
    assert out["warming"] in (0, 1) and out["embedded"] == 1
