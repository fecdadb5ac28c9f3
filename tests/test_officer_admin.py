"""The compliance officer's admin: the audit list's filters and searches, the transcript of a
conversation (audited, 404 for anyone else), the streamed CSV export (audited), and nobody
changing anything. Real completions through the executor and the emulator make the data.
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.utils.html import escape
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.management import call_command

from audit.admin import CappedCountPaginator
from audit.models import AuditEntry, LegalHold, UsageRecord
from chat.actions import ConversationTranscript
from chat.completion import API, BROWSER, CompletionRequest, Done, Started
from chat.executor import ChatExecutor
from chat.models import Conversation, Message
from gateway_portal.models import current_team
from tests.helpers import make_person, nonce, team_named

pytestmark = pytest.mark.django_db(transaction=True)

AUDIT_LIST = "/admin/audit/auditentry/"


def converse(user, content: str, *, client: str = BROWSER, conversation_id: int | None = None):
    """One real completion into a conversation (a new one unless given): (conversation id, answer)."""

    team = current_team(user)

    async def run():
        request = CompletionRequest(
            user=user, team=team, messages=[{"role": "user", "content": content}],
            model_id="gpt-4o", temperature=0.5, max_tokens=128, client=client,
        )
        return [event async for event in ChatExecutor().stream(request, ConversationTranscript(conversation_id))]

    events = async_to_sync(run)()
    assert isinstance(events[-1], Done), events[-1]
    started = next(event for event in events if isinstance(event, Started))
    return started.conversation_id, Message.objects.get(pk=started.message_id)


def count_shown(page: str) -> int:
    found = re.search(r"(\d+) audit entr(?:y|ies)", page)
    assert found, "the list says how many entries it shows"
    return int(found.group(1))


@pytest.fixture
def officer(client, olivia):
    client.force_login(olivia)
    return client


@pytest.fixture
def a_filtered_answer(alice):
    """alice's conversation in Red: a question, then an answer whose <think> block was filtered out."""
    conversation_id, answer = converse(alice, f"[[emulator think]] Tell me about audits {nonce()}")
    return Conversation.objects.get(pk=conversation_id), answer


# --- The list: filters and exact searches -----------------------------------------------------


def test_each_filter_of_the_audit_list_shows_exactly_its_entries(officer, alice, bob, a_filtered_answer):
    call_command("seed_usage", rows=120)
    converse(bob, f"From a program {nonce()}", client=API)
    expectations = {
        "action=completion.succeeded": AuditEntry.objects.filter(action="completion.succeeded"),
        "status__exact=error": AuditEntry.objects.filter(status="error"),
        "model=gpt-4o": AuditEntry.objects.filter(model_id="gpt-4o"),
        "client=api": AuditEntry.objects.filter(details__client="api"),
        "client=browser": AuditEntry.objects.filter(details__client="browser"),
        "fired=think_blocks": AuditEntry.objects.filter(filters__contains=[{"filter": "think_blocks"}]),
        "fired=any": AuditEntry.objects.filter(safety_filtered=True),
        "user=alice": AuditEntry.objects.filter(user=alice),
        f"team={team_named('Red').pk}": AuditEntry.objects.filter(team=team_named("Red")),
        "user=bob&client=api": AuditEntry.objects.filter(user=bob, details__client="api"),
    }
    assert expectations["client=api"].count() == 1 and expectations["user=alice"].count() == 1
    for query, entries in expectations.items():
        page = officer.get(f"{AUDIT_LIST}?{query}").content.decode()
        assert count_shown(page) == entries.count(), query
        for entry in entries[:5]:
            assert entry.audit_id in page, query


def test_a_search_finds_an_entry_by_audit_id_request_id_user_name_or_target(officer, alice, a_filtered_answer):
    call_command("seed_usage", rows=50)
    conversation, answer = a_filtered_answer
    entry = AuditEntry.objects.get(message_id=answer.pk)
    officer.get(f"/admin/audit/auditentry/transcript/{conversation.pk}/")  # a transcript.viewed entry targets it
    viewed = AuditEntry.objects.get(action="transcript.viewed")
    for term, expected in [
        (entry.audit_id, {entry.audit_id}), (entry.request_id, {entry.audit_id}), ("alice", {entry.audit_id}),
        (f"conversation:{conversation.pk}", {viewed.audit_id}),
        # What the officer did: her log-in and her opening of the transcript.
        ("olivia", set(AuditEntry.objects.filter(user__username="olivia").values_list("audit_id", flat=True))),
    ]:
        page = officer.get(AUDIT_LIST, {"q": term}).content.decode()
        assert count_shown(page) == len(expected), term
        assert all(audit_id in page for audit_id in expected), term


def test_the_unfiltered_list_counts_no_further_than_its_cap(officer, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "CAP", 100)
    call_command("seed_usage", rows=130)
    page = officer.get(AUDIT_LIST).content.decode()
    assert "more than 100 audit entries" in page
    errors = AuditEntry.objects.filter(status="error").count()
    assert errors < 100 and count_shown(officer.get(AUDIT_LIST, {"status__exact": "error"}).content.decode()) == errors


# --- The transcript ---------------------------------------------------------------------------


def test_an_officer_opens_a_transcript_from_its_audit_entry_and_the_opening_is_audited(officer, olivia, a_filtered_answer):
    conversation, answer = a_filtered_answer
    entry = AuditEntry.objects.get(message_id=answer.pk)
    listing = officer.get(AUDIT_LIST, {"q": entry.audit_id}).content.decode()
    url = f"/admin/audit/auditentry/transcript/{conversation.pk}/"
    assert f'href="{url}"' in listing

    page = officer.get(url).content.decode()
    question = Message.objects.get(conversation=conversation, role="user")
    assert question.content.split("]] ")[1] in page and escape(answer.content.strip()[:40]) in page
    assert "think_blocks × 1" in page and entry.audit_id in page and entry.answer_sha256 in page
    assert f"{answer.stats['usage']['output_tokens']} out" in page and f"total {answer.stats['latency_ms']} ms" in page
    viewed = AuditEntry.objects.get(action="transcript.viewed")
    assert (viewed.user, viewed.team, viewed.target, viewed.conversation_id) == (
        olivia, team_named("Red"), f"conversation:{conversation.pk}", conversation.pk,
    )


def test_the_transcript_shows_what_the_upstream_sent_beside_what_the_person_saw(officer, a_filtered_answer):
    conversation, answer = a_filtered_answer
    if not any(field.name == "upstream_text" for field in Message._meta.get_fields()):
        pytest.skip("Message.upstream_text is not in this build yet")
    answer.refresh_from_db()
    assert answer.upstream_text and "<think>" in answer.upstream_text
    page = officer.get(f"/admin/audit/auditentry/transcript/{conversation.pk}/").content.decode()
    assert "What the upstream sent" in page and "&lt;think&gt;" in page


def test_a_conversation_in_the_admin_links_to_its_transcript(officer, a_filtered_answer):
    conversation, _ = a_filtered_answer
    page = officer.get("/admin/chat/conversation/").content.decode()
    assert f'href="/admin/audit/auditentry/transcript/{conversation.pk}/"' in page


def test_the_transcript_checks_a_brought_text_against_the_answers_hash(officer, a_filtered_answer):
    conversation, answer = a_filtered_answer
    url = f"/admin/audit/auditentry/transcript/{conversation.pk}/"
    same = officer.post(url, {"message": answer.pk, "text": answer.content}).content.decode()
    assert "The text matches this answer's hash" in same
    from_a_browser = officer.post(url, {"message": answer.pk, "text": answer.content.replace("\n", "\r\n")}).content.decode()
    assert "The text matches this answer's hash" in from_a_browser  # a textarea sends CRLF line breaks
    changed = officer.post(url, {"message": answer.pk, "text": answer.content + " "}).content.decode()
    assert "does not match this answer's hash" in changed
    assert AuditEntry.objects.filter(action="transcript.viewed").count() == 3


def test_nobody_but_an_officer_opens_a_transcript(client, alice, bob, charlie, a_filtered_answer):
    conversation, _ = a_filtered_answer
    url = f"/admin/audit/auditentry/transcript/{conversation.pk}/"
    for person in (alice, bob, charlie):  # the owner, a teammate, an outsider: no admin at all
        client.force_login(person)
        response = client.get(url)
        assert response.status_code == 302 and response.headers["Location"].startswith("/admin/login/")
    staff = make_person("sam")
    staff.is_staff = True
    staff.save()
    client.force_login(staff)  # staff, but not a compliance officer
    assert client.get(url).status_code == 404
    assert client.get(f"{AUDIT_LIST}export.csv").status_code in (403, 404)
    assert not AuditEntry.objects.filter(action__in=["transcript.viewed", "export.created"]).exists()


def test_a_transcript_that_does_not_exist_is_a_404_and_a_deleted_one_still_lists_its_entries(officer, alice, a_filtered_answer):
    assert officer.get("/admin/audit/auditentry/transcript/987654/").status_code == 404
    conversation, answer = a_filtered_answer
    entry = AuditEntry.objects.get(message_id=answer.pk)
    conversation_id = conversation.pk
    conversation.delete()
    page = officer.get(f"/admin/audit/auditentry/transcript/{conversation_id}/").content.decode()
    assert "deleted by its owner" in page and entry.audit_id in page


# --- The export -------------------------------------------------------------------------------


def read_csv(response) -> list[dict]:
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_the_export_streams_the_filtered_selection_and_is_audited(officer, olivia):
    call_command("seed_usage", rows=400)
    query = "status__exact=success&model=gpt-4&o=-1"
    response = officer.get(f"{AUDIT_LIST}export.csv?{query}&p=2")
    assert response["Content-Type"].startswith("text/csv")
    selection = AuditEntry.objects.filter(status="success", model_id="gpt-4", action__startswith="completion.")
    assert response["X-Export-Rows"] == str(selection.count())
    rows = read_csv(response)
    assert [row["audit_id"] for row in rows] == list(selection.order_by("-timestamp", "-pk").values_list("audit_id", flat=True))
    first = selection.order_by("-timestamp", "-pk").select_related("user", "team").first()
    assert rows[0]["user"] == first.user.username and rows[0]["hash"] == first.hash and rows[0]["client"] == "command"

    export = AuditEntry.objects.get(action="export.created")
    assert export.user == olivia and export.target == "export:auditentry"
    assert export.details == {"list": "auditentry", "filter": query, "rows": len(rows), "rows_counted": "exact, at the start"}


def test_the_usage_export_follows_the_search(officer):
    call_command("seed_usage", rows=200)
    person = get_user_model().objects.get(username="seed-3")
    rows = read_csv(officer.get("/admin/audit/usagerecord/export.csv", {"q": "seed-3"}))
    assert len(rows) == UsageRecord.objects.filter(user=person).count() > 0
    assert {row["user"] for row in rows} == {"seed-3"}
    assert AuditEntry.objects.get(action="export.created").details["rows"] == len(rows)


def test_the_list_offers_the_export_of_its_current_selection(officer):
    page = officer.get(AUDIT_LIST, {"status__exact": "error", "p": "1"}).content.decode()
    assert 'href="/admin/audit/auditentry/export.csv?status__exact=error"' in page
    assert "/static/audit/export.js" in page


async def test_under_asgi_the_export_is_an_asynchronous_stream(async_client, olivia):
    from asgiref.sync import sync_to_async

    await sync_to_async(call_command)("seed_usage", rows=1200)
    await async_client.aforce_login(olivia)
    expected = await AuditEntry.objects.acount()  # the seeded entries and olivia's log-in
    response = await async_client.get(f"{AUDIT_LIST}export.csv")
    assert response.streaming and response.is_async
    pieces = [piece async for piece in response.streaming_content]
    assert len(pieces) > 2  # sent as it was read, not as one block
    rows = list(csv.DictReader(io.StringIO(b"".join(pieces).decode())))
    assert len(rows) == expected == int(response["X-Export-Rows"])


# --- Nobody changes anything ------------------------------------------------------------------


def test_an_officer_can_read_but_not_add_change_or_delete(officer, alice, a_filtered_answer):
    conversation, answer = a_filtered_answer
    entry = AuditEntry.objects.get(message_id=answer.pk)
    assert officer.get(f"/admin/audit/auditentry/{entry.pk}/change/").status_code == 200
    assert officer.get(f"/admin/chat/conversation/{conversation.pk}/change/").status_code == 200
    for url in (
        f"/admin/audit/auditentry/{entry.pk}/delete/", f"/admin/chat/conversation/{conversation.pk}/delete/",
        f"/admin/chat/message/{answer.pk}/delete/", "/admin/audit/auditentry/add/", "/admin/audit/legalhold/add/",
        "/admin/chat/conversation/add/",
    ):
        assert officer.post(url, {"post": "yes", "reason": "x", "user": alice.pk}).status_code == 403, url
    officer.post(f"/admin/chat/conversation/{conversation.pk}/change/", {"title": "changed", "shared": "on"})
    conversation.refresh_from_db()
    assert conversation.title != "changed" and not conversation.shared
    assert AuditEntry.objects.filter(pk=entry.pk).exists() and not LegalHold.objects.exists()


def test_members_and_team_admins_have_no_admin_at_all(client, alice):
    from gateway_portal.models import Membership

    Membership.objects.filter(user=alice).update(role=Membership.Role.ADMIN)  # a team admin of Red
    client.force_login(alice)
    for url in ("/admin/", AUDIT_LIST, f"{AUDIT_LIST}export.csv", "/admin/audit/usagerecord/", "/admin/chat/conversation/",
                "/admin/audit/legalhold/", "/admin/audit/auditentry/transcript/1/"):
        response = client.get(url)
        assert response.status_code == 302 and response.headers["Location"].startswith("/admin/login/"), url
