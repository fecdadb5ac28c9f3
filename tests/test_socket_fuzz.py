"""Whatever a socket is sent, it answers with an error frame and carries on.

A property-based test (hypothesis): frames of every shape (random bytes, binary, random text, deep
nesting, huge, wrong types, NaN and infinities, numbers out of range, odd Unicode) each get exactly
one error frame; none reaches the upstream, stores a row or logs an error; and the same socket
answers a normal chat right after each. Frames too big or not UTF-8 are the server's to refuse
before the consumer sees them (tests/test_runportal.py).
"""

import json
import logging

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from chat.models import Message
from tests.helpers import nonce

pytestmark = pytest.mark.django_db(transaction=True)

FRAMES_PER_RUN = 200

MODELS = settings.PORTAL_MODELS
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
odd_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40) | st.sampled_from(
    ["\\u0000", "\\ud800", "\\udfff", "\\ud83d", "a\\u202eb", "\\ufeff", "\\uffff", "e\\u0301"]
).map(lambda escaped: json.loads(f'"{escaped}"'))
odd_numbers = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "-0", "1e-400", str(2**63), str(10**30), "0.5e1"])
ids = st.integers(min_value=10**12) | st.integers(max_value=0) | st.just(2**63) | st.just(10**40)
not_a_model = (odd_text | st.text(max_size=30)).filter(lambda name: name not in MODELS)


def as_text(frame) -> str:
    return json.dumps(frame, ensure_ascii=False, allow_nan=True)


# Every send frame carries a model that does not exist, so none of them is a valid request.
send_frames = st.fixed_dictionaries(
    {"type": st.just("send"), "model": not_a_model | json_values},
    optional={"conversation": json_values | ids, "content": odd_text | json_values, "temperature": json_values, "max_tokens": json_values},
).map(as_text)
steering_frames = st.fixed_dictionaries({"type": st.sampled_from(["stop", "resume"]), "message": ids | json_values}).map(as_text)
number_frames = st.builds(
    lambda field, number, model: '{"type": "send", "content": "hi", "model": %s, "%s": %s}' % (json.dumps(model), field, number),
    st.sampled_from(["temperature", "max_tokens", "conversation"]),
    odd_numbers,
    not_a_model,
)
deep_frames = st.integers(min_value=500, max_value=20_000).map(lambda depth: "[" * depth + "]" * depth) | st.integers(
    min_value=500, max_value=5_000
).map(lambda depth: '{"a":' * depth + "1" + "}" * depth)
huge_frames = st.integers(min_value=32_001, max_value=400_000).map(
    lambda size: as_text({"type": "send", "content": "x" * size, "model": MODELS[0]})
)
text_frames = st.text(max_size=200) | json_values.map(as_text) | send_frames | steering_frames | number_frames | deep_frames | huge_frames
frames = st.binary(max_size=200).map(lambda raw: ("bytes", raw)) | text_frames.map(lambda text: ("text", text))


def upstream_requests(emulator) -> int:
    return httpx.get(emulator.url + "/_emulator/stats").json()["completion_requests"]


@pytest.fixture
async def alices_socket(alice, open_socket):
    return await open_socket(alice)


@hypothesis_settings(
    max_examples=FRAMES_PER_RUN,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(frame=frames)
async def test_any_frame_gets_an_error_frame_and_nothing_else_happens(alices_socket, emulator, caplog, frame):
    socket = alices_socket
    caplog.set_level(logging.WARNING)
    caplog.clear()
    requests_before = upstream_requests(emulator)
    rows_before = await sync_to_async(Message.objects.count)()

    kind, payload = frame  # sent as Daphne hands frames over (empty ones included)
    await socket.communicator.send_input({"type": "websocket.receive", kind: payload})
    answer = await socket.receive()
    assert answer["type"] == "error" and answer["code"] in ("bad_frame", "invalid_request", "not_found", "not_running")
    assert answer["detail"].endswith(".") and not answer["retryable"]

    assert upstream_requests(emulator) == requests_before
    assert await sync_to_async(Message.objects.count)() == rows_before
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or "Traceback" in r.getMessage()]
    assert problems == []

    await socket.send(type="send", conversation=None, content=f"still here {nonce()}", model=MODELS[0])
    frames_back = await socket.receive_until("done", "error")
    assert frames_back[-1]["type"] == "done"
