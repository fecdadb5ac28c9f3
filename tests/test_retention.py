"""Retention: old message content is purged, the audit trail and its hashes stay (the chain still
verifies, a brought text still proves what was said), a legal hold stops the purge, and the purge
and the holds are audited.
"""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from audit import retention
from audit.models import AuditEntry, LegalHold
from chat.models import Conversation, Message
from tests.helpers import nonce, team_named
from tests.test_officer_admin import converse

pytestmark = pytest.mark.django_db(transaction=True)


def age(conversation_id: int, days: int) -> None:
    """Make a conversation and its messages `days` old (the message table is not append-only)."""
    then = timezone.now() - timedelta(days=days)
    Message.objects.filter(conversation_id=conversation_id).update(created_at=then)
    Conversation.objects.filter(pk=conversation_id).update(created_at=then, updated_at=then)


def purge(*args) -> str:
    out = StringIO()
    call_command("purge_content", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def old_and_new(alice, settings):
    """alice's conversation of 40 days ago and one of today; retention 30 days."""
    settings.PORTAL_RETENTION_DAYS = 30
    old_id, old_answer = converse(alice, f"An old question {nonce()}")
    age(old_id, 40)
    new_id, new_answer = converse(alice, f"A new question {nonce()}")
    return old_id, old_answer, new_id, new_answer


def test_the_purge_blanks_old_content_keeps_the_entries_and_the_chain_still_verifies(old_and_new, client, olivia):
    old_id, old_answer, new_id, new_answer = old_and_new
    entries_before = list(AuditEntry.objects.order_by("seq").values_list("seq", "hash"))

    report = purge()
    assert "Team red: purged 2 messages older than 30 days" in report

    purged = Message.objects.filter(conversation_id=old_id)
    assert all(m.content == "" and m.purged_at is not None for m in purged)
    assert Conversation.objects.get(pk=old_id).title == retention.PURGED_TITLE
    assert Message.objects.get(pk=new_answer.pk).content == new_answer.content  # today's stays
    assert list(AuditEntry.objects.order_by("seq").values_list("seq", "hash"))[: len(entries_before)] == entries_before
    out = StringIO()
    call_command("verify_audit", stdout=out)
    assert "intact" in out.getvalue()

    # The transcript says so, and the answer's hash still proves the text someone brings.
    client.force_login(olivia)
    url = f"/admin/audit/auditentry/transcript/{old_id}/"
    page = client.get(url).content.decode()
    assert f"Content purged under the retention policy on {timezone.now():%Y-%m-%d}" in page
    assert old_answer.content[:40] not in page
    proved = client.post(url, {"message": old_answer.pk, "text": old_answer.content}).content.decode()
    assert "The text matches this answer's hash" in proved


def test_the_purge_is_audited_once_per_team_with_its_count(old_and_new, bob, charlie):
    converse(bob, f"Bob's old question {nonce()}")
    blue_id, _ = converse(charlie, f"Charlie's old question {nonce()}")
    for conversation in Conversation.objects.exclude(pk=old_and_new[2]):
        age(conversation.pk, 40)
    purge()
    entries = {e.team.slug: e for e in AuditEntry.objects.filter(action="retention.purged").select_related("team")}
    assert set(entries) == {"red", "blue"}
    assert entries["red"].details["messages"] == 4 and entries["blue"].details["messages"] == 2
    assert entries["red"].target == "team:red" and entries["red"].details["retention_days"] == 30
    purge()  # nothing left to purge: no new entry
    assert AuditEntry.objects.filter(action="retention.purged").count() == 2


def test_a_dry_run_says_what_would_go_and_changes_nothing(old_and_new):
    assert "Team red: would purge 2 messages" in purge("--dry-run")
    assert not Message.objects.exclude(purged_at=None).exists()
    assert not AuditEntry.objects.filter(action="retention.purged").exists()


def test_retention_is_off_by_default_and_a_team_may_keep_longer_or_for_ever(alice, settings):
    old_id, _ = converse(alice, f"Kept {nonce()}")
    age(old_id, 400)
    settings.PORTAL_RETENTION_DAYS = 0
    assert "Retention is off" in purge()
    red = team_named("Red")
    red.retention_days = 500
    red.save()
    settings.PORTAL_RETENTION_DAYS = 30
    purge()
    assert not Message.objects.exclude(purged_at=None).exists()  # Red keeps 500 days
    red.retention_days = 0
    red.save()
    purge()
    assert not Message.objects.exclude(purged_at=None).exists()  # 0: for ever
    red.retention_days = 365
    red.save()
    purge()
    assert Message.objects.filter(conversation_id=old_id, purged_at__isnull=False).count() == 2


def test_a_legal_hold_on_the_team_or_the_person_stops_the_purge_until_released(old_and_new, alice, bob, admin_user, client):
    old_id = old_and_new[0]
    bob_id, _ = converse(bob, f"Bob's {nonce()}")
    age(bob_id, 40)
    client.force_login(admin_user)

    response = client.post("/admin/audit/legalhold/add/", {"team": team_named("Red").pk, "reason": "Case 12"})
    assert response.status_code == 302
    purge()
    assert not Message.objects.exclude(purged_at=None).exists()

    hold = LegalHold.objects.get()
    client.post("/admin/audit/legalhold/", {"action": "release", "_selected_action": [hold.pk]})
    client.post("/admin/audit/legalhold/add/", {"user": alice.pk, "reason": "Case 13: alice only"})
    purge()
    assert not Message.objects.filter(conversation_id=old_id).exclude(purged_at=None).exists()  # alice held
    assert Message.objects.filter(conversation_id=bob_id, purged_at__isnull=False).count() == 2  # bob not

    actions = list(AuditEntry.objects.filter(action__startswith="legal_hold.").order_by("seq").values_list("action", "target", "user"))
    assert actions == [
        ("legal_hold.set", "team:red", admin_user.pk), ("legal_hold.released", "team:red", admin_user.pk),
        ("legal_hold.set", "user:alice", admin_user.pk),
    ]
    hold.refresh_from_db()
    assert hold.released_by == admin_user and hold.released_at is not None


def test_a_hold_names_a_team_or_a_person_not_both(admin_user, client, alice):
    client.force_login(admin_user)
    page = client.post("/admin/audit/legalhold/add/", {"team": team_named("Red").pk, "user": alice.pk, "reason": "x"})
    assert "Choose either a team or a person" in page.content.decode()
    assert not LegalHold.objects.exists()
