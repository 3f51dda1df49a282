"""SendMessageParser: the reply's words come out of streamed send_message JSON, whatever the chunking."""

from __future__ import annotations

import json

import pytest

from letta_nb.runtime.events import SendMessageParser

MESSAGES = ['plain', 'quotes "inside" and \\ backslash', "new\nline\ttab", "unicode é ü 😀 中文", ""]


@pytest.mark.parametrize("message", MESSAGES)
@pytest.mark.parametrize("ascii_only", [True, False])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 24, 1000])
def test_any_chunking_yields_exactly_the_message(message, ascii_only, chunk):
    args = json.dumps({"message": message, "request_heartbeat": False}, ensure_ascii=ascii_only)
    parser = SendMessageParser()
    out = "".join(parser.feed(args[i : i + chunk]) for i in range(0, len(args), chunk))
    assert out == message


def test_other_shapes_yield_nothing():
    parser = SendMessageParser()
    assert parser.feed('{"content": "x", "message": 5}') == ""
