"""How one step's model output becomes the reply, reasoning and tool calls (Letta's two agent types).

The one place that decides what a model's text *is*:
- ``send_message``'s ``message`` is the reply, streamed as it arrives (:class:`SendMessageParser`).
- A provider's reasoning field (``reasoning_content`` / ``reasoning``) is reasoning, always.
- Message content is the reply for a ``letta_v1_agent`` (Letta's v1 loop: the content is the assistant
  message, a step without tool calls ends the turn), and for a ``memgpt_agent`` that has no terminal tool
  to reply with (``include_base_tools=False``: content is its only way to answer). A ``memgpt_agent`` that
  has ``send_message`` writes inner thoughts in its content before calling it: that content streams as
  reasoning, and if the step ends without any tool call it was the reply after all and is given as one
  :class:`AssistantDelta` then (no tokens are lost; they arrive at the end of the step).
- A content that is exactly a call of an offered tool, written as JSON text (llm/text_calls.py), becomes
  that tool call, flagged ``recovered``. While such content streams it is held back (it starts with
  ``{``, a code fence or ``<tool_call>``) until the step's end decides; anything else is shown as it comes.

Events are built only when someone watches the stream; the raw pieces needed to keep a cancelled reply
are kept either way (a list append per delta).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection

from letta_nb.llm.base import Completion, LLMEvent, ReasoningTextDelta, TextDelta, ToolCall, ToolCallDelta
from letta_nb.llm.text_calls import could_be_call, parse_text_call
from letta_nb.runtime.base_tools import TERMINAL_TOOLS
from letta_nb.runtime.events import AssistantDelta, ReasoningDelta, SendMessageParser, StreamEvent

__all__ = ["StepOutput", "content_is_reply", "reply_of"]

V1_AGENT = "letta_v1_agent"


def content_is_reply(agent_type: str, tool_names: Collection[str]) -> bool:
    """Whether a model's message content is the reply (else inner thoughts before a tool call)."""
    return agent_type == V1_AGENT or TERMINAL_TOOLS.isdisjoint(tool_names)


def reply_of(call: ToolCall) -> str:
    """The reply a terminal tool call sends (``""`` when its arguments hold none)."""
    return SendMessageParser().feed(call.arguments)


class StepOutput:
    """One model call's stream, routed: :meth:`feed` each event, then :meth:`finish` with the Completion."""

    def __init__(self, emit: Callable[[StreamEvent], None] | None, *, content_reply: bool,
                 offered: Collection[str]):
        self.emit = emit  # None: nobody watches the stream
        self.content_reply = content_reply
        self.offered = offered
        self.content: list[str] = []  # every content piece, raw
        self.shown = 0  # how many of them were shown (the rest are held: maybe a call written as JSON)
        self.holding: bool | None = None  # None until the content's start tells whether it may be a call
        self.reply_args: dict[int, list[str]] = {}  # terminal tools' argument pieces, by call index
        self._names: dict[int, str] = {}
        self._parsers: dict[int, SendMessageParser] = {}

    # ---- streaming -----------------------------------------------------------------------------------
    def feed(self, event: LLMEvent) -> None:
        if isinstance(event, ToolCallDelta):
            if event.name:
                self._names[event.index] = event.name
            if self._names.get(event.index) in TERMINAL_TOOLS and event.arguments:
                self.reply_args.setdefault(event.index, []).append(event.arguments)
                if self.emit is not None:
                    text = self._parsers.setdefault(event.index, SendMessageParser()).feed(event.arguments)
                    if text:
                        self.emit(AssistantDelta(text))
        elif isinstance(event, TextDelta):
            self.content.append(event.text)
            if self.holding is None:
                self.holding = could_be_call("".join(self.content))
            if self.holding is False:
                self._show()
        elif isinstance(event, ReasoningTextDelta) and self.emit is not None:
            self.emit(ReasoningDelta(event.text))

    def _show(self) -> None:
        pieces, self.shown = self.content[self.shown:], len(self.content)
        if self.emit is not None and pieces:
            text = "".join(pieces)
            self.emit(AssistantDelta(text) if self.content_reply else ReasoningDelta(text))

    # ---- the step's end ------------------------------------------------------------------------------
    def finish(self, completion: Completion) -> Completion:
        """The completion the loop acts on: a call written as JSON text becomes a real (recovered) call; the
        events that were held back or that only the end could decide are emitted."""
        if not completion.tool_calls and self.holding is not False:
            parsed = parse_text_call(completion.content, self.offered)
            if parsed is not None:
                name, arguments = parsed
                digest = hashlib.sha1(f"{name}:{arguments}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
                call = ToolCall(f"call_text_{digest}", name, arguments, recovered=True)
                if self.emit is not None and name in TERMINAL_TOOLS:
                    text = reply_of(call)
                    if text:
                        self.emit(AssistantDelta(text))
                self.shown = len(self.content)
                return Completion(None, (call,), completion.usage, "tool_calls", completion.ttft_ms,
                                  completion.reasoning)
        if not self.content_reply and not completion.tool_calls and completion.content:
            # a memgpt agent's content with no call after it: the reply after all, given whole
            self.shown = len(self.content)
            if self.emit is not None:
                self.emit(AssistantDelta(completion.content))
            return completion
        self._show()
        return completion

    def partial_reply(self) -> str:
        """What the user was given of the reply so far (kept when the step is cancelled)."""
        parts = ["".join(self.content[:self.shown])] if self.content_reply else []
        parts += [reply_of(ToolCall("", "", "".join(p))) for _, p in sorted(self.reply_args.items())]
        return "".join(parts)
