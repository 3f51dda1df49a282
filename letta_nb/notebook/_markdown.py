"""Model and user text as safe HTML: Markdown rendered in the kernel, raw HTML never let through.

Why here and not in the frontend: a ``text/markdown`` output would need the text HTML-escaped first (the
frontend's Markdown renderer passes raw HTML through, and a notebook's own outputs are trusted, so an
``<img onerror>`` from a model would run), and escaped text shows its entities inside code (``a &lt; b``).
So the chat bubbles and ``%%letta`` render with markdown-it-py (CommonMark, the parser Jupyter Book and
MyST use) with **HTML disabled**: raw tags become text, ``javascript:``/``data:`` links are refused by its
link validator, and text inside code is escaped exactly once. Code blocks with a language are highlighted
by Pygments into ``<pre class="highlight">`` with Pygments' short class names, which JupyterLab's
``jupyterlab_pygments`` theme colours from the editor's CSS variables (light and dark alike).
"""

from __future__ import annotations

import functools
import html
from typing import Any

from letta_nb.errors import OptionalDependencyError

__all__ = ["to_html"]


@functools.lru_cache(maxsize=1)
def _parser() -> Any:
    try:
        from markdown_it import MarkdownIt
    except ImportError as e:
        raise OptionalDependencyError(
            "Rendering chat Markdown needs markdown-it-py, which is not installed. Run: "
            "pip install 'letta-nb[notebook]' (or: pip install markdown-it-py), then restart the kernel.") from e
    # html=False is the safety: every raw tag in the text is shown as text. breaks=True: a model's single
    # newlines are line breaks, as in every chat UI.
    md = MarkdownIt("commonmark", {"html": False, "breaks": True, "linkify": False, "highlight": _highlight})
    md.enable(["table", "strikethrough"])
    return md


def _highlight(code: str, lang: str, attrs: str) -> str:
    """Pygments HTML for a fenced block with a known language; "" lets markdown-it escape it plainly."""
    if not lang:
        return ""
    try:
        from pygments import highlight  # type: ignore[import-untyped]
        from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]
        from pygments.lexers import get_lexer_by_name  # type: ignore[import-untyped]
        from pygments.util import ClassNotFound  # type: ignore[import-untyped]
    except ImportError:  # pygments comes with IPython; a bare runtime renders code unhighlighted
        return ""
    try:
        lexer = get_lexer_by_name(lang)
    except ClassNotFound:
        return ""
    lang_class = html.escape(lang, quote=True)
    body = highlight(code, lexer, HtmlFormatter(nowrap=True))  # escapes the code itself
    # markdown-it uses a result that starts with "<pre" as the whole block
    return f'<pre class="highlight letta-code"><code class="language-{lang_class}">{body}</code></pre>'


def to_html(text: str) -> str:
    """``text`` (Markdown from a user or a model) as HTML that is safe to insert in a trusted output."""
    return str(_parser().render(str(text)))
