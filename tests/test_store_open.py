"""``letta_nb.connect(path)`` on something that is not a letta_nb store: a clear StoreError, the file untouched.

Each case is a real file (or directory) under ``tmp_path``: a text file, a PNG, a directory where the
file should be, a path in a missing folder or under a regular file, another application's SQLite
database, a damaged SQLite file and a store written by a newer letta_nb. The error must be a
:class:`~letta_nb.errors.StoreError` (a ``LettaNBError``) naming the path and the fix, never a raw
``sqlite3``/SQLAlchemy exception, and the bytes on disk must be exactly what they were.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import letta_nb
from letta_nb.errors import LettaNBError, SchemaVersionError, StoreError
from letta_nb.store.migrations import SCHEMA_VERSION

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489") + b"\0" * 64


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a directory)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def refused(where: Path | str, folder: Path, *expected: str) -> str:
    before = snapshot(folder)
    with pytest.raises(StoreError) as info:
        letta_nb.connect(where)
    message = str(info.value)
    assert str(where) in message
    for words in expected:
        assert words in message, message
    assert snapshot(folder) == before  # nothing created, nothing changed
    return message


def test_a_text_file_is_refused_untouched(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("sk-not-a-secret but private notes\n" * 20)
    message = refused(notes, tmp_path, "is not a SQLite database", "left it untouched", "Pass the path")
    assert "sk-not-a-secret" not in message  # the file's content is never echoed


def test_a_png_is_refused_untouched(tmp_path):
    image = tmp_path / "plot.png"
    image.write_bytes(PNG)
    refused(image, tmp_path, "is not a SQLite database")


def test_a_directory_where_the_database_file_should_be(tmp_path):
    (tmp_path / "letta_nb.db").mkdir()  # connect(folder) means folder/letta_nb.db: here a directory
    refused(tmp_path, tmp_path, "is a directory", "Pass a file path")


def test_a_path_in_a_missing_folder_is_refused_and_no_folder_is_made(tmp_path):
    refused(tmp_path / "no" / "such" / "store.db", tmp_path, "does not exist", "Create the folder first")


def test_a_path_under_a_regular_file(tmp_path):
    (tmp_path / "plain").write_text("x")
    refused(tmp_path / "plain" / "store.db", tmp_path, "is not a directory")


def test_another_applications_sqlite_database_is_not_adopted(tmp_path):
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('Grace')")
    conn.commit()
    conn.close()
    refused(other, tmp_path, "not a letta_nb store", "customers", "Pass another path")


def test_a_damaged_sqlite_file_is_refused_untouched(tmp_path):
    damaged = tmp_path / "damaged.db"
    conn = sqlite3.connect(damaged)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 50)
    conn.commit()
    conn.close()
    data = bytearray(damaged.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page, past the file header
    damaged.write_bytes(bytes(data))
    refused(damaged, tmp_path, "damaged SQLite database", "malformed", "Restore a backup")


def test_a_store_from_a_newer_letta_nb_is_refused_untouched(tmp_path):
    path = tmp_path / "future.db"
    letta_nb.connect(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                 (SCHEMA_VERSION + 1, "m9999_from_the_future", "2030-01-01 00:00:00.000000"))
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaVersionError, match=r"pip install -U"):
        letta_nb.connect(path)
    assert path.read_bytes() == before


def test_an_empty_file_becomes_a_new_store(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    with letta_nb.connect(empty) as client:
        client.agents.create("sam")
    assert empty.read_bytes().startswith(b"SQLite format 3\0")


@pytest.mark.parametrize("where", [42, b"bytes.db", "", "   "])
def test_a_location_of_the_wrong_kind_is_an_argument_error(where):
    with pytest.raises(LettaNBError, match="where|store location"):
        letta_nb.connect(where)


def test_a_name_longer_than_the_filesystem_allows_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="File name too long"):
        letta_nb.connect(tmp_path / ("x" * 300 + ".db"))
    assert list(tmp_path.iterdir()) == []
