import json

import pytest

from chat.upstream.sse import SSEDecoder

STREAM = (
    'data: {"choices":[{"delta":{"content":"Hé"}}]}\n\n'
    ": keep-alive comment\n\n"
    'data: {"choices":[{"delta":{"content":" llo €"}}]}\r\n\r\n'
    "event: message\ndata: line one\ndata: line two\n\n"
    "data: [DONE]\n\n"
).encode()

EXPECTED = [
    '{"choices":[{"delta":{"content":"Hé"}}]}',
    '{"choices":[{"delta":{"content":" llo €"}}]}',
    "line one\nline two",
    "[DONE]",
]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 13, len(STREAM)])
def test_events_come_out_whole_whatever_the_read_boundaries(size):
    decoder = SSEDecoder()
    events = []
    for i in range(0, len(STREAM), size):
        events.extend(decoder.feed(STREAM[i : i + size]))
    events.extend(decoder.flush())
    assert events == EXPECTED
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == " llo €"


def test_one_read_with_many_events_returns_them_all_at_once():
    decoder = SSEDecoder()
    assert len(decoder.feed(STREAM)) == 4


def test_a_last_event_without_its_blank_line_is_not_lost():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.flush() == ["[DONE]"]
