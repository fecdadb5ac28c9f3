"""The audit trail holds up in a review: append-only in the database, hash-chained, verifiable."""

import asyncio
import hashlib

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from audit.models import AuditEntry
from chat.actions import ConversationTranscript, NoTranscript
from chat.completion import API, CompletionRequest, Done
from chat.executor import ChatExecutor
from chat.models import Conversation, Message
from tests.helpers import nonce, team_named

pytestmark = pytest.mark.django_db(transaction=True)


async def complete(user, content, transcript=None):
    request = CompletionRequest(
        user=user, team=await sync_to_async(team_named)("Red"), messages=[{"role": "user", "content": content}],
        model_id="gpt-4", temperature=0.5, max_tokens=128, client=API,
    )
    events = [event async for event in ChatExecutor().stream(request, transcript or NoTranscript())]
    assert isinstance(events[-1], Done)
    return events


def verify() -> str:
    from io import StringIO

    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


async def test_completions_at_once_make_one_unbroken_chain(alice, bob, settings):
    settings.PORTAL_MAX_CONCURRENT_PER_USER = 20
    await asyncio.gather(*(complete(alice if i % 2 else bob, f"Chain {i} {nonce()}") for i in range(20)))
    entries = [e async for e in AuditEntry.objects.order_by("seq")]
    assert [e.seq for e in entries] == list(range(1, 21))
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(entries, entries[1:]))
    assert [e.action for e in entries] == ["completion.succeeded"] * 20
    report = await sync_to_async(verify)()
    assert "intact: 20 entries" in report and f"Head: entry 20, hash {entries[-1].hash}" in report


async def test_an_entry_proves_what_was_asked_and_answered(alice):
    content = f"Prove it {nonce()}"
    events = await complete(alice, content, ConversationTranscript())
    entry = await AuditEntry.objects.aget(request_id=events[0].request_id)
    answer = await Message.objects.aget(pk=events[0].message_id)
    assert entry.answer_sha256 == hashlib.sha256(answer.content.encode()).hexdigest()
    asked = '[{"content":"%s","role":"user"}]' % content
    assert entry.prompt_sha256 == hashlib.sha256(asked.encode()).hexdigest()
    assert entry.details == {"client": "api"}


@pytest.mark.parametrize("statement", ["UPDATE audit_auditentry SET model_id = 'other'", "DELETE FROM audit_auditentry"])
async def test_the_database_refuses_to_change_or_remove_an_entry(alice, statement):
    await complete(alice, f"Keep me {nonce()}")

    def tamper():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)

    with pytest.raises(DatabaseError, match="append-only"):
        await sync_to_async(tamper)()
    assert await AuditEntry.objects.acount() == 1


async def test_deleting_a_conversation_leaves_its_audit_entries_and_the_chain_intact(alice):
    events = await complete(alice, f"Forget this chat {nonce()}", ConversationTranscript())
    await Conversation.objects.filter(pk=events[0].conversation_id).adelete()
    entry = await AuditEntry.objects.aget(request_id=events[0].request_id)
    assert entry.conversation_id == events[0].conversation_id  # the id it named, kept
    assert "intact" in await sync_to_async(verify)()


async def test_a_rewritten_entry_is_found_by_verify_audit(alice):
    for i in range(3):
        await complete(alice, f"Evidence {i} {nonce()}")

    def rewrite_past_the_trigger():
        # What someone with the table owner's rights could do: switch the trigger off, edit, switch it on.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER audit_entries_are_append_only")
            cursor.execute("UPDATE audit_auditentry SET model_id = 'gpt-4o-mini' WHERE seq = 2")
            cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER audit_entries_are_append_only")

    await sync_to_async(rewrite_past_the_trigger)()
    with pytest.raises(CommandError, match="broken at entry 2: its content was changed after it was written"):
        await sync_to_async(verify)()


def test_seeded_entries_are_chained_like_live_ones():
    call_command("seed_usage", rows=500)
    call_command("seed_usage", rows=300)
    assert "intact: 800 entries" in verify()


@pytest.mark.parametrize("rewrite", ["target = 'user:mallory'", "target = ''"])
def test_events_beside_completions_join_the_chain_and_their_target_is_sealed(alice, bob, rewrite):
    from audit.actions import do_record_event
    from audit.models import Action

    red = team_named("Red")
    do_record_event(Action.MEMBER_ADDED, actor=alice, team=red, target="user:bob", details={"role": "member"})
    do_record_event(Action.LOGIN_FAILED, actor=None, details={"username": "nobody"})
    assert "intact: 2 entries checked" in verify()
    entry = AuditEntry.objects.get(seq=1)
    assert (entry.action, entry.user, entry.team, entry.target) == ("team.member_added", alice, red, "user:bob")
    assert AuditEntry.objects.get(seq=2).user is None

    # Changing what was acted on, or blanking it, past the trigger breaks the chain at that entry.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER audit_entries_are_append_only")
        cursor.execute(f"UPDATE audit_auditentry SET {rewrite} WHERE seq = 1")
        cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER audit_entries_are_append_only")
    with pytest.raises(CommandError, match="broken at entry 1"):
        verify()


def test_checkpoints_published_outside_the_database_catch_a_trail_rewritten_whole(alice, settings, tmp_path, caplog):
    from io import StringIO

    from audit import chain
    from audit.actions import do_record_event
    from audit.models import Action

    settings.PORTAL_AUDIT_CHECKPOINT_FILE = str(tmp_path / "checkpoints.jsonl")
    for n in range(3):
        do_record_event(Action.LOGIN, actor=alice, details={"n": n})
    printed = StringIO()
    with caplog.at_level("INFO", logger="audit.checkpoint"):
        call_command("audit_checkpoint", stdout=printed)
    line = printed.getvalue().strip()
    head = AuditEntry.objects.get(seq=3)
    assert line.startswith('{"seq":3,"hash":"%s"' % head.hash)
    assert (tmp_path / "checkpoints.jsonl").read_text().strip() == line
    assert line in caplog.text  # the log line, which log shipping carries off the machine
    do_record_event(Action.LOGOUT, actor=alice)  # the trail goes on after the checkpoint

    out = StringIO()
    call_command("verify_audit", "--checkpoints", settings.PORTAL_AUDIT_CHECKPOINT_FILE, stdout=out)
    assert "matches all 1 checkpoint(s)" in out.getvalue()

    # Someone with the table owner's rights rewrites entry 2 and re-seals every entry after it:
    # the chain alone is consistent again, the published checkpoint is not.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER audit_entries_are_append_only")
        cursor.execute("""UPDATE audit_auditentry SET details = '{"n": 99}' WHERE seq = 2""")
        prev = AuditEntry.objects.get(seq=1).hash
        for row in AuditEntry.objects.filter(seq__gte=2).order_by("seq").values(*chain.SEALED, "target"):
            prev_hash, prev = prev, chain.seal(prev, row)
            cursor.execute("UPDATE audit_auditentry SET prev_hash = %s, hash = %s WHERE seq = %s", [prev_hash, prev, row["seq"]])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred foreign-key checks, before ALTER
        cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER audit_entries_are_append_only")
    assert "intact" in verify()
    with pytest.raises(CommandError, match="does not match checkpoint 3: .* rewritten since the checkpoint"):
        call_command("verify_audit", "--checkpoints", settings.PORTAL_AUDIT_CHECKPOINT_FILE)


def test_verify_audit_says_what_is_wrong_with_a_checkpoint_file(tmp_path, alice):
    from audit.actions import do_record_event
    from audit.models import Action

    do_record_event(Action.LOGIN, actor=alice)
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("verify_audit", "--checkpoints", str(missing))
    beyond = tmp_path / "beyond.jsonl"
    beyond.write_text('2026-12-02 INFO audit.checkpoint {"seq":7,"hash":"ab","at":"x"}\n')
    with pytest.raises(CommandError, match="Checkpoint 7 is past the end of the audit trail"):
        call_command("verify_audit", "--checkpoints", str(beyond))
