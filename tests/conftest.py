"""Shared fixtures: every test gets its own letta_nb home; ``client`` is a store in tmp_path.

The store backend the tests run on is chosen once: ``--backend postgres`` (or ``LETTA_NB_TEST_BACKEND=postgres``)
routes :func:`store_url` (and so ``db_path`` and ``client``) to a fresh PostgreSQL database per test, copied from
a migrated template on one server per session (letta_nb/testing/pgserver.py); the default is a SQLite file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import letta_nb

BACKENDS = ("sqlite", "postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", choices=BACKENDS, default=None,
                     help="store backend of the store tests (default: $LETTA_NB_TEST_BACKEND, else sqlite)")


def selected_backend(config: pytest.Config) -> str:
    chosen = config.getoption("--backend") or os.environ.get("LETTA_NB_TEST_BACKEND") or "sqlite"
    if chosen not in BACKENDS:
        raise pytest.UsageError(f"LETTA_NB_TEST_BACKEND={chosen!r}: expected one of {', '.join(BACKENDS)}")
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only(reason): checks something only a SQLite file has (its bytes, "
                                       "its pragmas); skipped on --backend postgres with the reason")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if selected_backend(config) == "sqlite":
        return
    for item in items:
        if (marker := item.get_closest_marker("sqlite_only")) is not None:
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {marker.args[0] if marker.args else ''}"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One PostgreSQL + pgvector server for the session; skipped only where its package is not installed
    (never in CI, where a missing server fails)."""
    from letta_nb.testing.pgserver import PgServer, PgServerUnavailable, install_dir

    try:
        install_dir()
    except PgServerUnavailable as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))
    server = PgServer().start()
    try:
        server.migrated_template()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """One Redis server (Debian's redis-server on 127.0.0.1, a free port) for the session; skipped only where
    the binary is missing outside CI (.ci/run installs it)."""
    from letta_nb.testing.redisserver import RedisServer, RedisServerUnavailable, redis_binary

    try:
        redis_binary()
    except RedisServerUnavailable as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))
    with RedisServer() as server:
        yield server


@pytest.fixture
def pg_store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL store whatever the selected backend (tests of what only PostgreSQL has: Redis
    coordination, pgvector)."""
    server = request.getfixturevalue("pg_server")
    name = server.create_database(server.migrated_template())
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture
def kept_url(pg_store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """:func:`pg_store_url` where an idle lease stays its holder's for minutes (runtime/leases.py ``_GRACE``):
    only a read gives it up, no timer hands anything over (the lease-read tests: test_pg_lease_*.py)."""
    from letta_nb.runtime import leases

    monkeypatch.setattr(leases, "_GRACE", 600.0)
    return pg_store_url


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh store for this test on the selected backend: a SQLite file path, or a PostgreSQL URL."""
    if selected_backend(request.config) == "sqlite":
        yield tmp_path / "s.db"
        return
    server = request.getfixturevalue("pg_server")
    name = server.create_database(server.migrated_template())
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture(autouse=True)
def letta_home(tmp_path, monkeypatch):
    home = tmp_path / "letta_home"
    monkeypatch.setenv("LETTA_NB_HOME", str(home))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def db_path(store_url: Any) -> Any:
    return store_url


@pytest.fixture
def client(db_path: Path) -> Iterator[letta_nb.Client]:
    c = letta_nb.connect(db_path)
    try:
        yield c
    finally:
        c.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Close the widgets tests made while ipywidgets is still whole: left to the interpreter's exit, each
    one's ``__del__`` runs after the module state it needs is gone and prints a traceback."""
    import sys

    widgets = sys.modules.get("ipywidgets")
    if widgets is not None:
        widgets.Widget.close_all()


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An IPython shell with ``%load_ext letta_nb`` done (its store in ``$LETTA_NB_HOME``, set by the autouse
    fixture above), unloaded and cleared after the test: what the magics tests drive."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    sh = InteractiveShell.instance(config=config)
    with capture_output():
        sh.run_line_magic("load_ext", "letta_nb")
    try:
        yield sh
    finally:
        sh.run_line_magic("unload_ext", "letta_nb")
        InteractiveShell.clear_instance()
