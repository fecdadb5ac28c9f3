"""The chat pages over HTTP: login required, own conversations only."""

import json

import pytest

from chat.models import Conversation, Message
from tests.helpers import team_named

pytestmark = pytest.mark.django_db


def test_the_chat_page_asks_anonymous_visitors_to_log_in(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_login_page_logs_a_user_in(client, alice):
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and b'name="username"' in page.content and b'name="password"' in page.content
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_a_stored_conversation_is_shown_to_its_owner(client, alice):
    conversation = Conversation.objects.create(user=alice, team=team_named("Red"), title="About OAuth")
    Message.objects.create(conversation=conversation, team=conversation.team, role="user", content="What is OAuth?")
    Message.objects.create(conversation=conversation, team=conversation.team, role="assistant", content="<script>alert(1)</script> **OAuth** is…", model_id="gpt-4")
    client.force_login(alice)
    page = client.get(f"/c/{conversation.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "About OAuth" in html
    data = json.loads(html.split('id="chat-data" type="application/json">', 1)[1].split("</script>", 1)[0])
    assert [m["content"] for m in data["messages"]] == ["What is OAuth?", "<script>alert(1)</script> **OAuth** is…"]
    assert "<script>alert(1)</script>" not in html  # model output is never raw HTML in the page


def test_another_users_conversation_is_not_found(client, alice, bob):
    conversation = Conversation.objects.create(user=alice, team=team_named("Red"), title="Private plans")
    client.force_login(bob)
    response = client.get(f"/c/{conversation.pk}/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "We couldn’t find that page" in html and "Private plans" not in html
    assert "Log out" in html  # the portal's own header: the page is the base template's
    assert b"Private plans" not in client.get("/").content


def test_the_error_page_renders_without_a_request_context(rf):
    from django.views.defaults import server_error

    response = server_error(rf.get("/"))
    assert response.status_code == 500
    html = response.content.decode()
    assert "Something went wrong on our side" in html and "Log out" not in html


def test_the_sidebar_lists_only_my_conversations_newest_first(client, alice, bob):
    Conversation.objects.create(user=alice, team=team_named("Red"), title="Older question")
    Conversation.objects.create(user=alice, team=team_named("Red"), title="Newer question")
    Conversation.objects.create(user=bob, team=team_named("Red"), title="Bob's question")
    client.force_login(alice)
    html = client.get("/").content.decode()
    assert html.index("Newer question") < html.index("Older question")
    assert "Bob&#x27;s question" not in html and "Bob's question" not in html


def test_pages_forbid_inline_and_foreign_scripts(client, alice):
    client.force_login(alice)
    policy = client.get("/")["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "img-src 'self' data:" in policy and "frame-ancestors 'none'" in policy


def test_the_admin_still_works_under_the_policy(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", password="root-password-1")
    client.force_login(admin)
    assert client.get("/admin/audit/auditentry/").status_code == 200
    assert client.get("/admin/chat/conversation/").status_code == 200
