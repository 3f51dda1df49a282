"""Shared fixtures: every test gets its own letta_nb home; ``client`` is a store file in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import letta_nb


@pytest.fixture(autouse=True)
def letta_home(tmp_path, monkeypatch):
    home = tmp_path / "letta_home"
    monkeypatch.setenv("LETTA_NB_HOME", str(home))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "s.db"


@pytest.fixture
def client(db_path: Path) -> Iterator[letta_nb.Client]:
    c = letta_nb.connect(db_path)
    try:
        yield c
    finally:
        c.close()
