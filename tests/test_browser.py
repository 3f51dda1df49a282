"""02_chat_widget.ipynb in a real JupyterLab, driven by a real browser (Debian's chromium via Playwright).

JupyterLab listens on 127.0.0.1 at a free port with a throwaway token; its kernel is this interpreter
and its store a temporary LETTA_NB_HOME. The test runs every cell, chats through the widget (a streamed
reply with a tool-call step), presses Stop during a slow reply, checks the partial answer stayed on
screen and in the store, and leaves screenshots in artifacts/browser/. Playwright never downloads a
browser: it drives /usr/bin/chromium (``.ci/run`` installs it). Without chromium the test skips.
"""

from __future__ import annotations

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
from pathlib import Path

import httpx
import pytest

import letta_nb

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("LETTA_NB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts" / "browser"
FULL_REPLY = ("Hello! I'm letta_nb's offline model: deterministic and needing no API key. Tell me facts (\"my name "
              "is ...\", \"remember that ...\") and I'll store them; ask me questions and I'll look them up in my "
              "memory.")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"no chromium at {CHROMIUM}: apt-get install chromium (.ci/run does), "
                              "or set LETTA_NB_CHROMIUM"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path: Path, letta_home: Path) -> Iterator[tuple[str, str, subprocess.Popen]]:
    root = tmp_path / "root"
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
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # screenshots of this run only
    ARTIFACTS.mkdir(parents=True)
    log = open(ARTIFACTS / "jupyterlab.log", "w")  # noqa: SIM115 - closed in the finally below, after the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", "--ServerApp.allow_root=True", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
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
                raise AssertionError(f"JupyterLab did not start; see {ARTIFACTS / 'jupyterlab.log'}")
            time.sleep(0.2)
        yield base, token, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_chat_widget_in_jupyterlab(jupyterlab: tuple[str, str, subprocess.Popen], letta_home: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    base, token, _ = jupyterlab
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            sync_api.expect.set_options(timeout=60_000)  # a loaded CI machine is slow; nothing here is timed
            _run(page, sync_api.expect, f"{base}/lab/tree/02_chat_widget.ipynb?token={token}")
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    # The Stop kept the partial answer in recall memory, not only on screen.
    with letta_nb.connect(letta_home / "letta_nb.db") as client:
        last = client.agents.messages.list("slowpoke")[-1]
        assert last.message_type == "assistant_message" and last.status == "cancelled"
        assert FULL_REPLY.startswith(last.text) and 0 < len(last.text) < len(FULL_REPLY)


def _run(page, expect, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    chats = page.locator(".letta-chat")
    expect(chats).to_have_count(2)
    # Every cell ran: the last one shows the titles of the scripted widget's steps.
    expect(page.locator(".jp-OutputArea-output").filter(has_text="⚙ core_memory_append · success")).to_have_count(1)

    # A streamed reply with a tool-call step, in the first widget.
    chat = chats.nth(0)
    chat.locator(".letta-input textarea").fill("Remember that the MemGPT paper pages memory like an OS.")
    chat.locator("button.letta-send").click()
    expect(chat.locator("button.letta-stop")).to_be_enabled()  # a turn is running; the input is locked
    expect(chat.locator(".letta-input textarea")).to_be_disabled()
    expect(chat.locator(".letta-msg-assistant").last).to_contain_text("saved \"the MemGPT paper pages memory")
    step = chat.locator(".letta-step").last
    expect(step).to_contain_text("⚙ archival_memory_insert · success")
    step.get_by_text("archival_memory_insert").first.click()  # expand: arguments and result
    expect(step).to_contain_text("arguments")
    expect(chat.locator(".letta-input textarea")).to_be_enabled()
    chat.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "01_reply_and_tool_step.png"), full_page=True)

    # Stop during a slow reply: the words so far stay.
    slow = chats.nth(1)
    slow.scroll_into_view_if_needed()
    slow.locator(".letta-input textarea").fill("Hi!")
    slow.locator("button.letta-send").click()
    bubble = slow.locator(".letta-msg-assistant").last
    expect(bubble).to_contain_text("Hello! I'm")  # the first tokens arrived; the rest are still coming
    page.screenshot(path=str(ARTIFACTS / "02_streaming.png"), full_page=True)
    slow.locator("button.letta-stop").click()
    expect(slow.locator(".letta-status")).to_contain_text("stopped")
    expect(bubble).to_contain_text("stopped - partial answer kept")
    shown = bubble.inner_text()
    assert "look them up in my memory" not in shown  # stopped well before the end (the whole reply takes ~15 s)
    expect(slow.locator(".letta-input textarea")).to_be_enabled()
    page.screenshot(path=str(ARTIFACTS / "03_stopped.png"), full_page=True)


PLAIN_NOTEBOOK = {
    "nbformat": 4, "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "outputs": [], "execution_count": None,
               "source": source} for i, source in enumerate([
        "import letta_nb\n%load_ext letta_nb",
        # the reported repro: no send_message, so the model answers in plain content; it also thinks aloud
        "client = letta_nb.notebook.current_session().client\n"
        "client.agents.create('plain', model='offline?tps=4&reasoning=field', include_base_tools=False)\n"
        "letta_nb.ChatWidget('plain')",
    ])],
}


def test_plain_content_reply_streams_live_and_reasoning_is_collapsed(
        jupyterlab: tuple[str, str, subprocess.Popen], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    base, token, _ = jupyterlab
    (tmp_path / "root" / "plain_reply.ipynb").write_text(json.dumps(PLAIN_NOTEBOOK))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            sync_api.expect.set_options(timeout=60_000)
            _plain(page, sync_api.expect, f"{base}/lab/tree/plain_reply.ipynb?token={token}")
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "failure_plain.png"), full_page=True)
            raise
        finally:
            browser.close()


def _plain(page, expect, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                           " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    chat = page.locator(".letta-chat")
    expect(chat).to_have_count(1)
    chat.locator(".letta-input textarea").fill("Hi!")
    chat.locator("button.letta-send").click()
    bubble = chat.locator(".letta-msg-assistant").last
    # While the turn runs, the bubble already holds the first words of the reply (not reasoning).
    expect(bubble).to_contain_text("Hello! I'm")
    streaming = bubble.inner_text()
    expect(chat.locator("button.letta-stop")).to_be_enabled()  # still running: this is the live text
    assert "look them up in my memory" not in streaming and "introducing myself" not in streaming
    reasoning = chat.locator(".letta-reasoning")
    expect(reasoning).to_have_count(1)
    expect(reasoning).to_contain_text("💭 reasoning")
    expect(chat.locator(".letta-reasoning-body")).to_be_hidden()  # collapsed until opened
    page.screenshot(path=str(ARTIFACTS / "04_plain_reply_streaming.png"), full_page=True)
    expect(chat.locator(".letta-input textarea")).to_be_enabled()  # the turn ended
    expect(bubble).to_have_text(FULL_REPLY)
    expect(chat.locator(".letta-reasoning-body")).to_be_hidden()
    reasoning.get_by_text("💭 reasoning").click()  # open it: the reasoning is there
    expect(chat.locator(".letta-reasoning-body")).to_be_visible()
    expect(chat.locator(".letta-reasoning-body")).to_contain_text("First message of the conversation")
    page.screenshot(path=str(ARTIFACTS / "05_reasoning_opened.png"), full_page=True)
