"""Log-ins, failed log-ins, log-outs and sharing in the audit trail; the user admin keeps people
with a trail (deactivate, not delete)."""


import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings

from audit.models import AuditEntry
from chat.models import Conversation
from tests.helpers import team_named

pytestmark = pytest.mark.django_db

WRONG = "Tr0ub4dor&3-not-hers"


def log_in(client, username, password, address="10.1.2.3"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def the_row(entry) -> str:
    """Everything stored for an entry, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(e)::text FROM audit_auditentry e WHERE id = %s", [entry.pk])
        return cursor.fetchone()[0]


def test_a_log_in_and_a_log_out_are_audited_with_the_address(client, alice):
    assert log_in(client, "alice", "alice-password-1").status_code == 302
    client.post("/accounts/logout/", REMOTE_ADDR="10.1.2.3")
    login, logout = AuditEntry.objects.filter(action__in=["auth.login", "auth.logout"]).order_by("seq")
    assert (login.action, login.user, login.team, login.target) == ("auth.login", alice, team_named("Red"), "user:alice")
    assert login.details == {"ip": "10.1.2.3"}
    assert (logout.action, logout.user, logout.details) == ("auth.logout", alice, {"ip": "10.1.2.3"})


def test_a_failed_log_in_keeps_the_name_tried_and_never_the_password(client, alice):
    log_in(client, "alice", WRONG)
    log_in(client, "nobody-here", WRONG, address="10.9.9.9")
    known, unknown = AuditEntry.objects.filter(action="auth.login_failed").order_by("seq")
    assert (known.user, known.target, known.details) == (alice, "user:alice", {"username": "alice", "ip": "10.1.2.3"})
    assert (unknown.user, unknown.team, unknown.details) == (None, None, {"username": "nobody-here", "ip": "10.9.9.9"})
    for entry in (known, unknown):
        row = the_row(entry)
        assert WRONG not in row and "Tr0ub4dor" not in row and "password" not in row
    assert not AuditEntry.objects.filter(action="auth.login").exists()


@override_settings(PORTAL_LOGIN_FAILURE_LIMIT=2)
def test_lockouts_still_hold_and_a_locked_out_attempt_is_audited_as_such(client, alice):
    log_in(client, "alice", WRONG)
    assert log_in(client, "alice", WRONG).status_code == 429
    assert log_in(client, "alice", "alice-password-1").status_code == 429
    failed = list(AuditEntry.objects.filter(action="auth.login_failed").order_by("seq"))
    assert len(failed) == 3 and failed[-1].details.get("locked_out") is True and failed[-1].user == alice
    assert not AuditEntry.objects.filter(action="auth.login").exists()
    assert "intact: 3 entries" in verify()


def verify() -> str:
    from io import StringIO

    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


def test_sharing_and_unsharing_are_audited_and_asking_twice_records_once(alice):
    conversation = Conversation.objects.create(user=alice, team=team_named("Red"), title="Plan")
    client = Client()
    client.force_login(alice)
    url = f"/c/{conversation.pk}/share/"
    client.post(url, {"shared": "1"})
    client.post(url, {"shared": "1"})
    assert Conversation.objects.get(pk=conversation.pk).shared
    client.post(url, {"shared": "0"})
    assert not Conversation.objects.get(pk=conversation.pk).shared
    shares = list(AuditEntry.objects.filter(action__startswith="conversation.").order_by("seq"))
    assert [e.action for e in shares] == ["conversation.shared", "conversation.unshared"]
    for entry in shares:
        assert (entry.user, entry.team, entry.target, entry.conversation_id) == (
            alice, team_named("Red"), f"conversation:{conversation.pk}", conversation.pk)


def test_the_user_admin_refuses_to_delete_a_person_with_audit_entries_and_says_deactivate(admin_client, alice, bob):
    Client().force_login(alice)  # alice now has an audit entry (her log-in); bob has none
    response = admin_client.post(f"/admin/auth/user/{alice.pk}/delete/", {"post": "yes"}, follow=True)
    page = response.content.decode()
    assert "This person (alice) has audit entries, so they cannot be deleted: the trail is kept whole. Deactivate them instead" in page
    assert type(alice).objects.filter(pk=alice.pk).exists()
    # The bulk action says the same, without listing the entries.
    page = admin_client.post(
        "/admin/auth/user/", {"action": "delete_selected", "_selected_action": [alice.pk, bob.pk]}
    ).content.decode()
    assert "This person (alice) has audit entries" in page and "AUD-" not in page
    # Someone with no trail can still be deleted; the user list itself still works.
    page = admin_client.post(f"/admin/auth/user/{bob.pk}/delete/", {"post": "yes"}, follow=True).content.decode()
    assert not type(bob).objects.filter(pk=bob.pk).exists()
    assert admin_client.get("/admin/auth/user/").status_code == 200
    assert "Staff status" in admin_client.get(f"/admin/auth/user/{alice.pk}/change/").content.decode()
