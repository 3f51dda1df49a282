"""Shared fixtures: every test gets its own letta_nb home (store files live in tmp_path)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def letta_home(tmp_path, monkeypatch):
    home = tmp_path / "letta_home"
    monkeypatch.setenv("LETTA_NB_HOME", str(home))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return home
