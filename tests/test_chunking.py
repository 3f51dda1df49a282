"""Every file type is cut by its own splitter, on a real sample file of that type (tests/data/).

The splitter actually used is part of the result, so a missing grammar or parser cannot hide behind a
silent fallback (Letta's CodeSplitter call fails that way); these tests assert the structured one ran.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path

import pytest

from letta_nb.embeddings import chunking
from letta_nb.embeddings.chunking import KNOWN_SUFFIXES, ChunkSettings, chunk_file, chunk_text, file_kind
from letta_nb.errors import FileIngestError, InvalidArgumentError, OptionalDependencyWarning

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


# sample file, its tree-sitter language, and declarations that must each open a chunk at the SMALL size
CODE_SAMPLES = [
    ("sample.py", "python", ["class Inventory:", "def load_inventory(", "def report("]),
    ("sample.js", "javascript", ["class Emitter", "off(event, handler) {", "function debounce(fn, ms)"]),
    ("sample.ts", "typescript", ["export interface QueueOptions {", "class JobQueue<T>",
                                 "async drain(): Promise<Job<T>[]>", "export function sleep(ms: number)"]),
    ("sample.tsx", "tsx", ["function AddBookForm({ onAdd }", "export function pagesLeft(",
                           '<form className="add-book"']),
    ("sample.go", "go", ["type Cache struct {", "func (c *Cache) Get(key string)",
                         "func (c *Cache) Keys() []string {"]),
    ("sample.rs", "rust", ["impl fmt::Display for EvalError", "pub fn tokenize(", "fn atom(&mut self)",
                           "#[cfg(test)]"]),
    ("sample.java", "java", ["public record Entry(", "public static class BudgetExceededException",
                             "public BigDecimal balance() {"]),
    ("sample.c", "c", ["struct reading {", "bool ring_pop(", "static int compare_doubles(", "int main(void)"]),
    ("sample.cpp", "cpp", ["class Graph", "void add_road(", "std::optional<Route> shortest_route(", "int main()"]),
    ("sample.rb", "ruby", ["class Plot", "def free?", "class Allocator", "def best_plot_for(entry)"]),
    ("sample.sh", "bash", ["log() {", "verify_archive() {", "list_backups() {", "main()"]),
]
# the grammar each language's chunks are checked against, loaded here independently of chunking.py
GRAMMARS = {"typescript": ("tree_sitter_typescript", "language_typescript"),
            "tsx": ("tree_sitter_typescript", "language_tsx")}


def syntax_tree(language: str, source: bytes):
    import tree_sitter

    module, function = GRAMMARS.get(language, (f"tree_sitter_{language}", "language"))
    grammar = getattr(importlib.import_module(module), function)()
    return tree_sitter.Parser(tree_sitter.Language(grammar)).parse(source)


def assert_tiles(source: str, parts: list[str]) -> None:
    """The chunks are verbatim pieces of the file, in order, without overlap, and only whitespace falls between
    them: nothing is lost or repeated (the sentence splitter's overlapping chunks fail this)."""
    position = 0
    for number, part in enumerate(parts):
        found = source.find(part, position)
        assert found >= 0, (f"chunk {number} is not a verbatim piece of the file after the previous chunk: "
                            f"{part[:60]!r}")
        assert not source[position:found].strip(), (f"text before chunk {number} is in no chunk: "
                                                     f"{source[position:found]!r}")
        position = found + len(part)
    assert not source[position:].strip(), f"the end of the file is in no chunk: {source[position:][:60]!r}"


def walk(node):
    yield node
    for child in node.children:
        yield from walk(child)


@pytest.mark.parametrize("name, language, heads", CODE_SAMPLES, ids=[c[0] for c in CODE_SAMPLES])
def test_code_is_cut_along_its_syntax_tree(name, language, heads):
    source = (DATA / name).read_text()
    tree = syntax_tree(language, source.encode())
    assert not tree.root_node.has_error  # the sample is real code of its language
    splitter, default = chunks(name)
    assert splitter == f"code:{language}"  # not "sentence (no tree-sitter grammar ...)"
    splitter, small = chunks(name, SMALL)
    assert splitter == f"code:{language}"
    assert len(small) > len(default) and len(small) > 3
    if name not in ("sample.py", "sample.js"):  # the others are long enough to need several default-size chunks
        assert len(default) >= 3
    for settings, parts in ((ChunkSettings(), default), (SMALL, small)):
        assert_tiles(source, parts)
        assert max(len(p) for p in parts) <= settings.max_chars
        # cuts fall between syntax nodes: any node short enough to fit a chunk sits whole in one
        for node in walk(tree.root_node):
            text = node.text.decode().strip()
            if node.is_named and len(text) <= settings.max_chars:
                assert any(text in p for p in parts), f"{node.type} at line {node.start_point[0] + 1} was cut"
    for head in heads:  # declarations open chunks
        assert any(p.startswith(head) for p in small), f"no chunk starts with {head!r}"


def test_every_code_language_has_a_grammar_and_a_sample():
    languages = {file_kind("x" + s)[5:] for s in KNOWN_SUFFIXES if file_kind("x" + s).startswith("code:")}
    assert languages == {language for _, language, _ in CODE_SAMPLES}
    assert file_kind("x.tsx") == "code:tsx" and file_kind("x.hpp") == file_kind("x.cc") == "code:cpp"
    assert file_kind("x.bash") == "code:bash" and file_kind("x.h") == "code:c"


@pytest.fixture
def fresh_code_splitters():
    chunking._code_splitter.cache_clear()  # a splitter built earlier in this process would hide the missing grammar
    yield
    chunking._code_splitter.cache_clear()


def test_a_missing_grammar_falls_back_and_says_what_to_install(monkeypatch, fresh_code_splitters):
    monkeypatch.setitem(sys.modules, "tree_sitter_rust", None)  # `import tree_sitter_rust` now fails as if uninstalled
    with pytest.warns(OptionalDependencyWarning, match=r"pip install 'letta-nb\[code\]'"):
        result = chunk_file(str(DATA / "sample.rs"), SMALL)
    assert result.splitter == "sentence (no tree-sitter grammar for rust: pip install 'letta-nb[code]')"
    assert result.kind == "code:rust" and len(result.chunks) > 3
    assert "pub fn tokenize(input: &str)" in "\n".join(result.chunks)
    splitter, parts = chunk_text("IDENTIFICATION DIVISION.\nPROGRAM-ID. HELLO.\n", "code:cobol", SMALL)
    assert splitter == "sentence (no tree-sitter grammar for cobol)" and "PROGRAM-ID. HELLO." in parts[0]


def test_a_grammar_too_new_for_tree_sitter_falls_back_and_says_to_upgrade(monkeypatch, fresh_code_splitters):
    import tree_sitter

    def old_parser(language):  # what tree-sitter < 0.25 says of the ABI-15 grammars (checked against 0.24.0)
        raise ValueError("Incompatible Language version 15. Must be between 13 and 14")

    monkeypatch.setattr(tree_sitter, "Parser", old_parser)
    result = chunk_file(str(DATA / "sample.go"), SMALL)
    assert result.splitter == ("sentence (tree-sitter cannot load the go grammar: Incompatible Language version 15. "
                               "Must be between 13 and 14; pip install -U tree-sitter tree-sitter-go)")
    assert "func (c *Cache) Get(key string)" in "\n".join(result.chunks)


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
