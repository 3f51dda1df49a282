"""Every file type is cut by its own splitter, on a real sample file of that type (tests/data/).

The splitter actually used is part of the result, so a missing grammar or parser cannot hide behind a
silent fallback (Letta's CodeSplitter call fails that way); these tests assert the structured one ran.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from letta_nb.embeddings.chunking import ChunkSettings, chunk_file, chunk_text, file_kind
from letta_nb.errors import FileIngestError, InvalidArgumentError

DATA = Path(__file__).parent / "data"
SMALL = ChunkSettings(chunk_size=64, chunk_overlap=8)  # forces several chunks out of the small samples


def chunks(name: str, settings: ChunkSettings = ChunkSettings()) -> tuple[str, list[str]]:
    result = chunk_file(str(DATA / name), settings)
    assert result.sha256 == hashlib.sha256((DATA / name).read_bytes()).hexdigest()
    assert result.size == (DATA / name).stat().st_size
    assert all(c.strip() for c in result.chunks)
    return result.splitter, result.chunks


def test_python_is_cut_along_its_syntax_tree():
    splitter, parts = chunks("sample.py", SMALL)
    assert splitter == "code:python"
    assert len(parts) > 3
    heads = [p.lstrip().split("\n")[0] for p in parts]
    assert "class Inventory:" in heads
    assert any(h.startswith("def load_inventory(") for h in heads)
    assert any(h.startswith("def report(") for h in heads)
    # nothing is lost: every def of the file starts some chunk or sits inside one
    source = (DATA / "sample.py").read_text()
    for line in source.splitlines():
        if line.lstrip().startswith("def "):
            assert any(line.strip() in p for p in parts)


def test_javascript_uses_its_grammar_too():
    splitter, parts = chunks("sample.js", SMALL)
    assert splitter == "code:javascript"
    assert any(p.startswith("function debounce(fn, ms)") for p in parts)


def test_python_tree_sitter_cannot_parse_says_it_fell_back(tmp_path):
    # tree-sitter recovers from most syntax errors; a file that opens with a merge conflict it cannot.
    bad = tmp_path / "conflicted.py"
    bad.write_text("<<<<<<< HEAD\nx = 1\n=======\nx = 2\n>>>>>>> branch\n" * 20)
    result = chunk_file(str(bad), SMALL)
    assert result.splitter == "sentence (python parse error)"
    assert "x = 2" in result.chunks[0]


def test_markdown_is_cut_at_headings_and_keeps_fenced_code_whole():
    splitter, parts = chunks("sample.md", SMALL)
    assert splitter == "markdown"
    assert [p.split("\n")[0] for p in parts] == [
        "# Field notes on the Aurora greenhouse", "## Watering", "## Pests", "### Notes for volunteers",
    ]
    assert '# still code' in parts[-1]  # a '#' inside a code fence is not a heading
    assert "spare key is kept under the blue pot" in parts[-1]


def test_html_keeps_block_text_and_drops_markup_and_scripts():
    splitter, parts = chunks("sample.html")
    assert splitter == "html"
    text = "\n".join(parts)
    assert "Harbour ferry timetable" in parts
    assert "22:10 crossing is cancelled" in text
    assert "Pier 2 to Lindholm" in text
    assert "<" not in text and "console.log" not in text and "font-family" not in text


def test_json_becomes_key_paths():
    splitter, parts = chunks("sample.json")
    assert splitter == "json"
    text = "\n".join(parts)
    assert "library opening_hours saturday 10:00-16:00" in text
    assert "library branches city Millford" in text
    assert "late_fee_per_day 0.25" in text


def test_jsonl_records_stay_whole():
    splitter, parts = chunks("sample.jsonl", ChunkSettings(chunk_size=32, chunk_overlap=4))
    assert splitter == "jsonl"
    text = "\n".join(parts)
    for line in (DATA / "sample.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert f"issue: {record['issue']}" in text
    assert any("customer: Moreau" in p and "VAT rate" in p for p in parts)


def test_csv_rows_are_labelled_with_the_header():
    splitter, parts = chunks("sample.csv", ChunkSettings(chunk_size=32, chunk_overlap=4))
    assert splitter == "csv"
    rows = "\n".join(parts).split("\n")
    assert "station: Harbour Gate; line: Blue; opened: 1923; daily_riders: 12800" in rows
    assert len(rows) == 4 and len(parts) >= 2


def test_plain_text_uses_the_sentence_splitter_with_its_settings():
    splitter, default = chunks("sample.txt")
    assert splitter == "sentence"
    _, small = chunks("sample.txt", SMALL)
    assert len(small) > len(default)
    from llama_index.core.utils import get_tokenizer

    tokens = get_tokenizer()
    assert max(len(tokens(p)) for p in small) <= SMALL.chunk_size


def test_pdf_text_is_extracted_and_split():
    splitter, parts = chunks("sample.pdf")
    assert splitter == "pdf"
    text = " ".join(parts)
    assert "Skerry Point was automated in 1987" in text
    assert "twenty-two nautical miles" in text


def test_file_kinds_by_suffix():
    assert file_kind("a/b.PY") == "code:python"
    assert file_kind("x.markdown") == "markdown"
    assert file_kind("x.ndjson") == "jsonl"
    assert file_kind("x.unknown") == "text"


def test_oversized_structured_nodes_are_cut_again():
    long_section = "# Title\n\n" + " ".join(f"Sentence number {i} is here." for i in range(400))
    splitter, parts = chunk_text(long_section, "markdown", SMALL)
    assert splitter == "markdown" and len(parts) > 5
    assert max(len(p) for p in parts) <= SMALL.max_chars


def test_bad_inputs_are_clear_errors(tmp_path):
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(FileIngestError, match="looks binary"):
        chunk_file(str(binary))
    big = tmp_path / "big.txt"
    big.write_text("word " * 1000)
    with pytest.raises(FileIngestError, match="over the upload limit of 0.0 MB.*max_file_mb"):
        chunk_file(str(big), max_bytes=1000)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"a": 1,,}')
    with pytest.raises(FileIngestError, match="not valid JSON"):
        chunk_file(str(bad_json))
    with pytest.raises(FileIngestError, match="cannot read"):
        chunk_file(str(tmp_path / "missing.txt"))
    with pytest.raises(InvalidArgumentError, match="chunk_overlap \\(64\\) must be smaller"):
        ChunkSettings(64, 64)
    with pytest.raises(InvalidArgumentError, match="at least 16"):
        ChunkSettings(8, 0)


def test_empty_file_has_no_chunks(tmp_path):
    empty = tmp_path / "__init__.py"
    empty.write_text("")
    result = chunk_file(str(empty))
    assert result.chunks == [] and result.splitter == "empty"
