"""Every knob of letta_nb in one typed, frozen object, and where each value came from.

Sources, highest precedence first: ``letta_nb.connect(...)`` arguments (the settings a client may choose:
see :data:`CONNECT_SETTINGS`), ``LETTA_NB_*`` environment variables, the user's config file
(``$LETTA_NB_HOME/config.toml``, or the file ``LETTA_NB_CONFIG`` names), the site config files an
administrator writes for every user of an image or a JupyterHub (``{sys.prefix}/etc/letta_nb/config.toml``,
then ``/etc/letta_nb/config.toml``), then the defaults. Config files are flat TOML (``default_model =
"openai/gpt-4o-mini"``); an unknown key is an error that suggests the closest known one, so a typo never
silently leaves a default in place.

Every value is checked where it is read, and a bad one raises :class:`~letta_nb.errors.SettingError` naming
the setting, its source (variable, file and key, or connect argument), what was expected and the fix.
Each resolved value remembers its source, which ``%letta config`` shows.

Why one object: six modules each read their own variable, with six parsers of varying strictness and no
way to see what was in effect. Modules now ask :func:`current` (the environment and files, re-read only
when a variable or a file's stat changed: a few ``stat`` calls) and a client holds the :func:`resolve` d
settings of its ``connect`` call (``client.runtime.settings``). Some settings are process-wide by nature
(one SQLite library per process, one embedding limit per endpoint, one chunking pool), so ``connect`` takes
only the per-client ones. No setting is a secret: API keys stay out of config files (environment or
``connect(api_keys=)``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from letta_nb.errors import ProviderNotAllowedError, SettingError, SQLiteExtensionError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["CONFIG_ENV", "CONNECT_SETTINGS", "SETTINGS", "Settings", "current", "provider_of", "resolve",
           "site_config_paths", "user_config_path"]

CONFIG_ENV = "LETTA_NB_CONFIG"
CONNECT_SETTINGS = ("lease_ttl", "lease_timeout", "default_model", "default_embedding", "allowed_providers")
_EMBEDDING_PROVIDERS = ("hash", "local", "openai", "ollama")


class _SQLiteSettingError(SettingError, SQLiteExtensionError):
    """A bad ``sqlite`` setting is also a SQLiteExtensionError (what it was before settings existed)."""


# ---- parsers: a value (TOML, Python, or text from the environment) -> the setting's value -----------------
# Each raises ValueError with what was expected; the caller adds the setting, its source and the fix.

def _text_number(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _integer(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        value = _text_number(value)
        if isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"an integer from {lo} to {hi}")
        return value
    return parse


def _seconds_or_mb(lo: float, hi: float, *, above_lo: bool, what: str) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        value = _text_number(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                or not lo <= value < hi or (above_lo and value == lo)):
            raise ValueError(f"a number of {what}, {'more than' if above_lo else 'at least'} {lo:g} and below {hi:g}")
        return float(value)
    return parse


def _boolean(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if not isinstance(value, bool):
        raise ValueError("true or false (in the environment also 1/0, yes/no, on/off)")
    return value


def _home(value: Any) -> Path:
    if not isinstance(value, str | os.PathLike) or not os.fspath(value).strip():
        raise ValueError("a directory path such as '~/.letta_nb'")
    return Path(os.fspath(value)).expanduser()


def _sqlite(value: Any) -> str:
    choice = value.strip().lower() if isinstance(value, str) else value
    if choice not in ("stdlib", "pysqlite3"):
        raise ValueError("'stdlib' (the default) or 'pysqlite3' (with pip install 'letta-nb[vec0]')")
    return choice


def _chunk_workers(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        return _integer(0, 64)(value)
    except ValueError:
        raise ValueError("'auto' (one fewer than the cores, 1 to 4), 0 (chunk in a thread) or a number of "
                         "worker processes from 1 to 64") from None


def _local_threads(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        return _integer(1, 256)(value)
    except ValueError:
        raise ValueError("'auto' (half the cores, at least 1) or a number of torch threads from 1 to 256") from None


def provider_of(spec: str) -> str:
    """The provider a model or embedding spec names: ``openai/gpt-4o?x=1`` -> ``openai``."""
    return spec.split("?", 1)[0].split("/", 1)[0].strip().lower()


def _model_providers() -> tuple[str, ...]:
    from letta_nb.llm.registry import KNOWN_PROVIDERS

    return tuple(KNOWN_PROVIDERS)


def _spec(kind: str, known: Callable[[], tuple[str, ...]], example: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, str) and value.strip() and value.isprintable() and provider_of(value) in known():
            return value.strip()
        from letta_nb.llm.registry import redact_spec

        shown = f" (got {redact_spec(value)!r})" if isinstance(value, str) and value.strip() else ""
        raise ValueError(f"a {kind} spec of a known provider ({', '.join(known())}), e.g. {example!r}{shown}")
    return parse


def _summarizer_model(value: Any) -> str | None:
    if isinstance(value, str) and value.strip().lower() in ("", "agent"):
        return None
    try:
        return _spec("model", _model_providers, "openai/gpt-4o-mini")(value)
    except ValueError as e:
        raise ValueError(f"'agent' (each agent's own model) or {e}") from None


def _providers(value: Any) -> tuple[str, ...] | None:
    known = tuple(dict.fromkeys(_model_providers() + _EMBEDDING_PROVIDERS))
    if isinstance(value, str):
        if value.strip() in ("*", "all"):
            return None
        value = [p for p in value.split(",") if p.strip()]
    if not isinstance(value, list | tuple | set | frozenset) or not value or not all(isinstance(p, str) for p in value):
        raise ValueError(f"a non-empty list of providers from {', '.join(known)} (or '*' for all); in the "
                         "environment comma-separated, e.g. LETTA_NB_ALLOWED_PROVIDERS=offline,hash,openai")
    names = tuple(dict.fromkeys(p.strip().lower() for p in value))
    unknown = [p for p in names if p not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"providers from {', '.join(known)}; {unknown[0]!r} is not one{hint}")
    return names


@dataclasses.dataclass(frozen=True)
class _Setting:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    user_file: bool = True  # False: only the environment or a site file may set it
    error: type[SettingError] = SettingError

    @property
    def env(self) -> str:
        return "LETTA_NB_" + self.name.upper()


SETTINGS: dict[str, _Setting] = {s.name: s for s in (
    _Setting("home", _home, Path("~/.letta_nb"),
             "directory of the default store (letta_nb.db), the trust key and config.toml", user_file=False),
    _Setting("sqlite", _sqlite, "stdlib", "SQLite library of the process: stdlib or pysqlite3 (for vec0)",
             error=_SQLiteSettingError),
    _Setting("vector_cache_mb", _seconds_or_mb(0, 1e9, above_lo=False, what="megabytes"), 1024.0,
             "budget of the in-memory vector copy; agents over it are searched by vec0 or a scan (0: off)"),
    _Setting("embed_concurrency", _integer(1, 256), 3, "embedding requests in flight per endpoint"),
    _Setting("embed_adaptive", _boolean, False, "raise the embedding limit until the endpoint answers 429"),
    _Setting("chunk_workers", _chunk_workers, None, "chunking worker processes for uploads (auto, 0 = a thread)"),
    _Setting("local_threads", _local_threads, None, "torch threads of the local embedder (auto: half the cores)"),
    _Setting("pg_pool", _integer(1, 1024), 4, "connections of a PostgreSQL store's writer pool per kernel"),
    _Setting("lease_ttl", _seconds_or_mb(0, 1e7, above_lo=True, what="seconds"), 30.0,
             "seconds an agent's lease outlives a process that stopped renewing it"),
    _Setting("lease_timeout", _seconds_or_mb(0, 1e7, above_lo=True, what="seconds"), 120.0,
             "seconds a turn waits for another process's turn of the agent (then AgentBusyError)"),
    _Setting("default_model", _spec("model", _model_providers, "openai/gpt-4o-mini"), "offline",
             "model of agents created without one"),
    _Setting("default_embedding", _spec("embedding", lambda: _EMBEDDING_PROVIDERS, "openai/text-embedding-3-small"),
             "hash", "embedder of agents created without one"),
    _Setting("allowed_providers", _providers, None, "providers models and embedders may use (unset: all)"),
    _Setting("summarizer_model", _summarizer_model, None,
             "model that summarises what leaves an agent's context window (unset: the agent's own)"),
    _Setting("summarizer_timeout_s", _seconds_or_mb(0, 1e5, above_lo=True, what="seconds"), 60.0,
             "seconds a summary may take before the fixed note stands in for it"),
)}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved settings; ``sources[name]`` says where each value came from (``"default"``,
    ``"env LETTA_NB_…"``, ``"user file PATH"``, ``"site file PATH"``, ``"connect(name=)"``)."""

    home: Path
    sqlite: str
    vector_cache_mb: float
    embed_concurrency: int
    embed_adaptive: bool
    chunk_workers: int | None
    local_threads: int | None
    pg_pool: int
    lease_ttl: float
    lease_timeout: float
    default_model: str
    default_embedding: str
    allowed_providers: tuple[str, ...] | None
    summarizer_model: str | None
    summarizer_timeout_s: float
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")

    def check_provider(self, spec: str, kind: str = "model") -> None:
        """Raise ProviderNotAllowedError if ``spec``'s provider is not in ``allowed_providers``."""
        if self.allowed_providers is None or not isinstance(spec, str):  # not a spec: resolving it says why
            return
        provider = provider_of(spec)
        if provider in self.allowed_providers:
            return
        from letta_nb.llm.registry import redact_spec

        where = self.source("allowed_providers")
        raise ProviderNotAllowedError(
            f"{kind} {redact_spec(spec)!r} uses provider {provider!r}, which the allowed_providers setting "
            f"({', '.join(self.allowed_providers)}; from {where}) does not allow. Fix: use a {kind} of an allowed "
            f"provider, or add {provider!r} to allowed_providers ({where}).")

    def rows(self) -> list[dict[str, Any]]:
        """One row per setting (setting, value, source, env var), as ``%letta config`` shows them."""
        return [{"setting": s.name, "value": _display(s.name, getattr(self, s.name)), "source": self.source(s.name),
                 "env var": s.env} for s in SETTINGS.values()]


def _display(name: str, value: Any) -> Any:
    if value is None:
        return {"allowed_providers": "all", "summarizer_model": "agent"}.get(name, "auto")
    return ", ".join(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value


def site_config_paths() -> list[Path]:
    """The administrator's config files, highest precedence first: the environment's (an image, a venv,
    a conda env of a JupyterHub) then the machine's."""
    return [Path(sys.prefix) / "etc" / "letta_nb" / "config.toml", Path("/etc/letta_nb/config.toml")]


def user_config_path(home: Path, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env[CONFIG_ENV]).expanduser() if env.get(CONFIG_ENV, "").strip() else home / "config.toml"


def _read_file(path: Path, label: str, *, user: bool) -> dict[str, tuple[Any, str]]:
    """A config file's settings: name -> (raw value, source); {} if the file does not exist."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SettingError(f"{path} is not valid TOML: {e}. Fix the file (TOML: key = value, strings in quotes, "
                           f"e.g. default_model = \"offline\") or remove it.") from None
    except OSError as e:
        raise SettingError(f"cannot read the {label} {path}: {e.strerror}. Fix its permissions or remove it.") from None
    out: dict[str, tuple[Any, str]] = {}
    for key, value in data.items():
        if key not in SETTINGS:
            close = difflib.get_close_matches(key, list(SETTINGS), n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SettingError(f"unknown setting {key!r} in {path}.{hint} Known settings: {', '.join(SETTINGS)}.")
        if user and not SETTINGS[key].user_file:
            raise SettingError(f"{key!r} in {path} cannot be set in the user config file, which is found through "
                               f"it. Fix: set LETTA_NB_{key.upper()} or a site config file, or remove the line.")
        out[key] = (value, f"{label} {path}")
    return out


def resolve(overrides: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``overrides`` (connect arguments; None means not given), the environment, the user's
    config file, the site config files and the defaults, in that order of precedence."""
    settings, _ = _resolve(overrides or {}, os.environ if environ is None else environ)
    return settings


def _resolve(overrides: Mapping[str, Any], env: Mapping[str, str]) -> tuple[Settings, list[str]]:
    raw: dict[str, tuple[Any, str]] = {}  # name -> (value, source), lowest precedence first
    for path in reversed(site_config_paths()):
        raw.update(_read_file(path, "site file", user=False))
    from_env = {s.name: (env[s.env], f"env {s.env}") for s in SETTINGS.values() if env.get(s.env, "").strip()}
    home_raw = from_env.get("home") or raw.get("home")
    home = _checked(SETTINGS["home"], *home_raw) if home_raw else SETTINGS["home"].default.expanduser()
    user_path = user_config_path(home, env)
    if env.get(CONFIG_ENV, "").strip() and not user_path.is_file():
        raise SettingError(f"{CONFIG_ENV} names {str(user_path)!r}, which is not a file. Fix: point it at your "
                           f"config.toml, or unset it to use {home / 'config.toml'}.")
    raw.update(_read_file(user_path, "user file", user=True))
    raw.update(from_env)
    for name, value in overrides.items():
        if name not in CONNECT_SETTINGS:
            raise SettingError(f"connect() does not take {name!r}; it takes {', '.join(CONNECT_SETTINGS)}.")
        if value is not None:
            raw[name] = (value, f"connect({name}=)")
    values = {name: s.default for name, s in SETTINGS.items()} | {"home": home}
    sources: dict[str, str] = {}
    for name, (value, source) in raw.items():
        values[name] = _checked(SETTINGS[name], value, source)
        sources[name] = source
    settings = Settings(**values, sources=MappingProxyType(sources))
    for name, kind in (("default_model", "model"), ("default_embedding", "embedding")):
        try:
            settings.check_provider(values[name], kind)
        except ProviderNotAllowedError as e:
            raise SettingError(f"{name} (from {settings.source(name)}) is not allowed: {e} Set {name} too, next "
                               "to allowed_providers.") from None
    return settings, [str(p) for p in (*site_config_paths(), user_path)]


def _checked(setting: _Setting, value: Any, source: str) -> Any:
    """``setting.parse(value)``, or a SettingError naming the setting, its source, what was expected, the fix."""
    try:
        return setting.parse(value)
    except ValueError as e:
        shown = repr(value if not isinstance(value, str) or len(value) <= 80 else value[:80] + "...")
        if source.startswith("env "):
            what, fix = f"{setting.env}={shown}", f"set {setting.env} to a valid value or unset it"
        elif source.startswith("connect("):
            what, fix = f"connect({setting.name}={shown})", f"pass a valid {setting.name} or leave it out"
        else:  # "user file PATH" / "site file PATH"
            what, fix = f"{setting.name} = {shown} in {source.split(' ', 2)[2]}", "correct that line or remove it"
        default = _display(setting.name, setting.default)
        raise setting.error(f"{what} is not a valid {setting.name}: expected {e}. Fix: {fix} "
                            f"(the default is {default!r}).") from None


# ---- the process's settings, re-read when their inputs change -----------------------------------------
_lock = threading.Lock()
_cached: tuple[tuple[Any, ...], list[str], tuple[Any, ...], Settings] | None = None


_INPUT_VARS = ("HOME", CONFIG_ENV, *(s.env for s in SETTINGS.values()))


def _env_key(env: Mapping[str, str]) -> tuple[Any, ...]:
    return (sys.prefix, *map(env.get, _INPUT_VARS))


def _stats(paths: Iterable[str]) -> tuple[Any, ...]:
    out: list[Any] = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def current() -> Settings:
    """The settings of this process from the environment and the config files (no connect arguments):
    resolved again only when one of the variables or files changed (a few ``stat`` calls otherwise)."""
    global _cached
    env_key = _env_key(os.environ)
    cached = _cached
    if cached is not None and cached[0] == env_key and _stats(cached[1]) == cached[2]:
        return cached[3]
    with _lock:
        settings, paths = _resolve({}, os.environ)
        _cached = (env_key, paths, _stats(paths), settings)
        return settings
