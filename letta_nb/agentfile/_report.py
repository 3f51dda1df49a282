"""What an Agent File import did, item by item: a result that renders itself and becomes a DataFrame.

An import changes things a user should know about without reading the file: a model replaced by an
override, a block whose limit was raised to fit its value, a tool that became a stub because letta_nb cannot
run it, a sleep-time group whose agents now run on their own. Each is one :class:`ImportItem` with an
``action`` saying what happened, so ``report.to_dataframe()`` filters and counts them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from letta_nb._repr import esc, short
from letta_nb.schemas import AgentState

__all__ = ["ACTIONS", "ImportItem", "ImportReport"]

# imported: as in the file; mapped: to a letta_nb equivalent; raised: a limit raised to fit; sandboxed: custom code,
# untrusted; stub: kept so calls get a clear error; reused / kept: a stored tool of that name was used; unsupported:
# not imported (letta_nb has no equivalent); dropped: left out, with the reason.
ACTIONS = ("imported", "mapped", "raised", "sandboxed", "stub", "reused", "kept", "unsupported", "dropped")
_COLOR = {"imported": "#2da44e", "mapped": "#0969da", "raised": "#bf8700", "sandboxed": "#8250df",
          "stub": "#cf222e", "reused": "#6e7781", "kept": "#6e7781", "unsupported": "#cf222e", "dropped": "#bf8700"}


@dataclass(frozen=True)
class ImportItem:
    """One thing the import did: ``kind`` (agent, model, embedding, block, tool, rule, messages, group, ...),
    its ``name``, the ``agent`` it belongs to (if any), the ``action`` (:data:`ACTIONS`) and a ``detail``."""

    kind: str
    name: str
    action: str
    agent: str = ""
    detail: str = ""


@dataclass
class ImportReport:
    """The result of ``client.agents.import_file``: the agents as stored and what happened to each part."""

    source: str
    agents: list[AgentState] = field(default_factory=list)
    items: list[ImportItem] = field(default_factory=list)
    double_encoded: bool = False

    def add(self, kind: str, name: str, action: str, agent: str = "", detail: str = "") -> None:
        self.items.append(ImportItem(kind, name, action, agent, detail))

    def where(self, action: str) -> list[ImportItem]:
        return [i for i in self.items if i.action == action]

    @property
    def agent(self) -> AgentState:
        """The file's first (main) agent."""
        return self.agents[0]

    @property
    def mapped(self) -> list[ImportItem]:
        return self.where("mapped")

    @property
    def raised(self) -> list[ImportItem]:
        return self.where("raised")

    @property
    def unsupported(self) -> list[ImportItem]:
        """What letta_nb could not import or cannot run (stubs included)."""
        return [i for i in self.items if i.action in ("unsupported", "stub", "dropped")]

    @property
    def groups(self) -> list[ImportItem]:
        return [i for i in self.items if i.kind == "group"]

    def summary(self) -> str:
        names = ", ".join(repr(a.name) for a in self.agents)
        kinds = Counter(i.kind for i in self.items if i.action not in ("unsupported", "dropped"))
        parts = [f"{kinds[k]} {k}s" for k in ("block", "tool", "rule") if kinds[k]]
        counts = Counter(i.action for i in self.items)
        flagged = ", ".join(f"{counts[a]} {a}" for a in ACTIONS[1:] if counts[a])
        return (f"{len(self.agents)} agent(s) {names}" + (f"; {', '.join(parts)}" if parts else "")
                + (f"; {flagged}" if flagged else ""))

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame([asdict(i) for i in self.items], columns=["kind", "name", "action", "agent", "detail"])

    def __repr__(self) -> str:
        lines = [f"<ImportReport from {self.source}: {self.summary()}>"]
        notable = [i for i in self.items if i.action not in ("imported", "reused")]
        lines += [f"  {i.action} {i.kind} {i.name}" + (f" ({i.agent})" if i.agent else "")
                  + (f": {short(i.detail, 160)}" if i.detail else "") for i in notable[:30]]
        if len(notable) > 30:
            lines.append(f"  ... and {len(notable) - 30} more (report.to_dataframe())")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{esc(i.kind)}</td><td><code>{esc(short(i.name, 80))}</code></td>"
            f'<td style="color:{_COLOR.get(i.action, "inherit")}">{esc(i.action)}</td><td>{esc(i.agent)}</td>'
            f"<td>{esc(short(i.detail, 200))}</td></tr>"
            for i in self.items[:300]
        )
        more = f"<p>… and {len(self.items) - 300} more</p>" if len(self.items) > 300 else ""
        return (f"<div><b>Agent File import</b> from <code>{esc(self.source)}</code>: {esc(self.summary())}"
                "<table><thead><tr><th>kind</th><th>name</th><th>action</th><th>agent</th><th>detail</th></tr>"
                f"</thead><tbody>{rows}</tbody></table>{more}</div>")
