"""JupyterLab and Notebook 7 servers and a headless chromium for tests/test_browser.py (fixtures), and the
page helpers its tests share.

One JupyterLab, one Notebook 7 and one chromium serve the whole module (each takes seconds to start). A
server listens on 127.0.0.1 at a free port with a throwaway token; its kernels are this interpreter with a
temporary LETTA_NB_HOME of the server's own. Each test opens its own notebook in a browser context of its own
(:func:`page_in`) and its kernels are shut down when it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("LETTA_NB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts" / "browser"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    """A running JupyterLab or Notebook 7: where to reach it, where its notebooks and its kernels' store live."""

    base: str
    token: str
    pages: str  # the URL path of a notebook's page: lab/tree or notebooks
    root: Path  # the server's root_dir: a test writes its notebook here
    home: Path  # LETTA_NB_HOME of every kernel it starts

    def url(self, notebook: str) -> str:
        """The notebook's page. In JupyterLab, in a workspace of its own: the default one would reopen the tabs of
        the module's earlier tests beside it."""
        pages = f"lab/workspaces/{Path(notebook).stem}/tree" if self.pages == "lab/tree" else self.pages
        return f"{self.base}/{pages}/{notebook}?token={self.token}"


# One server per front end for the whole module (each takes seconds to start); every test opens its own notebook
# in it, with agents of its own names, and shuts its kernels down when it ends (kernels_shut_down).
@pytest.fixture(scope="module", name="artifacts")
def artifacts_fixture() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # screenshots of this run only
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="module", name="jupyterlab")
def jupyterlab_fixture(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Server]:
    yield from _server("jupyterlab", tmp_path_factory.mktemp("jupyterlab"))


@pytest.fixture(scope="module", name="notebook7")
def notebook7_fixture(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Server]:
    yield from _server("notebook", tmp_path_factory.mktemp("notebook7"))


@pytest.fixture(params=["lab", "notebook7"], name="frontend")
def frontend_fixture(request: pytest.FixtureRequest) -> Server:
    """JupyterLab or Notebook 7 (the ``notebook`` package)."""
    server: Server = request.getfixturevalue("jupyterlab" if request.param == "lab" else "notebook7")
    return server


@pytest.fixture(scope="module", name="chromium")
def chromium_fixture() -> Iterator[Any]:
    """One headless chromium for the module; each test opens its own context (cookies, storage, clipboard)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        sync_api.expect.set_options(timeout=60_000)  # a loaded CI machine is slow; nothing here is timed
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def kernels_shut_down(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, the kernels it started are shut down: the next test meets an idle server."""
    yield
    for name in ("jupyterlab", "notebook7"):
        if name in request.fixturenames:
            server: Server = request.getfixturevalue(name)
            params = {"token": server.token}
            for kernel in httpx.get(f"{server.base}/api/kernels", params=params, timeout=10).json():
                httpx.delete(f"{server.base}/api/kernels/{kernel['id']}", params=params, timeout=30)


def _server(app: str, tmp_path: Path) -> Iterator[Server]:
    root, letta_home = tmp_path / "root", tmp_path / "letta_home"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "02_chat_widget.ipynb", root)
    kernels = tmp_path / "jupyter" / "kernels" / "python3"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path / "jupyter"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "IPYTHONDIR": str(tmp_path / "ipython"),
           "LETTA_NB_HOME": str(letta_home)}
    # No "get notified about Jupyter news?" toast over the screenshots.
    notification = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = free_port(), secrets.token_hex(16)
    log = open(ARTIFACTS / f"{app}.log", "w")  # noqa: SIM115 - closed in the finally below, after the server
    # Notebook 7 is JupyterLab's components in another shell: the same window.jupyterapp, commands and themes
    options = (["--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"] if app == "jupyterlab" else
               ["--JupyterNotebookApp.expose_app_in_browser=True"])
    proc = subprocess.Popen(
        [sys.executable, "-m", app, "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", "--ServerApp.allow_root=True", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", *options],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/api/status", params={"token": token}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{app} did not start; see {ARTIFACTS / f'{app}.log'}")
            time.sleep(0.2)
        yield Server(base, token, "lab/tree" if app == "jupyterlab" else "notebooks", root, letta_home)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextlib.contextmanager
def page_in(chromium: Any, failure: str, width: int = 1400, **options: Any) -> Iterator[Any]:
    """A page in a context of its own; on failure, a screenshot of it in ARTIFACTS/``failure``."""
    context = chromium.new_context(viewport={"width": width, "height": 1000}, **options)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / failure), full_page=True)
        raise
    finally:
        context.close()


def open_and_run(page: Any, url: str) -> None:
    """Open the notebook's page, wait for its kernel to be idle, and run every cell."""
    page.goto(url)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def code_notebook(*sources: str) -> dict[str, Any]:
    """An .ipynb (as JSON-ready dict) of code cells with these sources, for JupyterLab to open."""
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "outputs": [], "execution_count": None,
                   "source": source} for i, source in enumerate(sources)],
    }
