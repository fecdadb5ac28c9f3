"""PII redaction from the outside: over the chat socket against the emulator (which echoes the
first words of the question), in the stored message, the audit entry and the compliance admin."""

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.test import Client

from audit.models import AuditEntry
from chat.models import Message
from gateway_portal.models import Team
from tests.helpers import nonce

pytestmark = pytest.mark.django_db(transaction=True)

PII_FILTERS = ["think_blocks", "generation_error", "iban", "card", "email", "phone"]
EMAIL, PHONE, CARD = "jane.doe@example.com", "+1 415-555-2671", "4111-1111-1111-1111"


async def ask(socket, content):
    await socket.send(type="send", conversation=None, content=content, model="gpt-4", temperature=0.7, max_tokens=512)
    return await socket.receive_until("done", "error")


def shown(frames) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "delta")


@sync_to_async
def stored(request_id):
    return Message.objects.get(request_id=request_id, role="assistant"), AuditEntry.objects.get(request_id=request_id)


async def test_pii_in_an_answer_arrives_redacted_is_reported_and_the_raw_text_is_kept(alice, olivia, open_socket, settings):
    settings.PORTAL_SAFETY_FILTERS = PII_FILTERS
    socket = await open_socket(alice)
    frames = await ask(socket, f"Mail {EMAIL} call {PHONE}, {nonce()} [[emulator chunk_tokens=1]]")
    text, done = shown(frames), frames[-1]
    assert "[email removed]" in text and "[phone removed]" in text
    # The screen only ever grows, so no part of them in the end means none at any moment.
    assert "jane.doe" not in text and "example.com" not in text and "415" not in text
    assert [f["label"] for f in done["filters"]] == ["1 email removed", "1 phone number removed"]
    assert "upstream_text" not in done and EMAIL not in str(done)

    message, audit = await stored(frames[0]["request_id"])
    assert message.content == text and message.filters == done["filters"]
    assert EMAIL in message.upstream_text and PHONE in message.upstream_text
    assert audit.safety_filtered and [f["filter"] for f in audit.filters] == ["email", "phone"]

    client = Client()
    await sync_to_async(client.force_login)(olivia)
    page = await sync_to_async(client.get)(f"/admin/chat/message/{message.pk}/change/")
    assert page.status_code == 200 and EMAIL in page.content.decode() and "upstream&#x27;s text" in page.content.decode().lower()


async def test_an_answer_the_filters_did_not_change_keeps_no_second_copy(alice, open_socket, settings):
    settings.PORTAL_SAFETY_FILTERS = PII_FILTERS
    socket = await open_socket(alice)
    frames = await ask(socket, f"Tell me about caching {nonce()}")
    message, _ = await stored(frames[0]["request_id"])
    assert frames[-1]["filters"] == [] and message.upstream_text == ""


async def test_a_teams_own_filters_replace_the_portals(alice, charlie, open_socket, settings):
    settings.PORTAL_SAFETY_FILTERS = ["think_blocks", "generation_error"]
    await sync_to_async(Team.objects.filter(slug="red").update)(safety_filters=["email"])
    red = await ask(await open_socket(alice), f"Mail {EMAIL} {nonce()}")
    blue = await ask(await open_socket(charlie), f"Mail {EMAIL} {nonce()}")
    assert EMAIL not in shown(red) and red[-1]["filters"][0]["label"] == "1 email removed"
    assert EMAIL in shown(blue) and blue[-1]["filters"] == []


def test_a_superuser_sets_a_teams_filters_in_the_team_admin(admin_client):
    team = Team.objects.create(name="Payments", slug="payments")
    page = admin_client.get(f"/admin/gateway_portal/team/{team.pk}/change/")
    assert page.status_code == 200 and 'name="safety_filters"' in page.content.decode()
    form = {
        "name": "Payments", "slug": "payments", "safety_filters": "think_blocks,iban,card,email",
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
    }
    assert admin_client.post(f"/admin/gateway_portal/team/{team.pk}/change/", form).status_code == 302
    team.refresh_from_db()
    assert team.safety_filters == ["think_blocks", "iban", "card", "email"]


def test_a_team_filter_list_with_an_unknown_name_is_refused_with_the_names_that_exist():
    team = Team(name="Green", slug="green", safety_filters=["email", "emial"])
    with pytest.raises(ValidationError, match="“emial” is no filter; the filters are think_blocks"):
        team.full_clean()


async def test_a_question_with_pii_is_refused_naming_what_was_found_not_the_data(alice, open_socket, settings):
    settings.PORTAL_SAFETY_FILTERS = PII_FILTERS
    settings.PORTAL_PROMPT_FILTER = "refuse"
    frames = await ask(await open_socket(alice), f"My card {CARD} and {EMAIL}, {nonce()}")
    error = frames[-1]
    assert error["type"] == "error" and error["code"] == "invalid_request"
    assert error["detail"] == (
        "Your message contains a card number and an email, which this portal does not send to the model. "
        "Remove it and send your message again."
    )
    assert await sync_to_async(Message.objects.filter(conversation__user=alice).count)() == 0


async def test_a_question_with_pii_is_sent_and_stored_redacted(alice, open_socket, settings):
    settings.PORTAL_SAFETY_FILTERS = PII_FILTERS
    settings.PORTAL_PROMPT_FILTER = "redact"
    frames = await ask(await open_socket(alice), f"My card {CARD}, {nonce()}")
    assert frames[-1]["type"] == "done" and "card removed" in shown(frames)  # the emulator echoes what it got
    question = await sync_to_async(Message.objects.get)(request_id=frames[0]["request_id"], role="user")
    assert question.content.startswith("My card [card removed], ")
