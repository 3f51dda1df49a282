"""How the offline model writes a conversation summary, and answers from one.

The runtime asks a model to fold the messages leaving an agent's context window into the running summary
(runtime/compaction.py: a system prompt with a word budget, then one user message holding
``<previous_summary>`` and ``<evicted_messages>``). The offline model, and so the loopback server, must
answer such a request deterministically, as a real model would: this module reads the request, not the
runtime's code, so what the summary keeps is decided by what the runtime actually sent.

The summary is a compact list of the facts the user stated (questions and the assistant's words are
dropped): each statement becomes its content words as written, grouped under its first word (``Box: 17
umbrella;18 kettle``: no space after ``;``, which would be a token of its own before a number), oldest
first. Over the word budget the oldest facts go first. Pure and deterministic: the same request always
gives the same summary.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from letta_nb.llm._offline_reading import _STOPWORDS, _text, is_question, keywords

__all__ = ["HEADER", "answer_from_summary", "is_summary_request", "summarise"]

HEADER = "Facts the user stated (oldest first):"
_EVICTED = re.compile(r"<evicted_messages>\n?(.*?)\n?</evicted_messages>", re.S)
_PREVIOUS = re.compile(r"<previous_summary>\n?(.*?)\n?</previous_summary>", re.S)
_BUDGET = re.compile(r"under (\d+) words")
_WORDS = re.compile(r"[A-Za-z0-9]+")
_IN_PROMPT = re.compile(r"<conversation_summary>\n?(.*?)\n?</conversation_summary>", re.S)


def is_summary_request(messages: list[dict[str, Any]]) -> bool:
    """A request to summarise evicted messages: a system prompt with a word budget, then the messages."""
    if len(messages) != 2 or messages[0].get("role") != "system" or messages[1].get("role") != "user":
        return False
    return bool(_BUDGET.search(_text(messages[0].get("content")))) and \
        _EVICTED.search(_text(messages[1].get("content"))) is not None


def _facts(summary: str) -> list[tuple[str, str]]:
    """(subject, item) pairs of a summary this module wrote, oldest first; [] for any other text."""
    lines = [line.strip() for line in summary.strip().splitlines()]
    if HEADER not in lines:
        return []
    out: list[tuple[str, str]] = []
    for line in lines[lines.index(HEADER) + 1:]:
        subject, sep, items = line.partition(": ")
        if sep:
            out.extend((subject.strip(), item.strip()) for item in items.split(";") if item.strip())
    return out


def _statement(text: str) -> tuple[str, str] | None:
    """A user's statement as (subject, item): its content words in order, the first one the subject."""
    if is_question(text):
        return None
    # as written, stopwords dropped: keywords(w) of one ASCII word, without its regex pass per word
    words = [w for w in dict.fromkeys(_WORDS.findall(text)) if len(w) >= 2 and w.lower() not in _STOPWORDS]
    return (words[0], " ".join(words[1:])) if len(words) >= 2 else None


def summarise(messages: list[dict[str, Any]]) -> str:
    """The new summary for a summary request: the previous summary's facts, then the evicted user
    statements', the oldest dropped while over the word budget."""
    system, user = _text(messages[0].get("content")), _text(messages[1].get("content"))
    budget = int(m.group(1)) if (m := _BUDGET.search(system)) else 100
    previous = _PREVIOUS.search(user)
    facts = _facts(previous.group(1)) if previous else []
    evicted = _EVICTED.search(user)
    seen = set(facts)
    for line in (evicted.group(1) if evicted else "").splitlines():
        role, sep, said = line.partition(": ")
        if sep and role == "user" and (fact := _statement(said)) is not None and fact not in seen:
            facts.append(fact)
            seen.add(fact)
    # Linear in the facts (a summary holds hundreds): a subject's words count once while any of its items stay.
    subjects = Counter(s for s, _ in facts)
    words = len(HEADER.split()) + len(subjects) + sum(len(item.split()) for _, item in facts)
    first = 0
    while first < len(facts) and words > budget:
        subject, item = facts[first]
        first += 1
        subjects[subject] -= 1
        words -= len(item.split()) + (subjects[subject] == 0)
    groups: dict[str, list[str]] = {}
    for subject, item in facts[first:]:
        groups.setdefault(subject, []).append(item)
    return "\n".join([HEADER, *(f"{subject}: {';'.join(items)}" for subject, items in groups.items())])


def answer_from_summary(system_prompt: str, question: str) -> str | None:
    """The fact of the summary in the system prompt that answers ``question`` (it holds at least half of
    the question's words), or None."""
    found = _IN_PROMPT.search(system_prompt)
    wanted = keywords(question)
    if found is None or not wanted:
        return None
    best, best_score = None, 0
    for subject, item in _facts(found.group(1)):
        score = len(wanted & keywords(f"{subject} {item}"))
        if score > best_score:
            best, best_score = f"{subject} {item}", score
    return best if best is not None and 2 * best_score >= len(wanted) else None
