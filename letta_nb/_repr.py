"""HTML and Markdown renderings of the API's data objects, for Jupyter's rich display.

The schemas' ``_repr_html_`` / ``_repr_markdown_`` methods call these. Plain strings only: no IPython
import (the runtime layers must work in a bare script), and every user- or model-supplied string is
escaped, so a message containing ``<script>`` shows as text. Long values are shortened for display only.
"""

from __future__ import annotations

import html
import re
from typing import Any

__all__ = [
    "agent_html",
    "agent_md",
    "block_html",
    "block_md",
    "esc",
    "md_text",
    "message_html",
    "message_md",
    "passage_html",
    "passage_md",
    "passages_html",
    "response_html",
    "response_md",
    "short",
    "WRAP",
]

_ROLE_COLOR = {"user_message": "#1f6feb", "assistant_message": "#2da44e", "tool_call_message": "#8250df",
               "tool_return_message": "#6e7781", "system_message": "#bf8700"}
_BOX = "font-family:var(--jp-ui-font-family,sans-serif);border:1px solid #d0d7de;border-radius:6px;padding:6px 10px;"


# For <pre> of model or user text: wrap at spaces, break inside a word only when it is longer than the line
# (JupyterLab styles output <pre> with "word-break: break-all", which cut "matters" into "m|atters").
WRAP = "white-space:pre-wrap;word-break:normal;overflow-wrap:anywhere"


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def short(text: str, n: int = 400) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


# A fenced code block (``` or ~~~, closed by the same fence or the end) or an inline code span (a run of
# backticks closed by a run of the same length): CommonMark shows both verbatim, entities included.
_MD_CODE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^ {0,3}\1[ \t]*$|\Z)|(?<!`)(`+)(?!`).+?(?<!`)\2(?!`)",
                      re.M | re.S)


def md_text(text: str) -> str:
    """Text safe inside Markdown, shown as written: ``<`` and ``&`` escaped outside code (Markdown renderers
    pass raw HTML through), code spans and fenced blocks left alone (there an entity would show as itself,
    and a tag is text anyway)."""
    text, out, pos = str(text), [], 0
    for m in _MD_CODE.finditer(text):
        out += [_md_escape(text[pos:m.start()]), m.group(0)]
        pos = m.end()
    out.append(_md_escape(text[pos:]))
    return "".join(out)


def _md_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")


def block_html(b: Any) -> str:
    ro = " · read-only" if b.read_only else ""
    return (f'<div style="{_BOX}margin:2px 0"><b>{esc(b.label)}</b> '
            f'<span style="color:#6e7781">{b.chars}/{b.limit} chars{ro}</span>'
            f'<pre style="{WRAP};margin:4px 0 0 0">'
            f'{esc(short(b.value, 2000)) or "<i>(empty)</i>"}</pre></div>')


def block_md(b: Any) -> str:
    value = md_text(short(b.value, 2000)).replace("\n", "  \n") or "*(empty)*"
    return f"**{md_text(b.label)}** ({b.chars}/{b.limit} chars)  \n{value}"


def agent_html(a: Any) -> str:
    blocks = "".join(block_html(b) for b in a.blocks)
    tools = ", ".join(esc(t) for t in a.tools)
    return (f'<div style="{_BOX}"><b>Agent {esc(a.name)}</b> <code>{esc(a.id)}</code><br>'
            f'model <code>{esc(a.model)}</code> · embedding <code>{esc(a.embedding)}</code> · '
            f'{a.last_seq} messages · max_steps {a.max_steps}<br>'
            f'<span style="color:#6e7781">tools: {tools}</span>{blocks}</div>')


def agent_md(a: Any) -> str:
    blocks = "\n\n".join(block_md(b) for b in a.blocks)
    return (f"**Agent {md_text(a.name)}** `{a.id}` · model `{a.model}` · embedding `{a.embedding}` · "
            f"{a.last_seq} messages\n\n{blocks}")


def message_html(m: Any) -> str:
    kind = m.message_type
    color = _ROLE_COLOR.get(kind, "#6e7781")
    status = f" · {esc(m.status)}" if m.status else ""
    return (f'<div style="{_BOX}border-left:4px solid {color};margin:2px 0">'
            f'<span style="color:{color};font-size:85%">{esc(kind)} #{m.seq}{status}</span>'
            f'<div style="{WRAP}">{esc(short(m.text, 4000))}</div></div>')


def message_md(m: Any) -> str:
    return f"*{m.message_type}* #{m.seq}: {md_text(short(m.text, 4000))}"


def passage_html(p: Any) -> str:
    score = f"score {p.score:.3f} · " if p.score is not None else ""
    tags = f" · tags {esc(', '.join(p.tags))}" if p.tags else ""
    return (f'<div style="{_BOX}margin:2px 0"><span style="color:#6e7781;font-size:85%">{score}'
            f'<code>{esc(p.id)}</code>{tags}</span>'
            f'<div style="{WRAP}">{esc(short(p.text, 2000))}</div></div>')


def passage_md(p: Any) -> str:
    score = f"({p.score:.3f}) " if p.score is not None else ""
    return f"- {score}{md_text(short(p.text, 2000))}"


def passages_html(passages: list[Any]) -> str:
    return "".join(passage_html(p) for p in passages) or "<i>no passages</i>"


def response_html(r: Any) -> str:
    t = r.timings
    msgs = "".join(message_html(m) for m in r.messages)
    return (f'<div><div style="color:#6e7781;font-size:85%">{len(r.steps)} step(s) · stop {esc(r.stop_reason)} · '
            f'{r.usage.total_tokens} tokens · {t["total_ms"]:.1f} ms '
            f'(llm {t["llm_ms"]:.1f}, tools {t["tools_ms"]:.1f}, db {t["db_ms"]:.1f})</div>{msgs}</div>')


def response_md(r: Any) -> str:
    return md_text(r.text) or f"*(no reply; stop reason {r.stop_reason})*"
