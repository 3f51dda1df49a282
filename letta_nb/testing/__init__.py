"""Test and demo helpers: the loopback OpenAI-compatible server (a backend like any other, not a mock)."""

from letta_nb.testing.loopback import FAULT_KINDS, Faults, Latency, Limits, LoopbackServer, ScriptedReply

__all__ = ["LoopbackServer", "Latency", "Limits", "Faults", "ScriptedReply", "FAULT_KINDS"]
