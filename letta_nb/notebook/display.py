"""What ``%letta`` subcommands return for display: DataFrames for tables, small objects for the rest.

Commands return values (Jupyter shows the last expression, ``-o``/``_`` can keep it) rather than printing.
pandas is imported inside each function, never at module import, so ``%load_ext letta_nb`` stays fast.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, cast

from letta_nb import _repr

__all__ = ["MemoryView", "Notice", "agents_frame", "passages_frame", "records_frame", "steps_frame"]

_MS: list[Hashable] = ["total_ms", "llm_ms", "tools_ms", "db_ms", "ttft_ms"]
_STYLED_MAX_ROWS = 500  # a Styler renders every row: past this the plain (truncated) repr is shown


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


def steps_frame(raw: Any, names: dict[str, str]) -> Any:
    """``probes.steps()`` for reading: milliseconds first, local times to the millisecond, the agent's name and
    short ids (the last 8 characters: unique among the runtime's steps), styled when displayed.
    ``letta_nb.probes.steps()`` keeps the tidy frame (UTC, full ids) for analysis."""
    import pandas as pd

    df = pd.DataFrame({col: raw[col] for col in _MS})
    df["agent"] = raw["agent_id"].map(lambda i: names.get(i, str(i)[-8:])).astype("string")
    df["step"] = raw["step_id"].str[-8:]
    df["n"] = raw["step_index"]
    df["tools"] = raw["tools"]
    df["stop"] = raw["stop_reason"]
    df["tokens in/out"] = raw["prompt_tokens"].astype(str) + " / " + raw["completion_tokens"].astype(str)
    df["model"] = raw["model"]
    local = _local_zone()
    df["started"] = raw["started_at"].dt.tz_convert(local).dt.floor("ms")
    return _styled(df)


def _local_zone() -> Any:
    from datetime import datetime

    return datetime.now().astimezone().tzinfo


def _styled(df: Any) -> Any:
    """``df`` as a DataFrame whose notebook display is a pandas Styler: ms to one decimal with a bar on the
    total, times as HH:MM:SS.mmm, no index. What it derives (a filter, a column) is a plain DataFrame."""
    import pandas as pd

    class StyledSteps(pd.DataFrame):
        @property
        def _constructor(self) -> Any:
            return pd.DataFrame

        def _repr_html_(self) -> str | None:
            if len(self) > _STYLED_MAX_ROWS or len(self) == 0:
                return cast(Any, pd.DataFrame(self))._repr_html_()  # type: ignore[no-any-return]
            style = (self.style.format("{:.1f}", subset=_MS, na_rep="–")
                     .format(lambda t: t.strftime("%H:%M:%S.%f")[:-3], subset=cast(list[Hashable], ["started"]))
                     .bar(subset=["total_ms"], color="#54aeff80", vmin=0)
                     .set_properties(subset=_MS, **{"text-align": "right", "font-variant-numeric": "tabular-nums"})
                     .set_table_styles([{"selector": "th", "props": "text-align: left; white-space: nowrap"}])
                     .hide(axis="index"))
            return str(style.to_html())

    return StyledSteps(df)


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
