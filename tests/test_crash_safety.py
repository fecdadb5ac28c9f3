"""Answers survive a crash: a streaming answer saves its text every few seconds, and one whose
process died (SIGKILL) is stored as "interrupted", with that text and its one audit entry, by
the next runportal, by the job, or when a page asks for it; Continue is offered after a break.
"""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEntry, UsageRecord
from chat import recovery
from chat.models import Conversation, Message
from tests.helpers import launch_portal, nonce, session_cookie_for, team_named
from tests.test_many_processes import connect, frames_until_final, start_long_answer

pytestmark = pytest.mark.django_db(transaction=True)


def send_frame(content, **extra):
    return {"type": "send", "conversation": None, "content": content, **extra}


async def read_text(ws, *, seconds: float) -> tuple[dict, str]:
    """The started frame and the text that arrived over `seconds` of a long answer."""
    started = await start_long_answer(ws)
    assert started["type"] == "started"
    text = ""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        frame = json.loads(await ws.recv())
        assert frame["type"] == "delta"
        text += frame["text"]
    return started, text


async def test_a_streaming_answer_saves_its_text_every_few_seconds_and_stops_after_its_end(alice, open_socket, settings):
    settings.PORTAL_CHECKPOINT_SECONDS = 0.3
    socket = await open_socket(alice)
    await socket.send(**send_frame(f"Slow {nonce()} [[emulator tokens=400 rate=60]]"))
    started = await socket.receive()
    shown = ""
    for _ in range(30):  # about a second of text
        frame = await socket.receive()
        shown += frame.get("text", "")
    saved = await Message.objects.aget(pk=started["message"])
    assert saved.status == "streaming" and saved.content and shown.startswith(saved.content)
    assert saved.checkpoint_at > saved.created_at
    await socket.send(type="stop", message=started["message"])
    final = (await socket.receive_until("done"))[-1]
    await asyncio.sleep(0.5)  # a checkpoint due now must not overwrite the stored end
    saved = await Message.objects.aget(pk=started["message"])
    assert saved.status == "cancelled" and final["status"] == "cancelled"


def streaming_answer(user, *, beat_seconds_ago: float, text="Half an ans", channel=""):
    """An answer as a killed process leaves it: streaming, its last checkpoint some time ago."""
    team = team_named("Red")
    conversation = Conversation.objects.create(user=user, team=team, title="Killed")
    Message.objects.create(conversation=conversation, team=team, role="user", content="Tell me", request_id="req-killed")
    return Message.objects.create(
        conversation=conversation, team=team, role="assistant", status="streaming", content=text, model_id="gpt-4",
        request_id="req-killed", process_channel=channel, checkpoint_at=timezone.now() - timedelta(seconds=beat_seconds_ago),
    )


def test_the_job_ends_answers_whose_heartbeat_stopped_once_and_leaves_live_ones_alone(alice, settings):
    settings.PORTAL_INTERRUPTED_AFTER_SECONDS = 30
    dead = streaming_answer(alice, beat_seconds_ago=120, channel="specific.elsewhere!abc")
    alive = streaming_answer(alice, beat_seconds_ago=2, channel="specific.elsewhere!abc")

    assert recovery.interrupt_orphans() == 1
    assert recovery.interrupt_orphans() == 0  # again: nothing more, nothing twice

    dead.refresh_from_db()
    alive.refresh_from_db()
    assert alive.status == "streaming"
    assert (dead.status, dead.error_code, dead.content, dead.error_retryable) == ("error", "interrupted", "Half an ans", True)
    entry = AuditEntry.objects.get(message_id=dead.pk)
    assert (entry.action, entry.status, entry.error_code, entry.user) == ("completion.failed", "error", "interrupted", alice)
    assert UsageRecord.objects.get(request_id="req-killed").status == "error"
    call_command("verify_audit")  # raises if the chain is broken


async def test_a_page_resuming_an_answer_of_a_portal_that_is_gone_sees_it_interrupted_at_once(alice, open_socket):
    answer = await sync_to_async(streaming_answer)(alice, beat_seconds_ago=1)  # one process, not this one
    socket = await open_socket(alice)
    await socket.send(type="resume", message=answer.pk)
    frame = await socket.receive()
    assert frame["type"] == "error" and frame["code"] == "interrupted" and frame["retryable"] is True
    assert frame["message"] == answer.pk and "text up to that moment is kept" in frame["detail"]
    assert await AuditEntry.objects.filter(message_id=answer.pk).acount() == 1


async def test_an_answer_ended_by_recovery_while_its_process_lived_is_not_recorded_twice(alice, open_socket, settings):
    # Its heartbeat stalled past the cut-off (say, the database was away): recovery ends it; when
    # its own process finishes later, that record stands and no second audit entry is written.
    settings.PORTAL_CHECKPOINT_SECONDS = 60
    socket = await open_socket(alice)
    await socket.send(**send_frame(f"Slow {nonce()} [[emulator tokens=60 rate=60]]"))
    started = await socket.receive()
    await socket.receive()  # a delta
    assert await sync_to_async(recovery.interrupt_orphans)(stale_before=timezone.now()) == 1
    final = (await socket.receive_until("done"))[-1]
    assert final["status"] == "complete"  # what this page watched arrive
    stored = await Message.objects.aget(pk=started["message"])
    assert stored.error_code == "interrupted"
    assert await AuditEntry.objects.filter(request_id=started["request_id"]).acount() == 1


async def test_a_killed_portal_leaves_interrupted_answers_with_their_text_for_the_next_one(alice):
    fast_beat = {"PORTAL_CHECKPOINT_SECONDS": "0.3"}
    cookie = await sync_to_async(session_cookie_for)(alice)
    doomed = launch_portal("--no-admin", **fast_beat)
    try:
        async with connect(doomed, cookie) as ws:
            started, shown = await read_text(ws, seconds=1.5)
            doomed.child.kill()  # SIGKILL: nothing gets stored on the way out
    finally:
        doomed.child.kill()
    left = await Message.objects.aget(pk=started["message"])
    assert left.status == "streaming" and left.content and shown.startswith(left.content)

    successor = launch_portal("--no-admin", **fast_beat)
    try:
        assert "Answers interrupted when the portal last stopped: 1" in successor.output
        stored = await Message.objects.aget(pk=started["message"])
        assert (stored.status, stored.error_code, stored.content) == ("error", "interrupted", left.content)
        entries = [e async for e in AuditEntry.objects.filter(request_id=started["request_id"])]
        assert [(e.action, e.error_code) for e in entries] == [("completion.failed", "interrupted")]
        # The page, reloaded, gets the stored end and can go on from the text kept.
        async with connect(successor, cookie) as ws:
            await ws.send(json.dumps({"type": "resume", "message": started["message"]}))
            frame = json.loads(await ws.recv())
        assert frame["code"] == "interrupted" and frame["retryable"] is True
    finally:
        assert "Gateway Portal stopped." in successor.stop()


async def test_a_page_following_an_answer_on_a_dead_process_learns_it_was_interrupted(redis_url, alice):
    beat = {"PORTAL_CHECKPOINT_SECONDS": "0.3", "PORTAL_INTERRUPTED_AFTER_SECONDS": "2"}
    doomed = launch_portal("--no-admin", REDIS_URL=redis_url, **beat)
    survivor = launch_portal("--no-admin", REDIS_URL=redis_url, **beat)
    try:
        cookie = await sync_to_async(session_cookie_for)(alice)
        async with connect(doomed, cookie) as ws_doomed:
            started, _ = await read_text(ws_doomed, seconds=0.5)
            doomed.child.kill()
        async with connect(survivor, cookie) as ws:
            await ws.send(json.dumps({"type": "resume", "message": started["message"]}))
            frames = await frames_until_final(ws, timeout=20)
        final = frames[-1]
        assert final["type"] == "error" and final["code"] == "interrupted" and final["message"] == started["message"]
    finally:
        doomed.child.kill()
        assert "Gateway Portal stopped." in survivor.stop()


async def test_after_a_drop_mid_answer_the_page_can_continue_from_the_text_kept(alice, open_socket, emulator):
    socket = await open_socket(alice)
    await socket.send(**send_frame(f"Break {nonce()} [[emulator tokens=200 drop_after=5]]"))
    frames = await socket.receive_until("error")
    error, started = frames[-1], frames[0]
    kept = "".join(f.get("text", "") for f in frames if f["type"] == "delta")
    assert error["code"] == "upstream_interrupted" and error["retryable"] is True and kept
    stored = await Message.objects.aget(pk=started["message"])
    assert stored.content == kept and stored.status == "error"

    # Continue is a new turn in the same conversation: the model reads the kept text in its history.
    prompt = "Please continue your previous answer exactly where it stopped."
    await socket.send(type="send", conversation=started["conversation"], content=prompt)
    frames = await socket.receive_until("done")
    question = await Message.objects.aget(pk=started["user_message"])
    usage = await UsageRecord.objects.aget(request_id=frames[0]["request_id"])
    assert usage.input_chars == len(question.content) + len(kept) + len(prompt)
