"""NUL characters inside uploaded files: the same outcome on SQLite and PostgreSQL.

PostgreSQL's text refuses NUL (SQLite keeps it), so a file that uploads on one backend must upload on the
other. The policy (letta_nb/embeddings/chunking.py): a text file with stray NULs is stored with each NUL
made U+FFFD and its report row counts them; a binary file (control bytes over a small share) is an
``error`` row, nothing stored; a UTF-16 file with its byte-order mark is text. Every upload test runs on
both backends, on real stores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import letta_nb
from letta_nb.embeddings.chunking import ChunkSettings, chunk_file, chunk_text
from letta_nb.errors import FileIngestError

NUL = "\x00"
FFFD = "\ufffd"
SMALL = ChunkSettings(chunk_size=48, chunk_overlap=0)


@pytest.fixture(params=["sqlite", "postgres"])
def nul_client(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[letta_nb.Client]:
    url = tmp_path / "s.db" if request.param == "sqlite" else request.getfixturevalue("pg_store_url")
    with letta_nb.connect(url) as c:
        c.agents.create("sam", model="offline")
        yield c


def _sentences(n: int) -> list[str]:
    return [f"Otter number {i} floats on its back in the kelp and cracks a sea urchin on a stone." for i in range(n)]


def _upload(c: letta_nb.Client, path: Path) -> Any:
    report = c.agents.files.upload("sam", path, chunk_size=SMALL.chunk_size, chunk_overlap=SMALL.chunk_overlap,
                                   progress=False)
    assert len(report.files) == 1
    return report.files[0]


def test_text_file_with_nuls_at_chunk_boundaries_is_stored_with_fffd(nul_client, tmp_path):
    c = nul_client
    # A NUL opens the file, closes it, and ends every sentence: the sentence splitter cuts next to them.
    text = NUL + " ".join(s + NUL for s in _sentences(40)) + NUL
    path = tmp_path / "notes.txt"
    path.write_bytes(text.encode())
    _, expected = chunk_text(text.replace(NUL, FFFD), "text", SMALL)
    assert len(expected) >= 5 and all(e.endswith(FFFD) or FFFD in e for e in expected)

    row = _upload(c, path)
    assert (row.status, row.error, row.chunks) == ("added", None, len(expected)), row
    assert row.note is not None and f"{text.count(NUL)} NUL character(s)" in row.note and NUL not in row.note
    stored = [p.text for p in c.agents.passages.list("sam")]
    assert sorted(stored) == sorted(expected)  # exactly the chunks of the text with U+FFFD in each NUL's place
    assert not any(NUL in s for s in stored)
    hits = c.agents.passages.search("sam", "Otter number 17 kelp", top_k=3)
    assert any("Otter number 17 " in h.text for h in hits)
    [listed] = c.agents.files.list("sam")
    assert listed.chunks == len(expected)
    assert _upload(c, path).status == "unchanged"  # idempotent: the hash is of the bytes on disk


def test_structured_files_with_nuls_are_stored_whole(nul_client, tmp_path):
    c = nul_client
    (tmp_path / "rows.csv").write_bytes(b"name,habitat\nsea otter,kelp\x00 forest\nriver otter,stream\n")
    (tmp_path / "doc.md").write_bytes(b"# Otters\n\nThey hold hands\x00 while they sleep.\n")
    (tmp_path / "escaped.json").write_text(json.dumps({"otter": "holds\u0000hands"}))  # a \u0000 escape
    report = c.agents.files.upload("sam", tmp_path, progress=False)
    status = {Path(f.path).name: (f.status, f.error) for f in report.files}
    assert status == {"rows.csv": ("added", None), "doc.md": ("added", None), "escaped.json": ("added", None)}
    notes = {Path(f.path).name: f.note for f in report.files}
    assert "1 NUL character(s)" in notes["rows.csv"] and "1 NUL character(s)" in notes["doc.md"]
    stored = " | ".join(p.text for p in c.agents.passages.list("sam"))
    assert NUL not in stored
    assert f"kelp{FFFD} forest" in stored and f"hands{FFFD} while" in stored and f"holds{FFFD}hands" in stored


def test_binary_files_stay_errors_and_utf16_is_text(nul_client, tmp_path):
    c = nul_client
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    (tmp_path / "sqlite.txt").write_bytes(b"SQLite format 3\x00" + b"\x00" * 4000 + b"\x0d\x00\x00\x00\x01")
    (tmp_path / "windows.txt").write_bytes("Sea otters wrap themselves in kelp.\r\n".encode("utf-16"))
    report = c.agents.files.upload("sam", tmp_path, progress=False)
    rows = {Path(f.path).name: f for f in report.files}
    for name in ("image.txt", "sqlite.txt"):
        assert rows[name].status == "error" and "looks binary" in (rows[name].error or ""), rows[name]
    assert (rows["windows.txt"].status, rows["windows.txt"].note) == ("added", None)
    assert [p.text for p in c.agents.passages.list("sam")] == ["Sea otters wrap themselves in kelp."]


def test_the_binary_line_is_the_share_of_control_bytes(tmp_path):
    stray = tmp_path / "stray.log"
    stray.write_bytes(b"boot ok\x00\n" + b"service started and listening\n" * 20)
    chunked = chunk_file(str(stray))
    assert chunked.nuls == 1 and all(NUL not in ch for ch in chunked.chunks) and FFFD in chunked.chunks[0]
    tiny = tmp_path / "tiny.txt"
    tiny.write_bytes(b"a\x00b")  # a third of it is NUL: no way to tell it from a binary file, so refused
    with pytest.raises(FileIngestError, match="looks binary"):
        chunk_file(str(tiny))
    clean = tmp_path / "clean.txt"
    clean.write_text("No NUL here.")
    assert chunk_file(str(clean)).nuls == 0
