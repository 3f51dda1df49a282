"""02_chat_widget.ipynb in a real JupyterLab, driven by a real browser (Debian's chromium via Playwright).

The servers, the browser and the page helpers are in tests/browser_server.py: one JupyterLab, one Notebook 7 and
one chromium for the module; each test opens its own notebook in a browser context of its own. The first test
runs every cell, chats through the widget (a streamed reply with a tool-call step), presses Stop during a slow
reply, checks the partial answer stayed on screen and in the store, and leaves screenshots in artifacts/browser/.
The chat UI in a 900 px window and the approvals run in JupyterLab and in Notebook 7 (the ``frontend``
fixture), and leave light and dark screenshots of the chat in build/screenshots/. Playwright never downloads a
browser: it drives /usr/bin/chromium (``.ci/run`` installs it). Without chromium the test skips.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from browser_server import (  # noqa: F401  (the *_fixture and kernels_shut_down: this module's fixtures)
    ARTIFACTS,
    CHROMIUM,
    ROOT,
    Server,
    artifacts_fixture,
    chromium_fixture,
    code_notebook,
    frontend_fixture,
    jupyterlab_fixture,
    kernels_shut_down,
    notebook7_fixture,
    open_and_run,
    page_in,
)

import letta_nb

FULL_REPLY = ("Hello! I'm letta_nb's offline model: deterministic and needing no API key. Tell me facts (\"my name "
              "is ...\", \"remember that ...\") and I'll store them; ask me questions and I'll look them up in my "
              "memory.")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"no chromium at {CHROMIUM}: apt-get install chromium (.ci/run does), "
                              "or set LETTA_NB_CHROMIUM"),
]


def test_chat_widget_in_jupyterlab(jupyterlab: Server, chromium: Any) -> None:
    from playwright.sync_api import expect

    with page_in(chromium, "failure.png") as page:
        _run(page, expect, jupyterlab.url("02_chat_widget.ipynb"))
    # The Stop kept the partial answer in recall memory, not only on screen.
    with letta_nb.connect(jupyterlab.home / "letta_nb.db") as client:
        last = client.agents.messages.list("slowpoke")[-1]
        assert last.message_type == "assistant_message" and last.status == "cancelled"
        assert FULL_REPLY.startswith(last.text) and 0 < len(last.text) < len(FULL_REPLY)


def _run(page, expect, url: str) -> None:
    open_and_run(page, url)
    chats = page.locator(".letta-chat")
    expect(chats).to_have_count(2)
    # Every cell ran: the last one shows the titles of the scripted widget's steps.
    expect(page.locator(".jp-OutputArea-output").filter(has_text="⚙ core_memory_append · success")).to_have_count(1)
    # The edit from Python (a cell before the last) followed the earlier message, which stays in recall memory.
    expect(page.locator(".jp-OutputArea-output").filter(
        has_text="['My name is Ada.', 'My name is Ada Lovelace.']")).to_have_count(1)
    # The scripted widget's turn (a later cell) edited ada's memory: the first chat's panel followed it.
    expect(chats.nth(0).locator(".letta-memory")).to_contain_text("Name: Ada")

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


PLAIN_NOTEBOOK = code_notebook(
    "import letta_nb\n%load_ext letta_nb",
    # the reported repro: no send_message, so the model answers in plain content; it also thinks aloud
    "client = letta_nb.notebook.current_session().client\n"
    "client.agents.create('plain', model='offline?tps=10&reasoning=field', include_base_tools=False)\n"
    "letta_nb.ChatWidget('plain')",
)


def test_plain_content_reply_streams_live_and_reasoning_is_collapsed(jupyterlab: Server, chromium: Any) -> None:
    from playwright.sync_api import expect

    (jupyterlab.root / "plain_reply.ipynb").write_text(json.dumps(PLAIN_NOTEBOOK))
    with page_in(chromium, "failure_plain.png") as page:
        _plain(page, expect, jupyterlab.url("plain_reply.ipynb"))


def _plain(page, expect, url: str) -> None:
    open_and_run(page, url)
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
    expect(bubble.locator(".letta-md")).to_have_text(FULL_REPLY)  # the words (the role mark and footer apart)
    expect(chat.locator(".letta-reasoning-body")).to_be_hidden()
    reasoning.get_by_text("💭 reasoning").click()  # open it: the reasoning is there
    expect(chat.locator(".letta-reasoning-body")).to_be_visible()
    expect(chat.locator(".letta-reasoning-body")).to_contain_text("First message of the conversation")
    page.screenshot(path=str(ARTIFACTS / "05_reasoning_opened.png"), full_page=True)


# ---- issue 15: the chat UI a new user meets in the first minute, in a 900 px window ------------------------

SCREENSHOTS = ROOT / "build" / "screenshots"  # git-ignored: light and dark, for people to look at
PERSONA = ("A concise research assistant who explains why each detail matters, cites its sources carefully and "
           "keeps notes about experiments, hypotheses, measurements and conclusions.")
UI_NOTEBOOK = code_notebook(
    "import letta_nb\n%load_ext letta_nb",
    # latency before the first token, so the typing indicator has a moment of its own
    "client = letta_nb.notebook.current_session().client\n"
    "client.agents.create('ui', model='offline?latency_ms=300&tps=200',\n"
    f"                     memory_blocks=[{{'label': 'persona', 'value': {PERSONA!r}}},\n"
    "                                    {'label': 'human', 'value': ''}])\n"
    "letta_nb.ChatWidget('ui')",
)

# Records, in the page, each change of (indicator shown?, last assistant bubble has words?), in order.
RECORD_THINKING = """(root) => {
  window.__letta = [];
  const state = () => {
    const t = root.querySelector('.letta-thinking');
    const on = !!t && !t.hidden && t.getClientRects().length > 0;
    const bubbles = root.querySelectorAll('.letta-msg-assistant');
    const md = bubbles.length ? bubbles[bubbles.length - 1].querySelector('.letta-md') : null;
    const last = md ? md.innerText.trim() : '';
    return (on ? 'thinking' : 'idle') + '|' + (last && last !== '…' ? 'words' : 'none');
  };
  window.__letta.push(state());
  new MutationObserver(() => {
    const s = state();
    if (window.__letta[window.__letta.length - 1] !== s) window.__letta.push(s);
  }).observe(root, {subtree: true, childList: true, attributes: true, characterData: true});
}"""
AT_BOTTOM = "(log) => log.scrollHeight - log.scrollTop - log.clientHeight <= 24"
NEWEST_IN_VIEW = """(log) => {
  const bubbles = log.querySelectorAll('.letta-msg');
  const last = bubbles[bubbles.length - 1].getBoundingClientRect(), box = log.getBoundingClientRect();
  return last.bottom <= box.bottom + 1 && last.bottom > box.top;
}"""
# Words (2+ letters) of the visible text under `el` whose glyphs sit on more than one line: broken mid-word.
BROKEN_WORDS = """(el) => {
  const broken = [];
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const m of node.data.matchAll(/[A-Za-z]{2,}/g)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
      if (tops.size > 1) broken.push(m[0]);
    }
  }
  return broken;
}"""


def test_chat_ui_in_a_900px_window(frontend: Server, chromium: Any) -> None:
    from playwright.sync_api import expect

    (frontend.root / "chat_ui.ipynb").write_text(json.dumps(UI_NOTEBOOK))
    app = "lab" if frontend.pages.startswith("lab") else "notebook7"
    # the clipboard, for the copy button (127.0.0.1 is a secure context: navigator.clipboard exists)
    clipboard = ["clipboard-read", "clipboard-write"]
    with page_in(chromium, f"failure_ui_{app}.png", width=900, permissions=clipboard) as page:
        open_and_run(page, frontend.url("chat_ui.ipynb"))
        _chat_ui(page, expect, app)


def _chat_ui(page, expect, app: str) -> None:
    chat = page.locator(".letta-chat")
    expect(chat).to_have_count(1)
    expect(chat.locator(".letta-frontend")).to_have_count(1)
    log, box = chat.locator(".letta-log"), chat.locator(".letta-input textarea")
    chat.element_handle().evaluate(RECORD_THINKING)

    # Shift+Enter adds a line, Enter sends: one message holding both lines. The text carries code with < > &
    # and HTML that would run if it were let through.
    box.click()
    page.keyboard.type("Remember that `a < b && c > d` matters.")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("<img src=x onerror=\"window.__pwned=1\"> <script>window.__pwned=2</script>")
    expect(box).to_have_value("Remember that `a < b && c > d` matters.\n<img src=x onerror=\"window.__pwned=1\"> "
                              "<script>window.__pwned=2</script>")
    page.keyboard.press("Enter")
    expect(box).to_have_value("")
    expect(chat.locator(".letta-msg-assistant")).to_have_count(1)
    expect(box).to_be_enabled()  # the turn ended
    users = chat.locator(".letta-msg-user")
    expect(users).to_have_count(1)
    shown = users.first.inner_text()
    assert "a < b && c > d" in shown and "<img src=x onerror=" in shown and "<script>" in shown  # verbatim
    assert shown.index("matters.") < shown.index("<img")  # one message, two lines
    reply = chat.locator(".letta-msg-assistant").last
    expect(reply).to_contain_text("a < b && c > d")  # the model quoting the code back: verbatim too
    assert chat.locator(".letta-msg img, .letta-msg script").count() == 0
    assert page.evaluate("() => window.__pwned") is None

    # The indicator showed before the first token and was gone once words came.
    states = page.evaluate("() => window.__letta")
    first_words = next(i for i, s in enumerate(states) if s.endswith("|words"))
    assert "thinking|none" in states[:first_words], states
    assert states[first_words] == "idle|words" and states[-1] == "idle|words", states
    expect(chat.locator(".letta-thinking")).to_be_hidden()

    # The newest message is in view after each reply, from the fourth exchange on too.
    for text in ("What is my name?", "My name is Ada.", "Remember that the MemGPT paper pages memory.",
                 "Is this right?\n```python\nif a < b && c > d:\n    pass\n```", "What is my name?"):
        replies = chat.locator(".letta-msg-assistant").count()
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")
        expect(chat.locator(".letta-msg-assistant")).to_have_count(replies + 1)  # the turn began ...
        expect(box).to_be_enabled()  # ... and ended
        page.wait_for_function(f"() => ({AT_BOTTOM})(document.querySelector('.letta-chat .letta-log'))")
        assert log.evaluate(NEWEST_IN_VIEW)
    assert log.evaluate("(log) => log.scrollHeight > 2 * log.clientHeight")  # it did overflow
    # A fenced block: highlighted, verbatim, with a copy button.
    code = chat.locator(".letta-msg-user pre.highlight")
    expect(code).to_have_count(1)
    expect(code.locator("code")).to_have_text("if a < b && c > d:\n    pass\n")
    expect(code.locator("code .k").first).to_have_text("if")  # a keyword, coloured by the theme's Pygments CSS
    keyword = code.locator("code .k").first
    assert keyword.evaluate("(k) => getComputedStyle(k).color !== getComputedStyle(k.closest('code')).color")
    copy = code.locator("button.letta-copy")
    expect(copy).to_have_count(1)
    copy.click()  # copies the code as written: < > & verbatim, not the button's own label
    expect(copy).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == "if a < b && c > d:\n    pass\n"
    page.screenshot(path=str(ARTIFACTS / f"06_autoscroll_{app}.png"))

    # A role mark (initial, name) and the time above each bubble's words; a footer under each reply with its
    # turn's tokens, latency and steps; the header's agent picker and context gauge.
    reply = chat.locator(".letta-msg-assistant").last
    expect(reply.locator(".letta-avatar")).to_have_text("U")
    expect(reply.locator(".letta-who")).to_have_text("ui")
    expect(chat.locator(".letta-msg-user").last.locator(".letta-avatar")).to_have_text("Y")
    assert re.fullmatch(r"\d\d:\d\d( [AP]M)?", reply.locator("time").inner_text())
    assert reply.evaluate("(b) => b.querySelector('.letta-meta').getBoundingClientRect().bottom"
                          " <= b.querySelector('.letta-md').getBoundingClientRect().top + 1")  # above the words
    expect(reply.locator(".letta-footer")).to_have_text(re.compile(r"[\d,]+ tokens \([\d,]+ in, [\d,]+ out\) · "
                                                                   r"[\d.]+ m?s · \d+ steps?"))
    expect(chat.locator(".letta-agent-picker select")).to_have_value("ui")
    expect(chat.locator(".letta-gauge-text")).to_have_text(re.compile(r"[\d.]+k? / [\d.]+k tokens"))

    # Scrolled up to read: a new reply does not pull the view down; back at the bottom, it follows again.
    box.fill("Hi!")
    chat.locator("button.letta-send").click()
    log.hover()
    page.mouse.wheel(0, -5000)  # the user scrolls up while the reply streams
    page.wait_for_function("() => document.querySelector('.letta-chat .letta-log').scrollTop < 5")
    expect(chat.locator(".letta-msg-assistant").last).to_contain_text("Noted: \"Hi!\"")
    expect(chat.locator(".letta-msg-assistant").last).to_contain_text("when you ask.")
    expect(box).to_be_enabled()
    assert log.evaluate("(log) => log.scrollTop") < 5  # still where the user put it
    page.mouse.wheel(0, 50_000)  # back to the bottom: it follows again
    page.wait_for_function(f"() => ({AT_BOTTOM})(document.querySelector('.letta-chat .letta-log'))")
    replies = chat.locator(".letta-msg-assistant").count()
    box.fill("What is my name?")
    box.press("Enter")
    expect(chat.locator(".letta-msg-assistant")).to_have_count(replies + 1)
    expect(box).to_be_enabled()
    page.wait_for_function(f"() => ({AT_BOTTOM})(document.querySelector('.letta-chat .letta-log'))")
    assert log.evaluate(NEWEST_IN_VIEW)

    # Retry: the last message again, the earlier exchange kept and dimmed. Edit: the box takes the last message
    # and Enter sends the edited text after it.
    users = chat.locator(".letta-msg-user")
    said = users.count()
    chat.locator("button.letta-retry").click()
    expect(users).to_have_count(said + 1)
    expect(box).to_be_enabled()
    expect(chat.locator(".letta-msg.letta-superseded").first).to_contain_text("stays in recall memory")
    chat.locator("button.letta-edit").click()
    expect(box).to_have_value("What is my name?")
    expect(chat.locator(".letta-status")).to_contain_text("earlier exchange stays in recall memory")
    box.fill("My name is Grace.")
    box.press("Enter")
    expect(users).to_have_count(said + 2)
    expect(users.last).to_contain_text("My name is Grace.")
    expect(users.last.locator(".letta-note")).to_have_text("edited")
    expect(box).to_be_enabled()
    expect(chat.locator(".letta-memory")).to_contain_text("Name: Grace")
    page.wait_for_function(f"() => ({AT_BOTTOM})(document.querySelector('.letta-chat .letta-log'))")
    assert log.evaluate(NEWEST_IN_VIEW)

    # No word broken mid-word: memory panel, a tool step's arguments and result, the bubbles.
    step = chat.locator(".letta-step").last
    step.get_by_text("⚙ ").first.click()  # open it: arguments and result
    expect(step).to_contain_text("arguments")
    memory = chat.locator(".letta-memory")
    tallest = "(el) => Math.max(...[...el.querySelectorAll('pre')].map(p => p.clientHeight))"
    assert memory.evaluate(tallest) > 40  # the persona wraps over several lines
    for part in (memory, step, log):
        assert part.evaluate(BROKEN_WORDS) == [], part

    # Screenshots of both themes, for people to look at.
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    chat.screenshot(path=str(SCREENSHOTS / f"chat_light_{app}.png"))
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'"
                           " && !document.querySelector('#jupyterlab-splash')")
    chat.locator(".letta-log").evaluate("(log) => { log.scrollTop = log.scrollHeight; }")
    page.wait_for_function("() => getComputedStyle(document.querySelector('.letta-chat .letta-msg'))"
                           ".backgroundColor !== 'rgb(255, 255, 255)'")
    chat.screenshot(path=str(SCREENSHOTS / f"chat_dark_{app}.png"))


# ---- issue 14: Approve / Deny of a tool call that waits for a person -----------------------------------------

APPROVAL_NOTEBOOK = code_notebook(
    "import letta_nb\n%load_ext letta_nb",
    "def touch(path: str) -> str:\n"
    "    \"\"\"Append a line to a file.\"\"\"\n"
    "    with open(path, 'a') as f:\n"
    "        f.write('ran\\n')\n"
    "    return 'wrote it'\n",
    "%letta create gate\n%letta tool add touch --approve --agent gate",
    "letta_nb.ChatWidget('gate')",
)


def test_approve_and_deny_in_the_chat_widget(frontend: Server, chromium: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    (frontend.root / "approval.ipynb").write_text(json.dumps(APPROVAL_NOTEBOOK))
    side = tmp_path / "side.txt"
    with page_in(chromium, "failure_approval.png") as page:
        open_and_run(page, frontend.url("approval.ipynb"))
        _approvals(page, expect, side)
    assert side.read_text() == "ran\n"  # denied: never ran; approved: ran once
    with letta_nb.connect(frontend.home / "letta_nb.db") as client:
        answers = [m for m in client.agents.messages.list("gate") if m.role == "tool" and m.name == "touch"]
    assert [(m.status, m.content) for m in answers] == [
        ("error", "Error: request to call tool denied. User reason: not this file"), ("success", "wrote it")]


def _approvals(page, expect, side: Path) -> None:
    chat = page.locator(".letta-chat")
    expect(chat).to_have_count(1)
    box = chat.locator(".letta-input textarea")
    ask = f'/call touch {{"path": "{side}"}}'

    # Deny: the call never runs and the model reads the reason.
    box.fill(ask)
    chat.locator("button.letta-send").click()
    approval = chat.locator(".letta-approval").last
    expect(approval).to_contain_text("touch")
    expect(approval.locator(".letta-approval-args")).to_contain_text(str(side))  # its arguments, shown
    expect(chat.locator(".letta-status")).to_contain_text("waiting for your approval")
    page.screenshot(path=str(ARTIFACTS / "07_approval_asked.png"), full_page=True)
    approval.locator(".letta-approval-reason input").fill("not this file")
    approval.locator("button.letta-deny").click()
    expect(approval.locator(".letta-approval-outcome")).to_contain_text("denied → error")
    expect(chat.locator(".letta-msg-assistant").last).to_contain_text("User reason: not this file")
    expect(box).to_be_enabled()
    assert not side.exists()
    page.screenshot(path=str(ARTIFACTS / "08_approval_denied.png"), full_page=True)

    # Approve: it runs once.
    box.fill(ask)
    chat.locator("button.letta-send").click()
    approval = chat.locator(".letta-approval").last
    expect(chat.locator(".letta-approval")).to_have_count(2)
    expect(approval.locator("button.letta-approve")).to_be_enabled()
    approval.locator("button.letta-approve").click()
    expect(approval.locator(".letta-approval-outcome")).to_contain_text("approved → success")
    expect(chat.locator(".letta-msg-assistant").last).to_contain_text("wrote it")
    expect(approval.locator("button.letta-approve")).to_be_disabled()
    expect(box).to_be_enabled()
    page.screenshot(path=str(ARTIFACTS / "09_approval_approved.png"), full_page=True)
