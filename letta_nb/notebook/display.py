"""What ``%letta`` subcommands return for display: DataFrames for tables, small objects for the rest.

Commands return values (Jupyter shows the last expression, ``-o``/``_`` can keep it) rather than printing.
pandas is imported inside each function, never at module import, so ``%load_ext letta_nb`` stays fast.
"""

from __future__ import annotations

from typing import Any

from letta_nb import _repr

__all__ = ["MemoryView", "Notice", "agents_frame", "passages_frame", "records_frame"]


def records_frame(rows: list[dict[str, Any]], columns: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def agents_frame(agents: list[Any], current: str | None) -> Any:
    rows = [{"name": a.name, "current": a.name == current, "model": a.model, "embedding": a.embedding,
             "messages": a.last_seq, "tools": len(a.tools), "blocks": ", ".join(b.label for b in a.blocks),
             "created_at": a.created_at, "id": a.id} for a in agents]
    return records_frame(rows, ["name", "current", "model", "embedding", "messages", "tools", "blocks",
                                "created_at", "id"])


def passages_frame(passages: list[Any]) -> Any:
    rows = [{"score": p.score, "text": p.text, "tags": ", ".join(p.tags), "created_at": p.created_at, "id": p.id}
            for p in passages]
    return records_frame(rows, ["score", "text", "tags", "created_at", "id"])


class MemoryView:
    """An agent's core-memory blocks: a card per block in HTML, a plain listing as text."""

    def __init__(self, agent: str, blocks: list[Any]):
        self.agent, self.blocks = agent, list(blocks)

    def __getitem__(self, label: str) -> Any:
        for b in self.blocks:
            if b.label == label:
                return b
        raise KeyError(label)

    def _repr_html_(self) -> str:
        cards = "".join(_repr.block_html(b) for b in self.blocks)
        return f"<div><b>Core memory of {_repr.esc(self.agent)}</b>{cards}</div>"

    def _repr_markdown_(self) -> str:
        return f"**Core memory of {self.agent}**\n\n" + "\n\n".join(_repr.block_md(b) for b in self.blocks)

    def __repr__(self) -> str:
        lines = [f"Core memory of {self.agent}:"]
        for b in self.blocks:
            lines.append(f"  [{b.label}] ({b.chars}/{b.limit}) " + _repr.short(b.value, 200).replace("\n", " / "))
        return "\n".join(lines)


class Notice:
    """A one-line confirmation ("Agent 'sam' created ..."): text in a terminal, a muted line in a notebook."""

    def __init__(self, text: str, value: Any = None):
        self.text, self.value = text, value

    def _repr_html_(self) -> str:
        return f'<span style="color:#57606a">{_repr.esc(self.text)}</span>'

    def __repr__(self) -> str:
        return self.text
