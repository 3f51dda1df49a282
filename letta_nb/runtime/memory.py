"""Core memory: how blocks are rendered into the system prompt and how memory tools edit them.

Edits follow Letta's semantics and fail loudly (a :class:`~letta_nb.errors.MemoryEditError` whose text
goes back to the model as the tool's error) rather than half-applying: a replace of text that is not in
the block, an ambiguous replace, an edit of a read-only block, or a value over the block's limit leave the
block unchanged. Edits apply to a :class:`WorkingMemory` (a per-step copy); the step writer commits the
changed values together with the step's messages.
"""

from __future__ import annotations

from dataclasses import replace

from letta_nb.errors import BlockLimitError, BlockNotFoundError, MemoryEditError, ReadOnlyBlockError
from letta_nb.schemas import Block

__all__ = ["WorkingMemory", "render_memory", "compile_system_prompt", "DEFAULT_SYSTEM", "DEFAULT_SYSTEM_V1"]

DEFAULT_SYSTEM = (
    "You are a stateful agent with persistent memory, running inside a Jupyter kernel (letta_nb).\n"
    "Your core memory blocks below are always visible to you; keep them current with core_memory_append, "
    "core_memory_replace, memory_insert, memory_replace and memory_rethink.\n"
    "Older conversation is in recall memory (conversation_search); long-term facts and documents are in "
    "archival memory (archival_memory_insert / archival_memory_search).\n"
    "Always reply to the user with send_message; other tools continue your turn."
)
# A letta_v1_agent replies in its own message content (runtime/replies.py): no send_message to call.
DEFAULT_SYSTEM_V1 = DEFAULT_SYSTEM.replace(
    "Always reply to the user with send_message; other tools continue your turn.",
    "Reply to the user in your message; a tool call continues your turn, a message without one ends it.")


def render_memory(blocks: list[Block]) -> str:
    parts = ["<memory_blocks>", "The following memory blocks are currently engaged in your core memory unit:", ""]
    for b in blocks:
        parts += [
            f"<{b.label}>",
            "<description>",
            b.description or f"The {b.label} block.",
            "</description>",
            "<metadata>",
            f"- chars_current={len(b.value)}",
            f"- chars_limit={b.limit}",
            *(["- read_only=true"] if b.read_only else []),
            "</metadata>",
            "<value>",
            b.value,
            "</value>",
            f"</{b.label}>",
            "",
        ]
    parts.append("</memory_blocks>")
    return "\n".join(parts)


def compile_system_prompt(system: str, blocks: list[Block]) -> str:
    return f"{system}\n\n{render_memory(blocks)}"


class WorkingMemory:
    """A step's view of the agent's blocks; a block is copied the first time it is edited (most steps
    edit none), and ``changed`` holds the labels whose value was edited."""

    def __init__(self, blocks: list[Block]):
        self._blocks = {b.label: b for b in blocks}
        self.changed: set[str] = set()

    @property
    def blocks(self) -> list[Block]:
        return list(self._blocks.values())

    def get(self, label: str) -> Block:
        try:
            return self._blocks[label]
        except KeyError:
            raise BlockNotFoundError(label, list(self._blocks)) from None

    def _set(self, label: str, value: str) -> None:
        block = self.get(label)
        if block.read_only:
            raise ReadOnlyBlockError(f"Block {label!r} is read-only; its value cannot be changed by the agent.")
        if len(value) > block.limit:
            raise BlockLimitError(label, len(value), block.limit)
        self._blocks[label] = replace(block, value=value)  # never mutate the session's committed block
        self.changed.add(label)

    # --- Letta's memory tools --------------------------------------------------------------------------
    def append(self, label: str, content: str) -> None:
        """Add ``content`` as new lines of the block, unless those lines are already there: a model told the
        same fact twice ("My name is Ada." in two chats) must not store it twice."""
        old = self.get(label).value
        if content.strip() and f"\n{content.strip()}\n" in f"\n{old}\n":
            return
        self._set(label, f"{old}\n{content}" if old else content)

    def replace_text(self, label: str, old: str, new: str) -> None:
        value = self.get(label).value
        if not old:
            raise MemoryEditError("old_content must not be empty; use core_memory_append to add text.")
        if old not in value:
            raise MemoryEditError(f"Old content {old!r} not found in memory block {label!r}.")
        self._set(label, value.replace(old, new))

    def replace_unique(self, label: str, old: str, new: str) -> None:
        value = self.get(label).value
        count = value.count(old) if old else 0
        if count == 0:
            raise MemoryEditError(f"No replacement was performed: {old!r} does not appear verbatim in block {label!r}.")
        if count > 1:
            raise MemoryEditError(
                f"No replacement was performed: {old!r} appears {count} times in block {label!r}; "
                "include more surrounding text so it is unique."
            )
        self._set(label, value.replace(old, new, 1))

    def insert(self, label: str, text: str, line: int = -1) -> None:
        lines = self.get(label).value.split("\n") if self.get(label).value else []
        if line == -1:
            line = len(lines)
        if not 0 <= line <= len(lines):
            raise MemoryEditError(f"insert_line {line} is out of range for block {label!r} "
                                  f"(0..{len(lines)}, or -1 for the end).")
        lines[line:line] = text.split("\n")
        self._set(label, "\n".join(lines))

    def rethink(self, label: str, value: str) -> None:
        self._set(label, value)
