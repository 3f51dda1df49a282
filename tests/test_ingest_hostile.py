"""Uploads of folders as they really are: every entry that cannot be read is a row saying why, the rest go in.

Real directories on disk with dangling symlinks, symlink loops, a FIFO (a writer thread proves it was
never opened), a device, entries deleted or swapped between the listing and the reading, directories
that cannot be listed (root is denied access by dropping its DAC capabilities with ``setpriv``), a tree
deeper than Python's recursion limit; empty and whitespace-only files, and wrong argument types.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from store_query import count, query

from letta_nb.embeddings import ingest as ingest_module
from letta_nb.errors import InvalidArgumentError


def rows(report) -> dict[str, tuple[str, str | None]]:
    """name -> (status, why) for each row of a report; ``why`` is the error or the note."""
    return {Path(f.path).name: (f.status, f.error or f.note) for f in report.files}


def stored_texts(client, agent) -> list[str]:
    return sorted(p.text for p in client.agents.passages.list(agent))


def test_broken_links_loops_and_devices_are_error_rows_and_the_rest_upload(client, tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "good.txt").write_text("Otters hold hands while they sleep.")
    (docs / "sub" / "deep.md").write_text("# Deep\n\nHerons nest in colonies.")
    (docs / "dangling.md").symlink_to(tmp_path / "gone.md")
    (docs / "loop_a.txt").symlink_to(docs / "loop_b.txt")
    (docs / "loop_b.txt").symlink_to(docs / "loop_a.txt")
    (docs / "null.txt").symlink_to("/dev/null")  # a character device
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "far.txt").write_text("Lighthouses were automated in 1987.")
    (docs / "far_link.txt").symlink_to(outside / "far.txt")  # a file outside the folder: followed
    (docs / "linked_dir").symlink_to(outside)  # a directory: not walked into
    (docs / "sub" / "again").symlink_to(docs)  # a directory loop

    agent = client.agents.create("reader")
    report = client.agents.files.upload(agent, docs, progress=False)
    got = rows(report)
    assert got["good.txt"][0] == got["deep.md"][0] == got["far_link.txt"][0] == "added", report
    assert got["dangling.md"] == ("error",
                                  f"dangling symlink: it points to {tmp_path / 'gone.md'}, which does not exist")
    assert got["loop_a.txt"] == got["loop_b.txt"] == ("error", "symlink loop: following its links never reaches a file")
    assert got["null.txt"][0] == "error" and got["null.txt"][1].startswith("a character device, not a regular file")
    assert got["linked_dir"][0] == "skipped" and f"a symlink to the directory {outside}" in got["linked_dir"][1]
    assert got["again"][0] == "skipped" and "not walked into" in got["again"][1]
    assert len(report.files) == 9  # far.txt is not reached through linked_dir
    assert stored_texts(client, agent) == ["# Deep\n\nHerons nest in colonies.", "Lighthouses were automated in 1987.",
                                           "Otters hold hands while they sleep."]
    # The followed link keeps its name in the folder: that is the path its record and tag carry.
    assert str(docs / "far_link.txt") in {u.path for u in client.agents.files.list(agent)}
    assert "4 error" in report.summary() and "2 skipped" in report.summary() and "dangling.md" in repr(report)

    again = client.agents.files.upload(agent, docs, progress=False)
    assert [f.status for f in again.files] == [f.status if f.status != "added" else "unchanged" for f in report.files]


def test_a_fifo_is_never_opened(client, tmp_path):
    """Opening a FIFO for reading waits for a writer: an upload that did so would hang. The writer here
    gets through its own open only once someone opens the read end, so it tells whether the upload did."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Apples grow on trees.")
    fifo = docs / "pipe.txt"
    os.mkfifo(fifo)
    released = threading.Event()
    opened_by_upload = threading.Event()

    def writer() -> None:
        with open(fifo, "w") as w:  # blocks until a reader opens the FIFO
            if not released.is_set():
                opened_by_upload.set()
                w.write("The upload opened the FIFO.")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    agent = client.agents.create("reader")
    report = client.agents.files.upload(agent, docs, progress=False)
    assert not opened_by_upload.is_set()
    released.set()
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let the writer's open return
    thread.join(60)  # only a hang guard
    assert rows(report) == {
        "a.txt": ("added", None),
        "pipe.txt": ("error", "a named pipe (FIFO), not a regular file; not opened (only regular files are uploaded)"),
    }
    assert stored_texts(client, agent) == ["Apples grow on trees."]


def test_files_that_vanish_or_change_type_after_the_listing_are_error_rows(client, tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (docs / name).write_text(f"File {name} says hello.")
    listed = ingest_module.discover

    def discover_then_meddle(paths):
        found = listed(paths)
        (docs / "b.txt").unlink()  # deleted between the listing and the reading
        (docs / "c.txt").unlink()
        os.mkfifo(docs / "c.txt")  # swapped for a FIFO: it must not be waited on either
        return found

    monkeypatch.setattr(ingest_module, "discover", discover_then_meddle)
    agent = client.agents.create("reader")
    report = client.agents.files.upload(agent, docs, progress=False)
    got = rows(report)
    assert got["a.txt"] == got["d.txt"] == ("added", None)
    assert got["b.txt"] == ("error", f"cannot read {docs / 'b.txt'}: no such file or directory")
    assert got["c.txt"][0] == "error" and "a named pipe (FIFO), not a regular file" in got["c.txt"][1]
    assert stored_texts(client, agent) == ["File a.txt says hello.", "File d.txt says hello."]

    # A known file that vanishes before its unchanged-check is read: an error row, its passages kept.
    (docs / "c.txt").unlink()
    (docs / "c.txt").write_text("File c.txt is back.")
    monkeypatch.setattr(ingest_module, "discover", listed)
    client.agents.files.upload(agent, docs, progress=False)

    def discover_then_swap(paths):
        found = listed(paths)
        (docs / "a.txt").unlink()
        os.mkfifo(docs / "a.txt")
        return found

    monkeypatch.setattr(ingest_module, "discover", discover_then_swap)
    report = client.agents.files.upload(agent, docs, progress=False)
    got = rows(report)
    assert got["a.txt"][0] == "error" and "a named pipe (FIFO)" in got["a.txt"][1], got
    assert got["c.txt"] == got["d.txt"] == ("unchanged", None)
    assert "File a.txt says hello." in stored_texts(client, agent)


def test_a_tree_deeper_than_the_recursion_limit_uploads(client, tmp_path):
    # A known, modest limit: libraries imported by other tests raise it, and 3000 levels would pass PATH_MAX.
    limit, saved = 600, sys.getrecursionlimit()
    deep = tmp_path / "docs"
    path = str(deep)
    os.mkdir(path)
    for _ in range(limit + 50):  # os.makedirs would recurse too
        path += "/d"
        os.mkdir(path)
    Path(path, "bottom.md").write_text("# Bottom\n\nThe last step of the stair.")
    agent = client.agents.create("reader")
    sys.setrecursionlimit(limit)
    try:
        report = client.agents.files.upload(agent, deep, progress=False)
    finally:
        sys.setrecursionlimit(saved)
    assert [(Path(f.path).name, f.status) for f in report.files] == [("bottom.md", "added")]


CHILD = textwrap.dedent(
    """
    import json, sys
    import letta_nb

    db, docs = sys.argv[1:]
    with letta_nb.connect(db) as client:
        client.agents.create("reader")
        report = client.agents.files.upload("reader", docs, progress=False)
        texts = [p.text for p in client.agents.passages.list("reader")]
    print(json.dumps({"rows": [[f.path, f.status, f.error] for f in report.files], "texts": texts}))
    """
)


def test_permission_denied_is_an_error_row(tmp_path):
    """Root reads everything, so the upload runs in a child without the capabilities that let root
    ignore file modes (``setpriv``); any other user needs no help."""
    import json

    docs = tmp_path / "docs"
    (docs / "locked").mkdir(parents=True)
    (docs / "locked" / "inside.md").write_text("# Hidden\n\nYou cannot see me.")
    (docs / "secret.txt").write_text("A secret.")
    (docs / "open.txt").write_text("Open to all.")
    command = [sys.executable, "-c", CHILD, str(tmp_path / "s.db"), str(docs)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root, and setpriv (util-linux) is not there to drop root's file-mode override")
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps=-all", *command]
    os.chmod(docs / "locked", 0)
    os.chmod(docs / "secret.txt", 0)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    finally:
        os.chmod(docs / "locked", 0o755)
        os.chmod(docs / "secret.txt", 0o644)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["rows"] == [
        [str(docs / "open.txt"), "added", None],
        [str(docs / "secret.txt"), "error", f"cannot read {docs / 'secret.txt'}: permission denied"],
        [str(docs / "locked"), "error", "cannot list this directory: permission denied"],
    ]
    assert out["texts"] == ["Open to all."]


def test_empty_and_blank_files_are_skipped_not_stored(client, db_path, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "empty.txt").write_bytes(b"")
    (docs / "blank.md").write_text("  \n\t\n\n")
    (docs / "note.txt").write_text("Bring the slides on Thursday.")
    agent = client.agents.create("reader")
    report = client.agents.files.upload(agent, docs, progress=False)
    assert rows(report) == {
        "blank.md": ("skipped", "only whitespace: nothing to store"),
        "empty.txt": ("skipped", "empty file (0 bytes): nothing to store"),
        "note.txt": ("added", None),
    }
    assert report.chunks == 1 and "2 skipped" in report.summary() and report.errors == []
    assert [Path(u.path).name for u in client.agents.files.list(agent)] == ["note.txt"]
    assert count(db_path, "files") == 1

    # Re-uploading writes nothing and says the same.
    before = query(str(db_path), "select id, updated_at from files")
    again = client.agents.files.upload(agent, docs, progress=False)
    assert rows(again) == {**rows(report), "note.txt": ("unchanged", None)}
    assert query(str(db_path), "select id, updated_at from files") == before

    # A stored file emptied since: skipped, and its old passages go (the file no longer says anything).
    (docs / "note.txt").write_text("\n")
    emptied = client.agents.files.upload(agent, docs, progress=False)
    assert rows(emptied)["note.txt"] == ("skipped",
                                         "only whitespace: nothing to store; its 1 earlier passage(s) were removed")
    assert client.agents.files.list(agent) == [] and client.agents.passages.list(agent) == []
    assert [f.status for f in client.agents.files.upload(agent, docs, progress=False).files] == ["skipped"] * 3


@pytest.mark.parametrize("bad, words", [
    (42, "got int 42"),
    (None, "got NoneType None"),
    ([Path("a.txt"), 42], "item 1 is int 42"),
    (b"/tmp/a.txt", "got bytes: pass a str (os.fsdecode(path) for a bytes path)"),
    ([b"/tmp/a.txt"], "item 0 is bytes"),
    ("", "item 0 is an empty path"),
    ({"a.txt": 1}, "got dict"),
])
def test_upload_of_a_non_path_names_the_argument(client, bad, words):
    agent = client.agents.create("reader")
    with pytest.raises(InvalidArgumentError) as caught:
        client.agents.files.upload(agent, bad, progress=False)
    message = str(caught.value)
    assert message.startswith("path_or_paths must be a file or directory path (a str or os.PathLike")
    assert words in message


@pytest.mark.parametrize("option, value", [("max_file_mb", float("nan")), ("max_file_mb", float("inf")),
                                           ("max_file_mb", True), ("max_file_mb", "5"), ("progress", "yes")])
def test_upload_options_are_checked(client, tmp_path, option, value):
    (tmp_path / "a.txt").write_text("text")
    agent = client.agents.create("reader")
    with pytest.raises(InvalidArgumentError, match=f"^{option} must be"):
        client.agents.files.upload(agent, tmp_path / "a.txt", **{"progress": False, option: value})
