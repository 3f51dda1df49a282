"""Cutting a file into passages, with the llama-index splitter that fits its type.

Each file type gets a splitter that respects its structure: code by syntax tree (llama-index's
``CodeSplitter`` over tree-sitter grammars shipped as dependencies; Letta's call to it fails silently
without them, so here a missing grammar is visible in :attr:`ChunkedFile.splitter`), Markdown by
headings, HTML by block elements, JSON by key paths, JSONL and CSV by records, PDF by extracted page
text, anything else with ``SentenceSplitter`` (384 tokens, 25 overlap by default). Structure-aware
nodes longer than the chunk size are cut again with the sentence splitter, so no passage is oversized.

NUL characters: PostgreSQL's text refuses them and SQLite keeps them, so a file that uploads on one backend
must upload on the other. A text file with stray NULs (a bad export, a NUL-padded log record) is stored with
each made U+FFFD, like a lone surrogate (letta_nb/_text.py), and the report counts them (:func:`nul_note`);
refusing the whole document for a byte nobody can read would cost the user the rest. A file whose control
bytes are more than :data:`BINARY_CONTROL_SHARE` of it is binary and refused, as before; a UTF-16/32 file
with its byte-order mark is text.

This module is pure CPU work with no I/O besides reading the one file (opened by sources.py, which
refuses FIFOs and devices), and everything it returns pickles, so ingestion can run it in worker
processes (see chunk_workers.py). llama-index and tree-sitter are imported on first use only, and each
splitter is built once per process.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from letta_nb._text import clean_text
from letta_nb.embeddings.sources import open_regular
from letta_nb.errors import (
    FileIngestError,
    InvalidArgumentError,
    LettaNBError,
    OptionalDependencyError,
    OptionalDependencyWarning,
)

__all__ = ["ChunkSettings", "ChunkedFile", "chunk_file", "chunk_files", "chunk_text", "file_kind", "failure_message",
           "empty_note", "nul_note", "KNOWN_SUFFIXES"]

DEFAULT_CHUNK_SIZE = 384  # tokens, as Letta
DEFAULT_CHUNK_OVERLAP = 25

# suffix -> (language, grammar module); grammars are separate, well-kept tree-sitter packages.
_CODE = {
    ".py": ("python", "tree_sitter_python"), ".pyi": ("python", "tree_sitter_python"),
    ".js": ("javascript", "tree_sitter_javascript"), ".mjs": ("javascript", "tree_sitter_javascript"),
    ".cjs": ("javascript", "tree_sitter_javascript"), ".jsx": ("javascript", "tree_sitter_javascript"),
    # one package, two grammars: language_typescript() and language_tsx() (TSX is TypeScript plus JSX)
    ".ts": ("typescript", "tree_sitter_typescript"), ".mts": ("typescript", "tree_sitter_typescript"),
    ".cts": ("typescript", "tree_sitter_typescript"), ".tsx": ("tsx", "tree_sitter_typescript"),
    ".c": ("c", "tree_sitter_c"), ".h": ("c", "tree_sitter_c"),  # a .h may be C++; the C grammar recovers
    ".cpp": ("cpp", "tree_sitter_cpp"), ".cc": ("cpp", "tree_sitter_cpp"), ".cxx": ("cpp", "tree_sitter_cpp"),
    ".hpp": ("cpp", "tree_sitter_cpp"), ".hh": ("cpp", "tree_sitter_cpp"), ".hxx": ("cpp", "tree_sitter_cpp"),
    ".java": ("java", "tree_sitter_java"), ".go": ("go", "tree_sitter_go"), ".rs": ("rust", "tree_sitter_rust"),
    ".rb": ("ruby", "tree_sitter_ruby"), ".sh": ("bash", "tree_sitter_bash"), ".bash": ("bash", "tree_sitter_bash"),
}
_KINDS = {
    ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html", ".json": "json",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv", ".pdf": "pdf",
    ".txt": "text", ".rst": "text", ".text": "text", ".log": "text", ".toml": "text", ".cfg": "text",
    ".ini": "text", ".yaml": "text", ".yml": "text", ".xml": "text", ".css": "text", ".tex": "text",
}
KNOWN_SUFFIXES = frozenset(_CODE) | frozenset(_KINDS)
_HTML_TAGS = ["title", "h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td", "th", "dt", "dd", "blockquote"]


@dataclass(frozen=True)
class ChunkSettings:
    chunk_size: int = DEFAULT_CHUNK_SIZE  # tokens
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP

    def __post_init__(self) -> None:
        for name in ("chunk_size", "chunk_overlap"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgumentError(f"{name} must be a non-negative integer, got {value!r}")
        if self.chunk_size < 16:
            raise InvalidArgumentError(f"chunk_size must be at least 16 tokens, got {self.chunk_size}")
        if self.chunk_overlap >= self.chunk_size:
            raise InvalidArgumentError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )

    @property
    def max_chars(self) -> int:
        return 4 * self.chunk_size  # ~4 characters a token: the bound for record packing and code chunks


@dataclass
class ChunkedFile:
    path: str
    kind: str
    splitter: str  # what really cut it, e.g. "code:python" or "sentence (no grammar for rust)"
    sha256: str
    size: int
    chunks: list[str] = field(default_factory=list)
    nuls: int = 0  # NUL characters in the file's text, each stored as U+FFFD (see :func:`nul_note`)


def file_kind(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in _CODE:
        return "code:" + _CODE[suffix][0]
    return _KINDS.get(suffix, "text")


def chunk_file(path: str, settings: ChunkSettings = ChunkSettings(), max_bytes: int | None = None) -> ChunkedFile:
    """Read, hash and chunk one file. FileIngestError if it is too large, binary, unreadable or not a
    regular file (a FIFO is never waited on: see sources.py)."""
    f, size = open_regular(path)
    with f:
        if max_bytes is not None and size > max_bytes:
            raise FileIngestError(
                f"{path} is {size / 1e6:.1f} MB, over the upload limit of {max_bytes / 1e6:.1f} MB; split it or "
                "pass a larger max_file_mb."
            )
        try:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)  # it may have grown since
        except OSError as e:
            raise FileIngestError(f"cannot read {path}: {e.strerror or e}") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise FileIngestError(f"{path} grew past the upload limit of {max_bytes / 1e6:.1f} MB while being read")
    kind = file_kind(path)
    digest = hashlib.sha256(data).hexdigest()
    text = _pdf_text(path, data) if kind == "pdf" else _file_text(path, data)
    nuls = text.count("\x00")  # chunk_text makes each U+FFFD (letta_nb/_text.py): the report says how many
    splitter, chunks = chunk_text(text, kind, settings)
    return ChunkedFile(path, kind, splitter, digest, len(data), chunks, nuls)


def chunk_files(paths: list[str], settings: ChunkSettings = ChunkSettings(),
                max_bytes: int | None = None) -> list[ChunkedFile | str]:
    """Chunk several files in one call: a worker process's task during an upload. Most files are small
    (the stdlib's average ~15 KB chunks in ~2 ms), and a round trip to a worker per file leaves it idle
    whenever the uploading process is busy embedding. A file that fails is its error message in the list,
    so it fails alone (and nothing that may not unpickle crosses the process boundary)."""
    out: list[ChunkedFile | str] = []
    for path in paths:
        try:
            out.append(chunk_file(path, settings, max_bytes))
        except Exception as e:  # noqa: BLE001 - reported per file by the upload
            out.append(failure_message(e))
    return out


def empty_note(chunked: ChunkedFile) -> str:
    """Why a file that read fine gave no passages (an upload reports it ``skipped``, and stores nothing)."""
    if chunked.size == 0:
        return "empty file (0 bytes): nothing to store"
    if chunked.splitter == "empty":
        return "only whitespace: nothing to store"
    if chunked.kind == "pdf":
        return "no text could be extracted from this PDF (scanned pages? run OCR on it first)"
    return f"no text to store: the {chunked.splitter} splitter found none"


def failure_message(e: BaseException) -> str:
    """What an upload's report says of a file that failed: our errors speak for themselves, others get their type."""
    return str(e) if isinstance(e, (LettaNBError, OSError)) else f"{type(e).__name__}: {e}"


def chunk_text(text: str, kind: str, settings: ChunkSettings = ChunkSettings()) -> tuple[str, list[str]]:
    """(splitter used, non-empty chunks) for ``text`` of a ``file_kind``; chunks are valid Unicode (a lone
    surrogate, from PDF extraction or a JSON ``\\ud800`` escape, becomes U+FFFD: letta_nb/_text.py)."""
    text = clean_text(text)
    if not text.strip():
        return "empty", []
    if kind.startswith("code:"):
        splitter, pieces = _code(text, kind[5:], settings)
    elif kind == "markdown":
        splitter, pieces = "markdown", _nodes(_markdown_parser(), text)
    elif kind == "html":
        splitter, pieces = "html", _nodes(_html_parser(), text)
    elif kind == "json":
        splitter, pieces = "json", _json(text)
    elif kind == "jsonl":
        splitter, pieces = "jsonl", _pack(_jsonl_records(text), settings.max_chars)
    elif kind == "csv":
        splitter, pieces = "csv", _pack(_csv_records(text), settings.max_chars)
    else:
        # PDFs arrive as extracted page text: sentences are their only reliable structure.
        return "pdf" if kind == "pdf" else "sentence", [c for c in _sentence(settings).split_text(text) if c.strip()]
    return splitter, [clean_text(c) for c in _bounded(pieces, settings)]  # JSON values are decoded escapes


# ---- per type --------------------------------------------------------------------------------------------


def _code(text: str, language: str, settings: ChunkSettings) -> tuple[str, list[str]]:
    module = next((m for lang, m in _CODE.values() if lang == language), None)
    try:
        splitter = _code_splitter(language, module, settings.max_chars)
    except ImportError:  # the grammars are the `code` extra; a language we have no grammar for has no module
        fix = ": pip install 'letta-nb[code]'" if module else ""
        if module:
            warnings.warn(OptionalDependencyWarning(  # shown once per language (the default warnings filter)
                f"{language} files are chunked as plain text: no tree-sitter grammar is installed for {language}. "
                f"For chunks that follow its syntax tree: pip install 'letta-nb[code]'"), stacklevel=2)
        return f"sentence (no tree-sitter grammar for {language}{fix})", _sentence(settings).split_text(text)
    except ValueError as e:  # "Incompatible Language version 15": a grammar newer than the tree-sitter installed
        assert module is not None  # without a module _code_splitter raised ImportError
        return (f"sentence (tree-sitter cannot load the {language} grammar: {e}; "
                f"pip install -U tree-sitter {module.replace('_', '-')})"), _sentence(settings).split_text(text)
    try:
        return f"code:{language}", splitter.split_text(text)
    except ValueError:  # CodeSplitter's "Could not parse code": a syntax error or another language's file
        return f"sentence ({language} parse error)", _sentence(settings).split_text(text)


@functools.cache
def _code_splitter(language: str, module: str | None, max_chars: int) -> Any:
    import importlib

    import tree_sitter
    from llama_index.core.node_parser import CodeSplitter

    if module is None:
        raise ImportError(language)
    grammar = importlib.import_module(module)
    language_fn = getattr(grammar, "language", None) or getattr(grammar, f"language_{language}")
    parser = tree_sitter.Parser(tree_sitter.Language(language_fn()))
    return CodeSplitter(language=language, parser=parser, max_chars=max_chars)


@functools.cache
def _sentence(settings: ChunkSettings) -> Any:
    from llama_index.core.node_parser import SentenceSplitter

    return SentenceSplitter(chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap)


@functools.cache
def _markdown_parser() -> Any:
    from llama_index.core.node_parser import MarkdownNodeParser

    return MarkdownNodeParser(include_prev_next_rel=False)


@functools.cache
def _html_parser() -> Any:
    try:
        import bs4  # noqa: F401 - HTMLNodeParser needs it
    except ImportError:
        raise OptionalDependencyError("HTML files need beautifulsoup4: `pip install beautifulsoup4`.") from None
    from llama_index.core.node_parser import HTMLNodeParser

    return HTMLNodeParser(tags=_HTML_TAGS, include_prev_next_rel=False)


def _nodes(parser: Any, text: str) -> list[str]:
    from llama_index.core import Document

    return [n.get_content() for n in parser.get_nodes_from_documents([Document(text=text)])]


def _json(text: str) -> list[str]:
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise FileIngestError(f"not valid JSON ({e}); fix it, or give it a .txt name to upload it as text") from None
    from llama_index.core.node_parser import JSONNodeParser

    return _nodes(JSONNodeParser(include_prev_next_rel=False), text)


def _jsonl_records(text: str) -> list[str]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise FileIngestError(
                f"line {number} is not valid JSON ({e}); JSONL needs one JSON value per line"
            ) from None
        records.append(" ".join(_flatten(value)))
    return records


def _flatten(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [item for k, v in value.items()
                for item in _flatten(v, f"{prefix}{k}: " if not prefix else f"{prefix}{k}.")]
    if isinstance(value, list):
        return [item for v in value for item in _flatten(v, prefix)]
    return [f"{prefix}{value}"]


def _csv_records(text: str) -> list[str]:
    sample = text[:4096]
    delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    if not body:
        return [", ".join(header)]
    # strict=False: a ragged row's extra or missing cells are dropped, as before
    return ["; ".join(f"{h}: {v}" if h else v for h, v in zip(header, row, strict=False)) for row in body]


def _pdf_text(path: str, data: bytes) -> str:
    try:
        import pypdf
    except ImportError:
        raise OptionalDependencyError("PDF files need pypdf: `pip install pypdf`.") from None
    try:
        with warnings.catch_warnings():  # pypdf warns about every quirk of real-world PDFs
            warnings.simplefilter("ignore")
            reader = pypdf.PdfReader(io.BytesIO(data))
            return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except Exception as e:  # pypdf raises many types for damaged files
        raise FileIngestError(f"{path} could not be read as a PDF: {e}") from None


# Bytes that text files hold: everything but the C0 controls other than BS, TAB, LF, VT, FF, CR and ESC (ANSI
# colours in logs), and DEL. What remains of a file after deleting these is its "control" share.
_TEXT_BYTES = bytes([8, 9, 10, 11, 12, 13, 27, *range(32, 127), *range(128, 256)])
BINARY_CONTROL_SHARE = 1 / 32  # measured: PNG/ZIP/ELF/SQLite files ~10-60%, text with a stray NUL ~0.01-1%
_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"),
         (b"\xfe\xff", "utf-16"))


def _file_text(path: str, data: bytes) -> str:
    """The text of a file that is not a PDF. A file with NUL bytes is binary (FileIngestError) when control
    bytes are more than :data:`BINARY_CONTROL_SHARE` of it, else text with stray NULs (a bad export, a log
    with a NUL-padded record), stored with each NUL made U+FFFD and counted in the report. A UTF-16 or
    UTF-32 file with its byte-order mark is text, however many NUL bytes its encoding has."""
    for bom, encoding in _BOMS:  # UTF-32 LE's mark starts like UTF-16 LE's: checked first
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break
    if b"\x00" in data and len(data.translate(None, _TEXT_BYTES)) > BINARY_CONTROL_SHARE * len(data):
        raise FileIngestError(
            f"{path} looks binary (it has NUL bytes among other control bytes); only text, code, Markdown, "
            "HTML, JSON, CSV and PDF files can be uploaded.")
    return _decode(data)


def nul_note(chunked: ChunkedFile) -> str | None:
    """What an upload's report says of a stored file whose text had NUL characters (None: it had none).
    PostgreSQL's text refuses NUL and SQLite keeps it: both backends store U+FFFD in its place."""
    if not chunked.nuls:
        return None
    return (f"{chunked.nuls:,} NUL character(s) ('\\x00') of its text stored as U+FFFD, on every backend "
            "(PostgreSQL's text cannot hold NUL)")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # never fails; right for most legacy text


# ---- sizing ----------------------------------------------------------------------------------------------


def _pack(records: list[str], max_chars: int) -> list[str]:
    """Consecutive records joined by newlines into chunks of at most ``max_chars`` (longer records alone)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for record in records:
        if current and size + len(record) + 1 > max_chars:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(record)
        size += len(record) + 1
    if current:
        chunks.append("\n".join(current))
    return chunks


def _bounded(pieces: list[str], settings: ChunkSettings) -> list[str]:
    out: list[str] = []
    for piece in pieces:
        if not piece.strip():
            continue
        if len(piece) > settings.max_chars:
            out.extend(c for c in _sentence(settings).split_text(piece) if c.strip())
        else:
            out.append(piece)
    return out
