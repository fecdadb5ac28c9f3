"""The executor called directly, as a program's request will call it: no socket, no page.

Each test runs `ChatExecutor().stream()` against the real emulator over its loopback socket and
real Postgres, and checks what the caller and the audit trail see.
"""

import asyncio

import httpx
import pytest
from asgiref.sync import sync_to_async

from audit.models import AuditEntry, UsageRecord
from chat.actions import ConversationTranscript
from chat.completion import API, COMMAND, CompletionRequest, Delta, Done, Failed, Started
from chat.executor import ChatExecutor
from chat.models import Conversation, Message
from tests.helpers import nonce, team_named

pytestmark = pytest.mark.django_db(transaction=True)


def request_for(user, team, *messages, **params):
    return CompletionRequest(
        user=user,
        team=team,
        messages=[{"role": role, "content": content} for role, content in messages],
        model_id=params.pop("model_id", "gpt-4"),
        temperature=params.pop("temperature", 0.5),
        max_tokens=params.pop("max_tokens", 256),
        client=params.pop("client", API),
    )


async def run(request, transcript=None, *, stop_after_deltas=None):
    events = []
    task = asyncio.current_task()
    async for event in ChatExecutor().stream(request, transcript):
        events.append(event)
        if stop_after_deltas is not None and sum(isinstance(e, Delta) for e in events) == stop_after_deltas:
            task.cancel()  # what Stop does to the task that runs the completion
    return events


@pytest.fixture
def red(alice):
    return team_named("Red")  # alice's team (and bob's)


def completion_requests(emulator) -> int:
    return httpx.get(emulator.url + "/_emulator/stats").json()["completion_requests"]


@sync_to_async
def trail(request_id):
    return (
        list(AuditEntry.objects.filter(request_id=request_id).values()),
        list(UsageRecord.objects.filter(request_id=request_id).values()),
        Message.objects.filter(request_id=request_id).count(),
    )


async def test_a_program_gets_a_whole_message_list_answered_and_audited_without_a_conversation(alice, red):
    conversations_before = await Conversation.objects.acount()
    topic = f"kubernetes {nonce()}"
    request = request_for(
        alice,
        red,
        ("system", "You answer briefly."),
        ("user", f"Tell me about {topic}"),
        ("assistant", "It schedules containers."),
        ("user", "And what else?"),
        client=COMMAND,
    )
    events = await run(request)

    started, *deltas, done = events
    assert isinstance(started, Started) and started.message_id is None and started.conversation_id is None
    assert deltas and all(isinstance(d, Delta) for d in deltas)
    assert isinstance(done, Done) and done.outcome.status == "complete"
    # The emulator echoes the conversation it was sent: the whole list reached it.
    assert "".join(d.text for d in deltas) == done.outcome.text
    audits, usages, messages = await trail(started.request_id)
    assert len(audits) == 1 and audits[0]["status"] == "success" and audits[0]["user_id"] == alice.pk
    assert audits[0]["conversation_id"] is None and audits[0]["message_id"] is None
    assert audits[0]["team_id"] == red.pk and usages[0]["team_id"] == red.pk
    assert len(usages) == 1 and usages[0]["output_tokens"] == done.outcome.output_tokens > 0
    assert usages[0]["output_chars"] == len(done.outcome.text)
    assert messages == 0 and await Conversation.objects.acount() == conversations_before


async def test_the_chat_transcript_adds_the_history_and_stores_question_and_answer(alice, red):
    first = await run(request_for(alice, red, ("user", f"First {nonce()}")), ConversationTranscript())
    conversation_id = first[0].conversation_id
    assert conversation_id is not None and first[-1].outcome.status == "complete"

    second = await run(request_for(alice, red, ("user", "Second")), ConversationTranscript(conversation_id))
    assert second[0].conversation_id == conversation_id
    stored = [
        (m.role, m.content)
        async for m in Message.objects.filter(conversation_id=conversation_id).order_by("created_at", "id")
    ]
    assert [role for role, _ in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[3][1] == second[-1].outcome.text
    # Four messages went upstream the second time: the history and the new question.
    usages = await trail(second[0].request_id)
    assert usages[1][0]["input_chars"] == sum(len(content) for _, content in stored[:3])


async def test_someone_elses_conversation_is_not_found_and_nothing_is_sent_upstream(alice, bob, emulator, red):
    mine = await run(request_for(alice, red, ("user", f"Private {nonce()}")), ConversationTranscript())
    before = completion_requests(emulator)
    events = await run(request_for(bob, red, ("user", "Let me in")), ConversationTranscript(mine[0].conversation_id))
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert events[0].code == "not_found" and not events[0].retryable
    assert completion_requests(emulator) == before


async def test_an_invalid_request_is_refused_with_a_sentence_before_anything_goes_upstream(alice, emulator, red):
    before = completion_requests(emulator)
    events = await run(request_for(alice, red, ("user", "Hello"), temperature=3))
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert events[0].code == "invalid_request" and "Temperature" in events[0].detail and not events[0].retryable
    assert completion_requests(emulator) == before
    # Refused, and still audited: one entry that says why, a usage record for the analytics, no message.
    entry = await AuditEntry.objects.aget(user=alice)
    assert (entry.action, entry.status, entry.error_code) == ("completion.rejected", "rejected", "invalid_request")
    assert "Temperature" in entry.details["reason"] and entry.details["client"] == "api"
    assert entry.team_id == red.pk and entry.message_id is None and entry.prompt_sha256
    entries, usages, messages = await trail(entry.request_id)
    assert len(entries) == 1 and usages[0]["status"] == "rejected" and usages[0]["output_tokens"] == 0 and messages == 0


async def test_an_upstream_failure_is_stored_as_retryable_with_its_audit_entry(alice, red):
    transcript = ConversationTranscript()
    events = await run(request_for(alice, red, ("user", f"[[emulator fault=503]] {nonce()}")), transcript)
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.code == "upstream_unavailable" and failed.retryable
    answer = await Message.objects.aget(pk=events[0].message_id)
    assert answer.status == "error" and answer.error_retryable
    assert answer.to_dict()["retryable"] is True and answer.to_dict()["code"] == "upstream_unavailable"
    audits, usages, _ = await trail(events[0].request_id)
    assert [a["status"] for a in audits] == ["error"] and [u["status"] for u in usages] == ["error"]


async def test_cancelling_the_caller_keeps_the_part_already_relayed_as_cancelled(alice, red):
    request = request_for(alice, red, ("user", f"[[emulator rate=40 tokens=200]] {nonce()}"))
    events = await run(request, ConversationTranscript(), stop_after_deltas=2)
    done = events[-1]
    assert isinstance(done, Done) and done.outcome.status == "cancelled"
    relayed = "".join(e.text for e in events if isinstance(e, Delta))
    answer = await Message.objects.aget(pk=events[0].message_id)
    assert answer.status == "cancelled" and answer.content == relayed == done.outcome.text
    audits, _, _ = await trail(events[0].request_id)
    assert [a["status"] for a in audits] == ["cancelled"]


async def test_the_stored_answer_reads_back_with_the_same_facts_as_the_live_done_event(alice, red):
    events = await run(request_for(alice, red, ("user", f"Facts {nonce()}")), ConversationTranscript())
    done = events[-1]
    answer = await Message.objects.aget(pk=events[0].message_id)
    stored = answer.to_dict()
    assert stored.pop("id") == events[0].message_id and stored.pop("role") == "assistant"
    assert stored.pop("content") == done.outcome.text
    assert stored == done.outcome.to_dict()


async def test_a_conversation_deleted_mid_answer_still_leaves_the_audit_entry(alice, red):
    events = []
    async for event in ChatExecutor().stream(
        request_for(alice, red, ("user", f"[[emulator tokens=40 rate=200]] {nonce()}")), ConversationTranscript()
    ):
        events.append(event)
        if isinstance(event, Started):
            await Conversation.objects.filter(pk=event.conversation_id).adelete()
    assert isinstance(events[-1], Done) and events[-1].outcome.status == "complete"
    audits, usages, messages = await trail(events[0].request_id)
    assert len(audits) == 1 and audits[0]["conversation_id"] is None and audits[0]["message_id"] is None
    assert len(usages) == 1 and messages == 0
