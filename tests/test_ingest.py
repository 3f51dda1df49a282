"""File upload end to end: real files chunked, embedded (hash), stored in a real store file.

Covers idempotent re-uploads, replacement of changed files, per-file errors that do not stop the batch,
the progress bar, worker-process chunking, the offline model answering from an uploaded document, and
a real child process SIGKILLed mid-upload, after which every file is complete or absent and a resume
finishes the job without duplicates.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from store_query import query

import letta_nb
from letta_nb.embeddings import ingest as ingest_module
from letta_nb.embeddings.chunking import ChunkSettings, chunk_file
from letta_nb.embeddings.hash import HashEmbedder
from letta_nb.embeddings.ingest import GROUP_BYTES, GROUP_FILES, chunk_pool, discover, file_groups, ingest
from letta_nb.errors import EmbeddingError, InvalidArgumentError, UploadedFileNotFoundError

DATA = Path(__file__).parent / "data"
SAMPLES = sorted(p.name for p in DATA.iterdir())


def passages_by_file(db: str) -> dict[str, list[str]]:
    order = "p.pseq" if str(db).startswith("postgresql") else "p.rowid"  # insertion order on each backend
    rows = query(db, f"select f.path, p.text from passages p join files f on f.id = p.file_id order by {order}")
    out: dict[str, list[str]] = {}
    for path, text in rows:
        out.setdefault(path, []).append(text)
    return out


def assert_files_whole(db: str) -> dict[str, int]:
    """Every file row has exactly its chunks; no passage points at a missing file."""
    files = {path: (fid, chunks) for fid, path, chunks in query(db, "select id, path, chunks from files")}
    for path, (fid, chunks) in files.items():
        (n,) = query(db, "select count(*) from passages where file_id = ?", fid)[0]
        assert n == chunks, f"{path}: {n} passages, record says {chunks}"
    orphans = query(db, "select count(*) from passages "
                        "where file_id is not null and file_id not in (select id from files)")
    assert orphans == [(0,)]
    # vec0 rows follow passages lazily (inserts and deletes, at the agent's next vec0 search): that
    # invariant is tested in test_vector_store.py, on every search path.
    return {path: chunks for path, (_, chunks) in files.items()}


def test_upload_a_directory_then_reupload_adds_nothing(client, db_path, tmp_path):
    docs = shutil.copytree(DATA, tmp_path / "docs")
    agent = client.agents.create("reader")
    report = client.agents.files.upload(agent, docs, progress=False)
    assert [Path(f.path).name for f in report.files] == SAMPLES
    assert {f.status for f in report.files} == {"added"}, report
    assert report.chunks == sum(f.chunks for f in report.files) > len(SAMPLES)
    splitters = {Path(f.path).suffix: f.splitter for f in report.files}
    assert splitters[".py"] == "code:python" and splitters[".md"] == "markdown" and splitters[".pdf"] == "pdf"
    stored = passages_by_file(str(db_path))
    for f in report.files:  # what was stored is what the chunker produces, in order
        assert stored[f.path] == chunk_file(f.path).chunks
    assert len(client.agents.passages.list(agent)) == report.chunks
    listed = client.agents.files.list(agent)
    assert [Path(u.path).name for u in listed] == SAMPLES and listed[0].updated_at.tzinfo is not None

    again = client.agents.files.upload(agent, docs, progress=False)
    assert {f.status for f in again.files} == {"unchanged"}
    assert len(client.agents.passages.list(agent)) == report.chunks
    assert again.chunks == 0 and "unchanged" in again.summary()

    # Other chunk settings are another upload: the file is replaced, not duplicated.
    small = client.agents.files.upload(agent, docs / "sample.txt", chunk_size=64, chunk_overlap=8, progress=False)
    assert small.files[0].status == "replaced"
    assert stored[str(docs / "sample.txt")] != passages_by_file(str(db_path))[str(docs / "sample.txt")]
    assert_files_whole(str(db_path))
    frame = report.to_dataframe()
    assert list(frame.columns) == ["path", "status", "chunks", "bytes", "error", "splitter", "note"]
    assert len(frame) == len(SAMPLES)
    assert "sample.md" in report._repr_html_()


def test_changed_file_replaces_its_passages_and_delete_removes_them(client, db_path, tmp_path):
    agent = client.agents.create("reader")
    note = tmp_path / "note.md"
    note.write_text("# Plan\n\nThe meeting is on Tuesday in room 4.\n")
    client.agents.files.upload(agent, note, progress=False)
    note.write_text("# Plan\n\nThe meeting moved to Thursday in room 9.\n\n## Later\n\nBring the slides.\n")
    report = client.agents.files.upload(agent, note, progress=False)
    assert report.files[0].status == "replaced" and report.files[0].chunks == 2
    texts = [p.text for p in client.agents.passages.list(agent)]
    assert len(texts) == 2 and not any("Tuesday" in t for t in texts)
    hits = client.agents.passages.search(agent, "meeting room", tags=["file:note.md"])
    assert "Thursday" in hits[0].text
    assert client.agents.files.delete(agent, str(note)) == 2
    assert client.agents.passages.list(agent) == [] and client.agents.files.list(agent) == []
    with pytest.raises(UploadedFileNotFoundError, match="No uploaded file named"):
        client.agents.files.delete(agent, str(note))


def test_bad_files_are_reported_and_the_batch_goes_on(client, db_path, tmp_path):
    agent = client.agents.create("reader")
    good = tmp_path / "good.txt"
    good.write_text("Otters hold hands while they sleep.")
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\x00\x00" * 50)
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{'single': 'quotes'}")
    big = tmp_path / "big.txt"
    big.write_text("x " * 600_000)
    report = client.agents.files.upload(agent, [binary, bad_json, tmp_path / "missing.md", big, good],
                                        max_file_mb=1, progress=False)
    status = {Path(f.path).name: (f.status, f.error) for f in report.files}
    assert status["good.txt"] == ("added", None)
    assert status["image.txt"][0] == "error" and "looks binary" in status["image.txt"][1]
    assert "not valid JSON" in status["broken.json"][1]
    assert status["missing.md"] == ("error", "no such file or directory")
    assert "over the upload limit of 1.0 MB" in status["big.txt"][1]
    assert len(report.errors) == 4 and "4 error" in report.summary() and "image.txt" in repr(report)
    assert [p.text for p in client.agents.passages.list(agent)] == ["Otters hold hands while they sleep."]
    with pytest.raises(InvalidArgumentError, match="max_file_mb"):
        client.agents.files.upload(agent, good, max_file_mb=0)


def test_an_embedding_failure_is_its_own_files_error(client, db_path, tmp_path):
    class Picky(HashEmbedder):
        """Refuses any call that includes a chunk about a poisoned well (a provider's 400, say)."""

        async def embed(self, texts):
            bad = {i: "HTTP 400: refused" for i, t in enumerate(texts) if "poisoned" in t}
            if bad:
                raise EmbeddingError(bad, len(texts))
            return await super().embed(texts)

    agent = client.agents.create("reader")
    for name, text in [("a.txt", "Apples grow on trees."), ("b.txt", "The well is poisoned."),
                       ("c.md", "# Cats\nsleep.")]:
        (tmp_path / name).write_text(text)
    rt = client.runtime
    report = client._thread.run(ingest(rt.store, Picky(), client.agents.retrieve(agent), tmp_path, progress=False))
    assert [(Path(f.path).name, f.status) for f in report.files] == [("a.txt", "added"), ("b.txt", "error"),
                                                                     ("c.md", "added")]
    assert report.errors[0].error.startswith("1 of 1 chunks could not be embedded: #0: HTTP 400: refused")
    assert sorted(p.text for p in client.agents.passages.list(agent)) == ["# Cats\nsleep.", "Apples grow on trees."]
    assert assert_files_whole(db_path) == {str(tmp_path / "a.txt"): 1, str(tmp_path / "c.md"): 1}


def test_cancelled_upload_keeps_whole_files_and_resumes(client, db_path, tmp_path, monkeypatch):
    """Ctrl-C in a notebook cancels the upload on the runtime loop: what committed stays whole, nothing is
    half stored, and uploading again adds exactly the rest."""
    import threading

    monkeypatch.setattr(ingest_module, "GROUP_BYTES", 200)  # a group (and a commit) every couple of files
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):
        (docs / f"note{i:02d}.txt").write_text(f"Note {i}. " + " ".join(f"fact{i}-{k}." for k in range(30)))
    embedded = threading.Semaphore(0)
    calls = itertools.count(1)

    class Slow(HashEmbedder):
        async def embed(self, texts):
            embedded.release()
            # From the sixth call on, embedding waits for the cancel: it lands mid-upload however slow the
            # machine (with a fixed pace, a starved test thread could cancel after all 40 files were done).
            if next(calls) >= 6:
                await asyncio.sleep(120)  # only a hang guard
            return await super().embed(texts)

    agent = client.agents.create("reader")
    state = client.agents.retrieve(agent)
    job = client._thread.submit(ingest(client.runtime.store, Slow(), state, docs, progress=False))
    for _ in range(6):
        assert embedded.acquire(timeout=120)  # only a hang guard
    assert job.cancel_and_wait()
    stored = assert_files_whole(db_path)
    assert 0 < len(stored) < 40, len(stored)
    report = client.agents.files.upload(agent, docs, progress=False)
    statuses = [f.status for f in report.files]
    assert statuses.count("unchanged") == len(stored) and statuses.count("added") == 40 - len(stored)
    assert len(assert_files_whole(db_path)) == 40
    texts = [p.text for p in client.agents.passages.list(agent)]
    assert len(texts) == len(set(texts)) == 40


def test_progress_bar_on_stderr(client, tmp_path, capfd):
    agent = client.agents.create("reader")
    client.agents.files.upload(agent, DATA / "sample.md", progress=True)
    err = capfd.readouterr().err
    assert "upload" in err and "100%" in err


def test_file_groups_keep_order_and_put_a_large_file_alone():
    sizes = {"a": 10, "b": GROUP_BYTES - 10, "c": 1, "d": 5 * GROUP_BYTES, "e": 2}
    sizes.update({f"s{i}": 1 for i in range(GROUP_FILES + 3)})
    groups = file_groups(list(sizes), sizes)
    assert [p for g in groups for p in g] == list(sizes)
    assert groups[:3] == [["a", "b"], ["c"], ["d"]]
    assert all(len(g) <= GROUP_FILES for g in groups) and len(groups) == 5


def test_chunking_in_worker_processes_gives_the_same_passages(client, tmp_path, monkeypatch):
    # Several files a worker task (small groups here, so there are several), with a bad file inside a group.
    files = tmp_path / "docs"
    shutil.copytree(DATA, files)
    (files / "image.txt").write_bytes(b"\x89PNG\x00\x00" * 50)
    monkeypatch.setattr(ingest_module, "GROUP_BYTES", 3000)
    first = client.agents.create("threads")
    second = client.agents.create("processes")
    rt = client.runtime
    in_thread = client.agents.files.upload(first, files, progress=False)
    assert in_thread.workers == "thread"
    pool = chunk_pool(1)
    try:
        state = client.agents.retrieve(second)
        in_pool = client._thread.run(ingest(rt.store, rt.embedder("hash"), state, files, pool=pool, progress=False))
    finally:
        pool.shutdown()
    assert in_pool.workers == "1 worker(s)"
    paths = [f.path for f in in_pool.files]
    assert 2 < len(file_groups(paths, {p: os.path.getsize(p) for p in paths})) < len(paths)
    outcome = [(f.status, f.chunks, f.splitter, f.error) for f in in_pool.files]
    assert outcome == [(f.status, f.chunks, f.splitter, f.error) for f in in_thread.files]
    assert [Path(f.path).name for f in in_pool.errors] == ["image.txt"] and "looks binary" in in_pool.errors[0].error
    assert (sorted(p.text for p in client.agents.passages.list(first))
            == sorted(p.text for p in client.agents.passages.list(second)))


def test_offline_model_answers_from_an_uploaded_document(client, tmp_path):
    agent = client.agents.create("reader")
    client.agents.files.upload(agent, DATA, progress=False)
    answer = client.agents.messages.create(agent, "Where is the spare key kept?").text
    assert "From my archival memory" in answer
    assert "The spare key is kept under the blue pot by the door." in answer
    answer = client.agents.messages.create(agent, "When was the lighthouse at Skerry Point automated?").text
    assert "Skerry Point was automated in 1987" in answer


CHILD = textwrap.dedent(
    """
    import sys
    import letta_nb

    db, docs = sys.argv[1:]
    client = letta_nb.connect(db)
    print("uploading", flush=True)
    client.agents.files.upload("reader", docs, chunk_size=64, chunk_overlap=8, progress=False)
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_mid_upload_then_resume_leaves_every_file_whole(tmp_path, monkeypatch):
    # A killed child never releases its lease: the next process waits out the TTL (30 s by default). A short
    # one, inherited by the children, keeps the rounds from waiting; heartbeats renew it (ttl/3) meanwhile.
    monkeypatch.setenv("LETTA_NB_LEASE_TTL", "3")
    db = str(tmp_path / "crash.db")
    docs = tmp_path / "docs"
    docs.mkdir()
    sentence = "The {n}th survey of the northern marsh counted {m} herons near the old mill. "
    for i in range(60):
        (docs / f"report_{i:02d}.txt").write_text("".join(sentence.format(n=i, m=j) for j in range(400)))
    with letta_nb.connect(db) as client:
        client.agents.create("reader")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, db, str(docs)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # only a hang guard
        committed = 0
        while committed < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never committed a file"
            time.sleep(0.01)
            committed = query(db, "select count(*) from files")[0][0]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    after_crash = assert_files_whole(db)
    assert 3 <= len(after_crash) < 60, f"the kill should land mid-upload; {len(after_crash)} files were done"

    settings = ChunkSettings(64, 8)
    with letta_nb.connect(db) as client:
        report = client.agents.files.upload("reader", docs, chunk_size=64, chunk_overlap=8, progress=False)
    status = {f.path: f.status for f in report.files}
    assert {p for p, s in status.items() if s == "unchanged"} == set(after_crash)
    assert {s for p, s in status.items() if p not in after_crash} == {"added"}
    final = assert_files_whole(db)
    stored = passages_by_file(db)
    assert len(final) == 60
    for path in final:  # complete and unduplicated: exactly the chunker's output, once
        assert stored[path] == chunk_file(path, settings).chunks, os.path.basename(path)


def test_discover_resolves_paths_like_path_resolve(tmp_path, monkeypatch):
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    for name in ("a.md", "sub/b.py", "sub/.hidden.md", "sub/skip.bin"):
        (real / name).write_text("x")
    (tmp_path / "linked_dir").symlink_to(real)
    (tmp_path / "linked_file.md").symlink_to(real / "a.md")
    monkeypatch.chdir(tmp_path)
    given = ["linked_dir/a.md", tmp_path / "linked_file.md", "real/../real/sub/b.py", "linked_dir", "nope.md"]
    found = [(f.path, f.error) for f in discover(given)]
    assert found == [(str(real / "a.md"), None), (str(real / "sub" / "b.py"), None),
                     (str(tmp_path / "nope.md"),
                      f"no such file or directory (relative paths start from the current directory, {tmp_path})")]
    assert [p for p, _ in found] == (list(dict.fromkeys(str(Path(g).resolve()) for g in given[:3]))
                                     + [str(tmp_path / "nope.md")])


def test_passage_text_is_stored_verbatim(client, tmp_path):
    text = 'Zoë’s café — naïve 日本語 "quotes" \\ back\\slash\n\ttab 😀 \u2028 end'
    (tmp_path / "u.txt").write_text(text, encoding="utf-8")
    agent = client.agents.create("reader")
    client.agents.files.upload(agent, tmp_path / "u.txt", progress=False)
    assert [p.text for p in client.agents.passages.list(agent)] == [text]
