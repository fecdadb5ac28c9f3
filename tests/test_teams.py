"""Teams: everyone is in one, questions are asked for one, and conversations can be shared with it."""

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from audit.models import AuditEntry, UsageRecord
from chat.models import Conversation, Message
from gateway_portal.models import Membership
from tests.helpers import nonce, team_named

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(socket, content, **extra):
    await socket.send(**{"type": "send", "conversation": None, "content": content, "model": "gpt-4", **extra})
    return await socket.receive_until("done", "error")


def test_a_person_created_without_a_team_joins_the_default_team(django_user_model):
    call_command("createsuperuser", "--noinput", username="root", email="root@example.com", verbosity=0)
    root = django_user_model.objects.get(username="root")
    assert [m.team.slug for m in Membership.objects.filter(user=root)] == ["everyone"]


async def test_a_question_is_asked_for_the_persons_team_and_every_record_carries_it(alice, open_socket):
    socket = await open_socket(alice)
    frames = await ask(socket, f"Team work {nonce()}")
    request_id = frames[0]["request_id"]
    red = await sync_to_async(team_named)("Red")
    conversation = await Conversation.objects.aget(pk=frames[0]["conversation"])
    assert conversation.team_id == red.pk
    assert {m.team_id async for m in Message.objects.filter(conversation=conversation)} == {red.pk}
    assert (await AuditEntry.objects.aget(request_id=request_id)).team_id == red.pk
    assert (await UsageRecord.objects.aget(request_id=request_id)).team_id == red.pk


def test_one_team_shows_no_picker_and_several_show_one_that_remembers(client, alice):
    client.force_login(alice)
    assert "New chats for" not in client.get("/").content.decode()

    Membership.objects.create(user=alice, team=team_named("Green"))
    page = client.get("/").content.decode()
    assert "New chats for" in page and ">Green</option>" in page
    green = team_named("Green")
    response = client.post("/team/", {"team": green.pk}, follow=True)
    assert "New questions are asked for Green." in response.content.decode()
    assert f'<option value="{green.pk}" selected>' in client.get("/").content.decode()


def test_picking_a_team_you_are_not_in_changes_nothing(client, alice, charlie):
    client.force_login(alice)
    blue = team_named("Blue")
    response = client.post("/team/", {"team": blue.pk}, follow=True)
    assert "You are not a member of that team." in response.content.decode()
    response = client.post("/team/", {"team": "not a number"}, follow=True)
    assert "You are not a member of that team." in response.content.decode()


async def test_a_question_for_a_team_you_left_is_refused(alice, open_socket):
    socket = await open_socket(alice)
    blue = await sync_to_async(team_named)("Blue")
    frames = await ask(socket, "Let me in", team=blue.pk)
    assert frames[-1]["code"] == "not_found" and frames[-1]["detail"] == "You are not a member of that team. Pick one of yours."
    await Membership.objects.filter(user=alice).adelete()
    frames = await ask(await open_socket(alice), "Anyone?")
    assert frames[-1]["code"] == "not_found" and "not in any team" in frames[-1]["detail"]


async def test_a_shared_conversation_is_read_only_for_teammates_hidden_from_outsiders_and_unsharing_is_immediate(
    alice, bob, charlie, open_socket
):
    from django.test import AsyncClient

    frames = await ask(await open_socket(alice), f"Our plan {nonce()}")
    conversation_id, answer_id = frames[0]["conversation"], frames[0]["message"]
    owner, teammate, outsider = AsyncClient(), AsyncClient(), AsyncClient()
    for client, person in ((owner, alice), (teammate, bob), (outsider, charlie)):
        await client.aforce_login(person)
    url = f"/c/{conversation_id}/"

    assert (await teammate.get(url)).status_code == 404  # not shared yet
    response = await owner.post(url + "share/", {"shared": "1"}, follow=True)
    assert "Shared with Red" in response.content.decode()

    sidebar = (await teammate.get("/")).content.decode()
    assert "Shared with the team" in sidebar and "Our plan" in sidebar
    page = (await teammate.get(url)).content.decode()
    assert "Shared by alice with Red · read only" in page and "Our plan" in page
    assert (await outsider.get(url)).status_code == 404
    assert "Our plan" not in (await outsider.get("/")).content.decode()

    bobs_socket = await open_socket(bob)
    await bobs_socket.send(type="resume", message=answer_id)
    assert (await bobs_socket.receive())["type"] == "done"  # may read the end of the answer
    frames = await ask(bobs_socket, "Can I add to it?", conversation=conversation_id)
    assert frames[-1]["code"] == "not_found"  # may not write in it
    assert (await teammate.post(url + "share/", {"shared": "0"})).status_code == 404  # nor unshare it

    await owner.post(url + "share/", {"shared": "0"})
    assert (await teammate.get(url)).status_code == 404
    await bobs_socket.send(type="resume", message=answer_id)
    assert (await bobs_socket.receive())["code"] == "not_found"

