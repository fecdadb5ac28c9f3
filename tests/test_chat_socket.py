"""The chat websocket from the outside: what a browser sends and what it gets back."""

import asyncio

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from audit.models import AuditEntry, UsageRecord
from chat.models import Conversation, Message
from tests.helpers import nonce

pytestmark = pytest.mark.django_db(transaction=True)


def send_frame(content, **extra):
    frame = {"type": "send", "conversation": None, "content": content, "model": "gpt-4", "temperature": 0.7, "max_tokens": 512}
    frame.update(extra)
    return frame


async def ask(socket, content, **extra):
    await socket.send(**send_frame(content, **extra))
    return await socket.receive_until("done", "error")


@sync_to_async
def rows_for(request_id):
    return (
        list(Message.objects.filter(request_id=request_id, role="assistant").values()),
        list(AuditEntry.objects.filter(request_id=request_id).values()),
        list(UsageRecord.objects.filter(request_id=request_id).values()),
    )


async def test_an_answer_streams_as_deltas_and_is_stored_once_with_audit_and_usage(alice, open_socket):
    socket = await open_socket(alice)
    frames = await ask(socket, f"What is OAuth? {nonce()}")
    started, *deltas, done = frames
    assert started["type"] == "started" and started["request_id"].startswith("req-")
    assert done["type"] == "done" and done["status"] == "complete" and done["finish_reason"] == "stop"
    assert len(deltas) >= 1 and [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    text = "".join(d["text"] for d in deltas)
    assert done["usage"]["source"] == "upstream" and done["usage"]["output_tokens"] > 0
    assert done["ttft_ms"] is not None and done["latency_ms"] >= done["ttft_ms"]

    messages, audits, usages = await rows_for(started["request_id"])
    assert len(messages) == 1 and len(audits) == 1 and len(usages) == 1
    assert messages[0]["content"] == text and messages[0]["status"] == "complete"
    assert audits[0]["audit_id"].startswith("AUD-") and len(audits[0]["audit_id"]) == 12
    assert audits[0]["status"] == "success" and audits[0]["compliance_tag"] == "GENESYS_AI_GATEWAY_V2"
    assert audits[0]["user_id"] == alice.pk and audits[0]["model_id"] == "gpt-4"
    assert usages[0]["output_tokens"] == done["usage"]["output_tokens"] and usages[0]["token_source"] == "upstream"
    assert usages[0]["output_chars"] == len(text) and usages[0]["tokens_per_second"] > 0


async def test_a_follow_up_goes_into_the_same_conversation_with_its_history(alice, open_socket):
    socket = await open_socket(alice)
    first = await ask(socket, f"First question {nonce()}")
    conversation = first[0]["conversation"]
    second = await ask(socket, "And a follow-up", conversation=conversation)
    assert second[0]["conversation"] == conversation and second[-1]["type"] == "done"
    roles = await sync_to_async(lambda: list(Message.objects.filter(conversation_id=conversation).values_list("role", flat=True)))()
    assert roles == ["user", "assistant", "user", "assistant"]
    title = await sync_to_async(lambda: Conversation.objects.get(pk=conversation).title)()
    assert title.startswith("First question")


async def test_stop_keeps_the_partial_answer_and_marks_it_cancelled(alice, open_socket):
    socket = await open_socket(alice)
    await socket.send(**send_frame(f"Long one {nonce()} [[emulator tokens=2000 rate=100]]", max_tokens=4000))
    started = await socket.receive()
    first_delta = await socket.receive()
    assert first_delta["type"] == "delta"
    await socket.send(type="stop", message=started["message"])
    frames = await socket.receive_until("done", "error")
    done = frames[-1]
    assert done["type"] == "done" and done["status"] == "cancelled" and done["finish_reason"] == "cancelled"
    shown = first_delta["text"] + "".join(f["text"] for f in frames if f["type"] == "delta")
    messages, audits, usages = await rows_for(started["request_id"])
    assert messages[0]["status"] == "cancelled" and messages[0]["content"] == shown
    assert 0 < len(shown.split()) < 2000
    assert audits[0]["status"] == "cancelled" and usages[0]["status"] == "cancelled"


async def test_an_answer_goes_on_and_is_stored_when_the_browser_goes_away(alice, open_socket):
    socket = await open_socket(alice)
    await socket.send(**send_frame(f"Keep going {nonce()} [[emulator tokens=30 rate=200]]"))
    started = await socket.receive()
    await socket.close()
    for _ in range(100):
        messages, audits, _ = await rows_for(started["request_id"])
        if messages[0]["status"] != "streaming":
            break
        await asyncio.sleep(0.05)
    assert messages[0]["status"] == "complete" and len(messages[0]["content"].split()) == 30
    assert len(audits) == 1


async def test_safety_filters_remove_reasoning_and_say_so(alice, open_socket):
    socket = await open_socket(alice)
    frames = await ask(socket, f"Think first {nonce()} [[emulator think gen_error]]")
    text = "".join(f["text"] for f in frames if f["type"] == "delta")
    done = frames[-1]
    assert "<think>" not in text and "[GENERATION_ERROR]" not in text and text.strip()
    assert [f["label"] for f in done["filters"]] == [
        "1 reasoning block removed",
        "generation error marker and the text after it removed",
    ]
    _, audits, _ = await rows_for(frames[0]["request_id"])
    assert audits[0]["safety_filtered"] is True


@pytest.mark.parametrize(
    "frame, detail",
    [
        (dict(temperature=1.5), "Temperature must be a number from 0.0 to 1.0."),
        (dict(max_tokens=0), "Max tokens must be a whole number from 1 to 4096."),
        (dict(max_tokens=5000), "Max tokens must be a whole number from 1 to 4096."),
        (dict(model="gpt-99"), "The model “gpt-99” is not available here. Pick one of: gpt-4, gpt-4o, gpt-4o-mini, claude-3-5-sonnet."),
        (dict(content="   "), "The message is empty: write something first."),
        (dict(content="x" * 32_004), "The message is 32,004 characters long; the limit is 32,000. Shorten it and send again."),
    ],
)
async def test_invalid_requests_get_a_clear_sentence_and_store_nothing(alice, open_socket, frame, detail):
    socket = await open_socket(alice)
    await socket.send(**{**send_frame("Hello"), **frame})
    error = await socket.receive()
    assert error == {"type": "error", "message": None, "code": "invalid_request", "detail": detail, "retryable": False}
    assert await sync_to_async(Message.objects.count)() == 0


async def test_a_conversation_too_long_for_the_model_is_refused_before_the_upstream(alice, open_socket, settings):
    settings.PORTAL_MAX_HISTORY_TOKENS = 100
    socket = await open_socket(alice)
    await socket.send(**send_frame("y" * 404))
    error = await socket.receive()
    assert error["code"] == "invalid_request"
    assert error["detail"] == "The message is about 101 tokens long; the limit is 100. Shorten it and send again."


async def test_the_concurrency_quota_refuses_one_more_answer_with_a_reason(alice, open_socket, settings):
    settings.PORTAL_MAX_CONCURRENT_PER_USER = 2
    socket = await open_socket(alice)
    for _ in range(2):
        await socket.send(**send_frame(f"slow {nonce()} [[emulator tokens=400 rate=100]]"))
        # The first answer's deltas may already be interleaved with the second "started".
        frames = await socket.receive_until("started", "error")
        assert frames[-1]["type"] == "started"
    await socket.send(**send_frame("one too many"))
    frames = await socket.receive_until("error")
    error = frames[-1]
    assert error["code"] == "quota_exceeded" and error["message"] is None and error["retryable"] is True
    assert "2 answers in progress" in error["detail"]
    # Every refusal is an audit entry naming the limit, with nothing stored in the conversation.
    refusal = await AuditEntry.objects.aget(user=alice, action="completion.refused")
    assert refusal.status == "rejected" and refusal.error_code == "quota_exceeded"
    assert "2 answers in progress" in refusal.details["reason"] and refusal.details["client"] == "browser"
    # Stop both so the test ends promptly.
    started_ids = await sync_to_async(lambda: list(Message.objects.filter(role="assistant").values_list("id", flat=True)))()
    for message_id in started_ids:
        await socket.send(type="stop", message=message_id)
    await socket.receive_until("done")
    await socket.receive_until("done")


async def test_upstream_failure_becomes_an_error_frame_and_an_audited_error(alice, open_socket, settings):
    settings.UPSTREAM_MAX_ATTEMPTS = 2
    socket = await open_socket(alice)
    frames = await ask(socket, f"fail {nonce()} [[emulator fault=503]]")
    error = frames[-1]
    assert error["type"] == "error" and error["code"] == "upstream_unavailable" and error["retryable"] is True
    assert error["message"] == frames[0]["message"]
    assert error["detail"] == "The AI service is unavailable right now. Please try again in a minute."
    messages, audits, usages = await rows_for(frames[0]["request_id"])
    assert messages[0]["status"] == "error" and messages[0]["error_code"] == "upstream_unavailable"
    assert audits[0]["status"] == "error" and usages[0]["status"] == "error"


async def test_a_stream_cut_after_text_keeps_the_text_and_offers_retry(alice, open_socket):
    socket = await open_socket(alice)
    frames = await ask(socket, f"cut {nonce()} [[emulator drop_after=4 chunk_tokens=1]]")
    error = frames[-1]
    shown = "".join(f["text"] for f in frames if f["type"] == "delta")
    assert error["code"] == "upstream_interrupted" and error["retryable"] is True and shown
    messages, _, _ = await rows_for(frames[0]["request_id"])
    assert messages[0]["content"] == shown and messages[0]["status"] == "error"


@pytest.mark.parametrize(
    "raw, detail",
    [
        ("not json", "That frame is not valid JSON."),
        ('{"type": "dance"}', 'Every frame needs a "type": "send", "stop" or "resume".'),
        ('["send"]', 'Every frame needs a "type": "send", "stop" or "resume".'),
        ('{"type": "send", "conversation": null}', '"send" needs the "content" of the message as text.'),
        ('{"type": "send", "content": "hi", "conversation": "abc"}', '"conversation" must be a conversation id or null.'),
        ('{"type": "send", "content": "hi", "temperature": "hot"}', '"temperature" must be a number.'),
        ('{"type": "stop"}', '"stop" needs the "message" id of the answer to stop.'),
        ("[" * 1000 + "]" * 1000, "That frame is nested too deeply to be read."),
        ('{"type": "send", "content": ' + "[" * 5000 + "]" * 5000 + "}", "That frame is nested too deeply to be read."),
    ],
)
async def test_a_bad_frame_gets_an_error_frame_and_the_socket_stays_open(alice, open_socket, raw, detail):
    socket = await open_socket(alice)
    await socket.send_raw(raw)
    assert await socket.receive() == {"type": "error", "message": None, "code": "bad_frame", "detail": detail, "retryable": False}
    frames = await ask(socket, f"still here {nonce()}")
    assert frames[-1]["type"] == "done"


@pytest.mark.parametrize(
    "content",
    ["before\\u0000after", "half an emoji \\ud800 here", "\\udfff"],
)
async def test_text_that_cannot_be_stored_is_refused_before_it_goes_upstream(alice, open_socket, emulator, content):
    before = httpx.get(emulator.url + "/_emulator/stats").json()["completion_requests"]
    socket = await open_socket(alice)
    await socket.send_raw('{"type": "send", "conversation": null, "model": "gpt-4", "content": "%s"}' % content)
    error = await socket.receive()
    assert error["code"] == "invalid_request" and "cannot be stored" in error["detail"] and not error["retryable"]
    assert httpx.get(emulator.url + "/_emulator/stats").json()["completion_requests"] == before
    assert await sync_to_async(Message.objects.count)() == 0
    frames = await ask(socket, f"still here {nonce()}")
    assert frames[-1]["type"] == "done"


async def test_a_model_name_with_half_an_emoji_pair_gets_an_error_frame(alice, open_socket):
    socket = await open_socket(alice)
    await socket.send_raw('{"type": "send", "conversation": null, "content": "hi", "model": "gpt-4\\ud800"}')
    error = await socket.receive()
    assert error["code"] == "invalid_request" and error["detail"].startswith("That model name cannot be read.")


async def test_an_anonymous_socket_is_told_to_log_in_and_closed(open_socket):
    socket = await open_socket(None)
    frame = await socket.receive()
    assert frame["code"] == "unauthenticated" and "Log in" in frame["detail"]
    closed = await socket.communicator.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_another_users_conversation_cannot_be_continued(alice, bob, open_socket):
    alice_socket = await open_socket(alice)
    frames = await ask(alice_socket, f"Private {nonce()}")
    conversation = frames[0]["conversation"]
    bob_socket = await open_socket(bob)
    await bob_socket.send(**send_frame("Let me in", conversation=conversation))
    error = await bob_socket.receive()
    assert error["code"] == "not_found" and error["message"] is None
    count = await sync_to_async(Message.objects.filter(conversation_id=conversation).count)()
    assert count == 2


async def test_another_user_cannot_stop_my_answer(alice, bob, open_socket):
    alice_socket = await open_socket(alice)
    await alice_socket.send(**send_frame(f"Mine {nonce()} [[emulator tokens=40 rate=200]]"))
    started = await alice_socket.receive()
    bob_socket = await open_socket(bob)
    await bob_socket.send(type="stop", message=started["message"])
    assert (await bob_socket.receive())["code"] == "not_running"
    frames = await alice_socket.receive_until("done", "error")
    assert frames[-1]["status"] == "complete"


async def test_a_reconnected_browser_gets_the_text_so_far_then_exactly_the_rest(alice, open_socket):
    first = await open_socket(alice)
    await first.send(**send_frame(f"Long {nonce()} [[emulator tokens=60 rate=150]]"))
    started = await first.receive()
    seen = [await first.receive() for _ in range(3)]
    assert [f["type"] for f in seen] == ["delta"] * 3
    await first.close()  # the connection drops mid-answer

    second = await open_socket(alice)
    await second.send(type="resume", message=started["message"])
    snapshot = await second.receive()
    assert snapshot["type"] == "snapshot" and snapshot["status"] == "streaming" and snapshot["seq"] >= 3
    assert snapshot["text"].startswith("".join(f["text"] for f in seen))
    rest = await second.receive_until("done", "error")
    deltas = [f for f in rest if f["type"] == "delta"]
    assert [d["seq"] for d in deltas] == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(deltas)))
    assert rest[-1]["type"] == "done"
    messages, _, _ = await rows_for(started["request_id"])
    assert snapshot["text"] + "".join(d["text"] for d in deltas) == messages[0]["content"]
    assert len(messages[0]["content"].split()) == 60


async def test_resuming_a_finished_answer_gives_its_stored_text_and_outcome(alice, open_socket):
    socket = await open_socket(alice)
    frames = await ask(socket, f"Short {nonce()}")
    await socket.send(type="resume", message=frames[0]["message"])
    final = await socket.receive()
    assert final["type"] == "done" and final["status"] == "complete"
    assert final["content"] == "".join(f["text"] for f in frames if f["type"] == "delta")
    assert final["usage"] == frames[-1]["usage"] and final["filters"] == frames[-1]["filters"]


async def test_another_user_cannot_follow_my_answer(alice, bob, open_socket):
    alice_socket = await open_socket(alice)
    await alice_socket.send(**send_frame(f"Mine {nonce()} [[emulator tokens=40 rate=200]]"))
    started = await alice_socket.receive()
    bob_socket = await open_socket(bob)
    await bob_socket.send(type="resume", message=started["message"])
    assert (await bob_socket.receive())["code"] == "not_found"
    await alice_socket.receive_until("done", "error")
    await bob_socket.send(type="resume", message=started["message"])
    assert (await bob_socket.receive())["code"] == "not_found"


async def test_stop_works_from_another_socket_of_the_owner(alice, open_socket):
    first = await open_socket(alice)
    await first.send(**send_frame(f"Long {nonce()} [[emulator tokens=2000 rate=100]]", max_tokens=4000))
    started = await first.receive()
    second = await open_socket(alice)
    await second.send(type="stop", message=started["message"])
    frames = await first.receive_until("done", "error")
    assert frames[-1]["status"] == "cancelled"


@pytest.mark.parametrize("interval_ms, fewest, most", [(30, 5, 20), (0, 25, 60)])
async def test_a_fast_answer_is_merged_into_fewer_frames_without_losing_a_word(alice, open_socket, settings, interval_ms, fewest, most):
    settings.PORTAL_RELAY_INTERVAL_MS = interval_ms
    socket = await open_socket(alice)
    # 60 one-word chunks over 0.3 s: one every 5 ms.
    frames = await ask(socket, f"Fast {nonce()} [[emulator tokens=60 rate=200 chunk_tokens=1]]")
    deltas = [f for f in frames if f["type"] == "delta"]
    assert fewest <= len(deltas) <= most
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    messages, _, _ = await rows_for(frames[0]["request_id"])
    assert "".join(d["text"] for d in deltas) == messages[0]["content"]
    assert len(messages[0]["content"].split()) == 60


async def test_an_audit_id_collision_does_not_lose_the_answer(alice, open_socket, monkeypatch):
    from audit import actions, models as audit_models

    taken = await sync_to_async(lambda: AuditEntry.objects.create(
        request_id="req-old", user=alice, model_id="gpt-4", status="success", timestamp=timezone.now()
    ).audit_id)()
    socket = await open_socket(alice)  # first: the log-in is an audit entry too
    ids = iter([taken, "AUD-0000beef"])
    monkeypatch.setattr(actions, "new_audit_id", lambda: next(ids, audit_models.new_audit_id()))
    frames = await ask(socket, f"Collide {nonce()}")
    assert frames[-1]["type"] == "done"
    messages, audits, usages = await rows_for(frames[0]["request_id"])
    assert messages[0]["status"] == "complete" and len(usages) == 1
    assert [a["audit_id"] for a in audits] == ["AUD-0000beef"]
