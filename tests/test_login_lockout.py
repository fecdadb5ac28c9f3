"""Repeated wrong passwords: slowed down, then the account and the address are locked for a while
(the right password too), with a sentence on the log-in page; a superuser can unlock."""

import httpx
import pytest
from django.core.management import call_command
from django.test import Client, override_settings

from tests.helpers import launch_portal

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed log-ins for this account or from this address: log-in is locked for 15 minutes."


def log_in(client, username, password, address="127.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


@override_settings(PORTAL_LOGIN_FAILURE_LIMIT=3)
def test_wrong_passwords_lock_the_account_and_then_the_right_one_is_refused_too(client, alice):
    for _ in range(2):
        response = log_in(client, "alice", "wrong")
        assert response.status_code == 200 and b"Please enter a correct username and password" in response.content
    locked = log_in(client, "alice", "wrong")
    assert locked.status_code == 429 and LOCKED in locked.content.decode()
    refused = log_in(client, "alice", "alice-password-1")
    assert refused.status_code == 429 and LOCKED in refused.content.decode()
    assert client.get("/").status_code == 302  # not logged in


@override_settings(PORTAL_LOGIN_FAILURE_LIMIT=3)
def test_an_account_is_locked_whatever_address_the_guesses_come_from(client, alice):
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        log_in(client, "alice", "wrong", address)
    assert log_in(client, "alice", "alice-password-1", "10.0.0.4").status_code == 429


@override_settings(PORTAL_LOGIN_FAILURE_LIMIT=3)
def test_an_address_guessing_many_accounts_is_locked_for_every_account(client, alice):
    for name in ("root", "admin", "test"):
        log_in(client, name, "wrong", "10.0.0.9")
    assert log_in(client, "alice", "alice-password-1", "10.0.0.9").status_code == 429
    assert log_in(client, "alice", "alice-password-1", "10.0.0.10").status_code == 302


@override_settings(PORTAL_LOGIN_FAILURE_LIMIT=3)
def test_a_superuser_unlocks_an_account_with_the_command(client, alice):
    for _ in range(3):
        log_in(client, "alice", "wrong")
    assert log_in(client, "alice", "alice-password-1").status_code == 429
    call_command("axes_reset_username", "alice")
    assert log_in(client, "alice", "alice-password-1").status_code == 302


@override_settings(PORTAL_LOGIN_FAILURE_LIMIT=3)
def test_a_superuser_unlocks_an_account_in_the_admin(client, alice, django_user_model):
    for _ in range(3):
        log_in(client, "alice", "wrong", "10.0.0.5")
    admin = django_user_model.objects.create_superuser("root-admin", password="root-admin-password-1")
    staff = Client()
    staff.force_login(admin)
    listing = staff.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and b"alice" in listing.content
    from axes.models import AccessAttempt

    attempt = AccessAttempt.objects.get(username="alice")
    deleted = staff.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert log_in(client, "alice", "alice-password-1", "10.0.0.5").status_code == 302


@pytest.mark.django_db(transaction=True)
def test_a_lockout_holds_in_every_server_process(alice):
    """Guesses against one runportal process lock the account in another (the attempts are in Postgres)."""
    first = launch_portal("--no-admin", PORTAL_LOGIN_FAILURE_LIMIT="4")
    try:
        second = launch_portal("--no-admin", PORTAL_LOGIN_FAILURE_LIMIT="4")
    except BaseException:
        first.stop()
        raise
    try:
        with httpx.Client(base_url=first.url) as guesser:
            token = guesser.get("/accounts/login/").cookies["csrftoken"]
            for _ in range(4):
                last = guesser.post(
                    "/accounts/login/", data={"username": "alice", "password": "wrong", "csrfmiddlewaretoken": token},
                    headers={"Referer": first.url + "/accounts/login/"}, timeout=30,
                )
            assert last.status_code == 429
        with httpx.Client(base_url=second.url) as owner:
            token = owner.get("/accounts/login/").cookies["csrftoken"]
            refused = owner.post(
                "/accounts/login/", data={"username": "alice", "password": "alice-password-1", "csrfmiddlewaretoken": token},
                headers={"Referer": second.url + "/accounts/login/"},
            )
            assert refused.status_code == 429 and "log-in is locked for 15 minutes" in refused.text
    finally:
        first.stop()
        second.stop()
