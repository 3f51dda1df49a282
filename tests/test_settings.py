"""One settings object: its sources and their precedence, its errors, and the modules and magics that read it.

Precedence, highest first: connect() arguments > LETTA_NB_* variables > the user's config file > the site
config files ({sys.prefix}/etc/letta_nb, then /etc/letta_nb) > defaults. Each test gets its own
LETTA_NB_HOME (conftest); the site files are pointed into tmp_path with monkeypatch, except in the
administrator test, which writes the real {sys.prefix} file of a throw-away virtual environment and runs a
fresh interpreter in it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

import letta_nb
from letta_nb import settings as settings_mod
from letta_nb.embeddings import chunk_workers, concurrency
from letta_nb.errors import ProviderNotAllowedError, SettingError, SQLiteExtensionError
from letta_nb.notebook import current_session
from letta_nb.runtime.sandbox._policy import private_dirs
from letta_nb.settings import current, resolve
from letta_nb.store.engine import default_home
from letta_nb.store.sqlite.vectors import _cache_budget_bytes

REPO = Path(__file__).resolve().parents[1]
SETTING_VARS = [s.env for s in settings_mod.SETTINGS.values() if s.name != "home"] + [settings_mod.CONFIG_ENV]


@pytest.fixture(autouse=True)
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(the environment's site file, the machine's site file), both in tmp_path; no LETTA_NB_* setting set."""
    for var in SETTING_VARS:
        monkeypatch.delenv(var, raising=False)
    prefix_file, etc_file = tmp_path / "prefix" / "config.toml", tmp_path / "etc" / "config.toml"
    monkeypatch.setattr(settings_mod, "site_config_paths", lambda: [prefix_file, etc_file])
    return prefix_file, etc_file


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def user_file(letta_home: Path, text: str) -> Path:
    return write(letta_home / "config.toml", text)


# ---- precedence ----------------------------------------------------------------------------------------


def test_each_source_outranks_the_ones_below_it(site: tuple[Path, Path], letta_home: Path,
                                                monkeypatch: pytest.MonkeyPatch, db_path: Path) -> None:
    prefix_file, etc_file = site
    assert (current().default_model, current().source("default_model")) == ("offline", "default")
    write(etc_file, 'default_model = "ollama/from-etc"\nembed_concurrency = 4\n')
    assert (current().default_model, current().source("default_model")) == ("ollama/from-etc", f"site file {etc_file}")
    write(prefix_file, 'default_model = "ollama/from-prefix"\n')
    s = current()
    assert (s.default_model, s.source("default_model")) == ("ollama/from-prefix", f"site file {prefix_file}")
    assert (s.embed_concurrency, s.source("embed_concurrency")) == (4, f"site file {etc_file}")  # others stay
    path = user_file(letta_home, 'default_model = "ollama/from-user"\nembed_concurrency = 5\n')
    s = current()
    assert (s.default_model, s.source("default_model")) == ("ollama/from-user", f"user file {path}")
    assert s.embed_concurrency == 5
    monkeypatch.setenv("LETTA_NB_DEFAULT_MODEL", "ollama/from-env")
    s = current()
    assert (s.default_model, s.source("default_model")) == ("ollama/from-env", "env LETTA_NB_DEFAULT_MODEL")
    assert (s.embed_concurrency, s.source("embed_concurrency")) == (5, f"user file {path}")
    s = resolve({"default_model": "offline?latency_ms=1"})
    assert (s.default_model, s.source("default_model")) == ("offline?latency_ms=1", "connect(default_model=)")
    with letta_nb.connect(db_path, default_model="offline?latency_ms=2") as client:  # and the client uses it
        assert client.agents.create("sam").model == "offline?latency_ms=2"
        assert client.runtime.settings.source("default_model") == "connect(default_model=)"
    with letta_nb.connect(db_path) as client:  # connect() without it: the environment's
        assert client.agents.create("max").model == "ollama/from-env"


def test_letta_nb_config_names_the_user_file_and_a_missing_one_is_an_error(tmp_path: Path, letta_home: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    user_file(letta_home, "lease_ttl = 11\n")
    other = write(tmp_path / "team" / "letta.toml", "lease_ttl = 12\n")
    monkeypatch.setenv("LETTA_NB_CONFIG", str(other))
    assert (current().lease_ttl, current().source("lease_ttl")) == (12.0, f"user file {other}")
    monkeypatch.setenv("LETTA_NB_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingError, match=r"LETTA_NB_CONFIG names .*missing\.toml.*not a file"):
        current()


def test_current_follows_edits_of_the_environment_and_of_config_files(letta_home: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first = current()
    assert current() is first  # nothing changed: the same object, not a new resolution
    path = user_file(letta_home, "vector_cache_mb = 8\n")
    assert current().vector_cache_mb == 8.0
    path.write_text("vector_cache_mb = 16.5\n")
    assert current().vector_cache_mb == 16.5
    monkeypatch.setenv("LETTA_NB_VECTOR_CACHE_MB", "32")
    assert current().vector_cache_mb == 32.0


# ---- the modules that used to read their own variable --------------------------------------------------


def test_every_module_reads_the_settings_with_the_old_variables_meaning(tmp_path: Path, letta_home: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "elsewhere"
    monkeypatch.setenv("LETTA_NB_HOME", str(home))
    assert default_home() == home and home.resolve() in private_dirs()
    monkeypatch.setenv("LETTA_NB_VECTOR_CACHE_MB", "2")
    assert _cache_budget_bytes() == 2 * 1024 * 1024
    monkeypatch.setenv("LETTA_NB_CHUNK_WORKERS", "0")
    assert chunk_workers.processes_are_safe() is False  # 0: chunk in a thread
    monkeypatch.setenv("LETTA_NB_CHUNK_WORKERS", "2")
    assert chunk_workers.processes_are_safe() is True
    pool = chunk_workers.chunk_pool()
    try:
        assert vars(pool)["_max_workers"] == 2
    finally:
        pool.shutdown()
    monkeypatch.setenv("LETTA_NB_EMBED_CONCURRENCY", "5")
    monkeypatch.setenv("LETTA_NB_EMBED_ADAPTIVE", "1")

    async def made_limit() -> concurrency.ConcurrencyLimit:
        return concurrency.limit_for("http://settings-test.invalid/v1")

    limit = asyncio.run(made_limit())
    assert (limit.limit, limit.adaptive) == (5, True)


def test_a_config_file_alone_reaches_the_modules(letta_home: Path, site: tuple[Path, Path]) -> None:
    write(site[1], "chunk_workers = 0\n")
    user_file(letta_home, "vector_cache_mb = 3\nembed_adaptive = true\n")
    assert chunk_workers.processes_are_safe() is False
    assert _cache_budget_bytes() == 3 * 1024 * 1024
    assert concurrency.configure()["adaptive"] is True


# ---- validation ------------------------------------------------------------------------------------------


def test_a_bad_integer_in_the_environment_names_the_variable_what_was_expected_and_the_fix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LETTA_NB_EMBED_CONCURRENCY", "lots")
    with pytest.raises(SettingError) as info:
        current()
    message = str(info.value)
    assert "LETTA_NB_EMBED_CONCURRENCY='lots' is not a valid embed_concurrency" in message
    assert "an integer from 1 to 256" in message and "unset it" in message and "default is 3" in message


def test_a_negative_number_in_a_file_names_the_file_and_the_key(letta_home: Path) -> None:
    path = user_file(letta_home, "vector_cache_mb = -5\n")
    with pytest.raises(SettingError) as info:
        current()
    assert f"vector_cache_mb = -5 in {path} is not a valid vector_cache_mb" in str(info.value)
    assert "at least 0" in str(info.value) and "remove it" in str(info.value)


def test_a_bad_connect_argument_is_refused_before_the_store_is_touched(db_path: Path) -> None:
    with pytest.raises(SettingError, match=r"connect\(lease_ttl=-1\) is not a valid lease_ttl: expected a number "
                                           r"of seconds, more than 0"):
        letta_nb.connect(db_path, lease_ttl=-1)
    with pytest.raises(SettingError, match=r"connect\(allowed_providers=\['offline', 'hahs'\]\).*did you mean 'hash'"):
        letta_nb.connect(db_path, allowed_providers=["offline", "hahs"])
    assert not db_path.exists()


def test_an_unknown_key_suggests_the_closest_known_one(site: tuple[Path, Path]) -> None:
    path = write(site[0], 'defualt_model = "offline"\n')
    with pytest.raises(SettingError) as info:
        current()
    assert f"unknown setting 'defualt_model' in {path}. Did you mean 'default_model'?" in str(info.value)


def test_bad_toml_names_the_file_and_the_line(letta_home: Path) -> None:
    path = user_file(letta_home, 'default_model = "offline"\nlease_ttl = = 3\n')
    with pytest.raises(SettingError) as info:
        current()
    assert str(path) in str(info.value) and "line 2" in str(info.value) and "not valid TOML" in str(info.value)


def test_home_cannot_move_the_user_file_that_is_found_in_it(letta_home: Path, tmp_path: Path) -> None:
    user_file(letta_home, f'home = "{tmp_path / "other"}"\n')
    with pytest.raises(SettingError, match="cannot be set in the user config file.*LETTA_NB_HOME"):
        current()


def test_a_bad_sqlite_choice_is_still_a_sqlite_extension_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LETTA_NB_SQLITE", "bogus")
    with pytest.raises(SQLiteExtensionError, match="LETTA_NB_SQLITE='bogus'.*'stdlib'.*'pysqlite3'"):
        current()


# ---- allowed providers and defaults ----------------------------------------------------------------------


def test_a_provider_outside_allowed_providers_is_refused_naming_the_setting_and_its_source(db_path: Path,
                                                                                         site: tuple[Path, Path]
                                                                                         ) -> None:
    with letta_nb.connect(db_path) as client:  # all allowed: an agent on a (never reached) OpenAI endpoint
        client.agents.create("remote", model="openai/gpt-4o-mini?base_url=http://127.0.0.1:9/v1")
    with letta_nb.connect(db_path, allowed_providers=["offline", "hash"]) as client:
        with pytest.raises(ProviderNotAllowedError) as info:
            client.agents.create("sam", model="openai/gpt-4o-mini")
        message = str(info.value)
        assert "provider 'openai'" in message and "allowed_providers" in message
        assert "connect(allowed_providers=)" in message
        assert [a.name for a in client.agents.list()] == ["remote"]  # nothing written
        with pytest.raises(ProviderNotAllowedError, match="model 'openai/gpt-4o-mini\\?base_url=...'"):
            client.agents.messages.create("remote", "hello")  # calling a stored agent's model is refused too
    path = write(site[1], 'allowed_providers = ["offline", "hash"]\n')
    with (letta_nb.connect(db_path) as client,
          pytest.raises(ProviderNotAllowedError, match=f"embedding 'local'.*from site file {path}")):
        client.agents.create("sam", embedding="local")


def test_a_default_that_allowed_providers_forbids_is_an_error_at_once(site: tuple[Path, Path]) -> None:
    path = write(site[1], 'allowed_providers = ["openai", "hash"]\n')
    with pytest.raises(SettingError, match=f"default_model \\(from default\\).*model 'offline'.*from site file {path}"):
        current()


def test_an_admin_site_file_sets_defaults_for_a_new_user(tmp_path: Path) -> None:
    """The administrator writes {sys.prefix}/etc/letta_nb/config.toml in the image's environment; a user with
    a fresh home and no configuration of their own gets its default model and embedder."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    write(env_dir / "etc" / "letta_nb" / "config.toml",
          '# set by the hub administrator\ndefault_model = "offline?latency_ms=1"\ndefault_embedding = "hash?dim=64"\n'
          'allowed_providers = ["offline", "hash"]\n')
    home = tmp_path / "fresh_user_home"
    code = ("import letta_nb; c = letta_nb.connect(); a = c.agents.create('sam'); s = c.runtime.settings; "
            "print(a.model, a.embedding, s.source('default_model'), sep='|'); c.close()")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETTA_NB_")}
    env.update(LETTA_NB_HOME=str(home), PYTHONPATH=str(REPO))
    out = subprocess.run([str(env_dir / "bin" / "python"), "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    model, embedding, source = out.stdout.strip().split("|")
    assert (model, embedding) == ("offline?latency_ms=1", "hash?dim=64")
    assert source == f"site file {env_dir / 'etc' / 'letta_nb' / 'config.toml'}"
    assert (home / "letta_nb.db").exists()


# ---- %letta config ----------------------------------------------------------------------------------------


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    sh = InteractiveShell.instance(config=config)
    try:
        yield sh
    finally:
        sh.run_line_magic("unload_ext", "letta_nb")
        InteractiveShell.clear_instance()


def test_letta_config_shows_every_setting_with_its_source_and_masks_keys(
        shell: InteractiveShell, letta_home: Path, site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-DO-NOT-SHOW-4242"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("LETTA_NB_EMBED_CONCURRENCY", "7")
    path = user_file(letta_home, "lease_timeout = 60\n")
    write(site[1], 'default_model = "offline?latency_ms=3"\n')
    with capture_output() as cap:
        shell.run_line_magic("load_ext", "letta_nb")
    assert "model 'offline?latency_ms=3'" in cap.stdout  # %load_ext announces the site's default
    frame: Any = shell.run_line_magic("letta", "config")
    assert list(frame.columns) == ["value", "source", "env var"]
    assert set(settings_mod.SETTINGS) <= set(frame.index)
    assert tuple(frame.loc["embed_concurrency"]) == (7, "env LETTA_NB_EMBED_CONCURRENCY", "LETTA_NB_EMBED_CONCURRENCY")
    assert tuple(frame.loc["lease_timeout", ["value", "source"]]) == (60.0, f"user file {path}")
    assert tuple(frame.loc["default_model", ["value", "source"]]) == ("offline?latency_ms=3",
                                                                      f"site file {site[1]}")
    assert tuple(frame.loc["lease_ttl", ["value", "source"]]) == (30.0, "default")
    assert tuple(frame.loc["api_keys.openai", ["value", "source"]]) == ("set (hidden)", "env OPENAI_API_KEY")
    shell.run_line_magic("letta", "create sam")
    session = current_session()
    assert session is not None and session.client.agents.retrieve("sam").model == "offline?latency_ms=3"
    shell.run_line_magic("letta", "config model offline?latency_ms=9")
    frame = shell.run_line_magic("letta", "config")
    assert tuple(frame.loc["default_model", ["value", "source"]]) == ("offline?latency_ms=9", "%letta config model")
    with capture_output() as cap:
        shell.run_cell("%letta config")
    shown = frame.to_string() + frame.to_html() + cap.stdout + str(cap.outputs[0].data if cap.outputs else "")
    assert "api_keys.openai" in shown and secret not in shown


def test_letta_config_masks_a_key_passed_to_connect(shell: InteractiveShell, db_path: Path) -> None:
    from letta_nb.notebook._session import NotebookSession, set_session

    secret = "sk-connect-SECRET-777"
    with capture_output():
        shell.run_line_magic("load_ext", "letta_nb")
    with letta_nb.connect(db_path, api_keys={"openai": secret}, allowed_providers=["offline", "hash"]) as client:
        old = set_session(NotebookSession(client=client))
        if old is not None:
            old.close()
        frame: Any = shell.run_line_magic("letta", "config")
        assert tuple(frame.loc["api_keys.openai", ["value", "source"]]) == ("set (hidden)", "connect(api_keys=)")
        assert tuple(frame.loc["allowed_providers", ["value", "source"]]) == ("offline, hash",
                                                                             "connect(allowed_providers=)")
        assert secret not in frame.to_string() + frame.to_html()
        with pytest.raises(Exception, match="allowed_providers"):
            shell.run_line_magic("letta", "config model openai/gpt-4o-mini")
