"""What an upload did, file by file: a result object that renders itself and becomes a DataFrame.

Per-file errors are results, not exceptions: one unreadable file in a directory of a hundred must not
cost the other ninety-nine, and the report says exactly which failed and why. A file with no text (0
bytes, only whitespace, a PDF with no text layer) and a symlinked directory are ``skipped`` rows with a
``note`` saying why: nothing of them is stored, and they are not errors.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from letta_nb._repr import esc, short

__all__ = ["FileResult", "IngestReport", "UploadedFile", "STATUSES"]

STATUSES = ("added", "replaced", "unchanged", "skipped", "error")
_COLOR = {"added": "#2da44e", "replaced": "#bf8700", "unchanged": "#6e7781", "skipped": "#6e7781",
          "error": "#cf222e"}


@dataclass(frozen=True)
class FileResult:
    path: str
    status: str  # added | replaced | unchanged | skipped | error
    chunks: int = 0
    bytes: int = 0
    error: str | None = None
    splitter: str | None = None
    note: str | None = None  # why a ``skipped`` file was not stored, or what a stored one lost (NULs made U+FFFD)


@dataclass(frozen=True)
class UploadedFile:
    """A file stored for an agent (``client.agents.files.list``)."""

    path: str
    content_hash: str
    size_bytes: int
    chunks: int
    chunking: str
    updated_at: dt.datetime


@dataclass
class IngestReport:
    agent_id: str
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    workers: str = ""  # how chunking ran, e.g. "2 processes" or "thread"

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def chunks(self) -> int:
        return sum(f.chunks for f in self.files if f.status in ("added", "replaced"))

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files if f.status in ("added", "replaced"))

    @property
    def errors(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "error"]

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(s)} {s}" for s in STATUSES if self.count(s))
        return (f"{len(self.files)} file(s): {counts or 'nothing'}; {self.chunks} chunks, "
                f"{self.bytes / 1e6:.2f} MB in {self.seconds:.2f} s")

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame([asdict(f) for f in self.files],
                            columns=["path", "status", "chunks", "bytes", "error", "splitter", "note"])

    def __repr__(self) -> str:
        lines = [f"<IngestReport {self.summary()}>"]
        lines += [f"  error {f.path}: {f.error}" for f in self.errors[:10]]
        lines += [f"  skipped {f.path}: {f.note}" for f in self.skipped[:10]]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f'<tr><td><code>{esc(short(f.path, 120))}</code></td>'
            f'<td style="color:{_COLOR.get(f.status, "inherit")}">{esc(f.status)}</td>'
            f'<td style="text-align:right">{f.chunks}</td><td style="text-align:right">{f.bytes:,}</td>'
            f'<td>{esc(short(f.error or f.note or f.splitter or "", 200))}</td></tr>'
            for f in self.files[:200]
        )
        more = f"<p>… and {len(self.files) - 200} more</p>" if len(self.files) > 200 else ""
        return (f"<div><b>Upload</b>: {esc(self.summary())}<table><thead><tr><th>path</th><th>status</th>"
                f"<th>chunks</th><th>bytes</th><th>note</th></tr></thead><tbody>{rows}</tbody></table>{more}</div>")
