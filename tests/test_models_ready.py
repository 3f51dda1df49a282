"""``%letta models``: a provider is ready only when its endpoint answered, and the table says what was checked.

Real HTTP on 127.0.0.1: a closed port (nothing listening), and a small server that counts the requests
and the ``Authorization`` headers it receives, so the probe, its cache and where the key went are seen
from the server's side.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

from letta_nb.llm import readiness
from letta_nb.llm.readiness import provider_readiness


class _Models(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"object": "list", "data": [{"id": "llama3.2", "object": "model"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def models_server() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (_Models,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readiness, "_cache", {})
    for var in ("OLLAMA_BASE_URL", "OLLAMA_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed on exit: nothing listens there


def test_ollama_without_a_server_is_not_ready_and_says_what_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    monkeypatch.setenv("OLLAMA_BASE_URL", f"http://127.0.0.1:{port}/v1")
    status = provider_readiness("ollama")
    assert status.ready is False
    assert f"GET http://127.0.0.1:{port}/v1/models" in status.checked and "no server answered" in status.checked


def test_ollama_with_a_server_is_ready_and_probed_once_while_cached(
        monkeypatch: pytest.MonkeyPatch, models_server: tuple[str, list[tuple[str, str | None]]]) -> None:
    url, seen = models_server
    monkeypatch.setenv("OLLAMA_BASE_URL", url)
    first = provider_readiness("ollama")
    assert first.ready is True and first.checked.startswith(f"GET {url}/models: HTTP 200 in ")
    assert provider_readiness("ollama") == first  # cached: no second request
    assert seen == [("/v1/models", "Bearer no-key")]


def test_openai_needs_its_key_and_the_key_goes_only_to_the_configured_endpoint_never_to_the_table(
        monkeypatch: pytest.MonkeyPatch, models_server: tuple[str, list[tuple[str, str | None]]]) -> None:
    url, seen = models_server
    status = provider_readiness("openai")
    assert status == readiness.Readiness(False, "OPENAI_API_KEY is not set (no request sent)")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    status = provider_readiness("openai")
    assert status.ready is True and status.checked.startswith(f"GET {url}/models: HTTP 200")
    assert seen == [("/v1/models", "Bearer sk-secret-value-123")]
    monkeypatch.setenv("OPENAI_BASE_URL", url.replace("http://", "http://user:t0ps3cret@"))
    status = provider_readiness("openai")  # credentials in the URL are not displayed either
    assert status.checked.startswith(f"GET {url}/models: HTTP 200")
    assert not any(s in status.checked for s in ("user", "t0ps3cret", "sk-secret"))


def test_the_magic_table_has_a_checked_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("OLLAMA_BASE_URL", f"http://127.0.0.1:{_closed_port()}/v1")
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    sh = InteractiveShell.instance(config=config)
    try:
        with capture_output():
            sh.run_line_magic("load_ext", "letta_nb")
        table = sh.run_line_magic("letta", "models").set_index("provider")
        assert list(table.columns) == ["example", "needs", "ready", "checked", "about"]
        assert table.loc["offline", "ready"] and table.loc["offline", "checked"] == "built in (no endpoint)"
        assert not table.loc["ollama", "ready"] and "no server answered" in table.loc["ollama", "checked"]
        assert not table.loc["openai", "ready"]
    finally:
        sh.run_line_magic("unload_ext", "letta_nb")
        InteractiveShell.clear_instance()
