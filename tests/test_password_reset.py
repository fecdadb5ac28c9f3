"""Password reset is offered only when the portal can send mail; otherwise the log-in page says
whom to ask."""

import re

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_without_mail_there_is_no_password_reset_and_the_login_page_says_whom_to_ask(client, mailoutbox):
    page = client.get("/accounts/login/")
    assert b"Forgot your password? Ask your portal administrator to reset it." in page.content
    assert b"/accounts/password_reset/" not in page.content
    assert client.get("/accounts/password_reset/").status_code == 404
    assert client.post("/accounts/password_reset/", {"email": "alice@example.com"}).status_code == 404
    assert mailoutbox == []


@override_settings(PORTAL_PASSWORD_HELP="Lost your password? Write to it-help@example.com.")
def test_the_sentence_on_the_login_page_is_a_setting(client):
    assert b"Lost your password? Write to it-help@example.com." in client.get("/accounts/login/").content


@override_settings(PORTAL_PASSWORD_RESET=True)
def test_with_mail_the_login_page_offers_a_reset_and_the_mail_carries_a_working_link(client, alice, mailoutbox):
    alice.email = "alice@example.com"
    alice.save()
    page = client.get("/accounts/login/")
    assert b'href="/accounts/password_reset/"' in page.content
    assert b"Ask your portal administrator" not in page.content
    form = client.get("/accounts/password_reset/")
    assert b"Reset your password" in form.content and b"Django administration" not in form.content
    response = client.post("/accounts/password_reset/", {"email": "alice@example.com"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password_reset/done/"
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["alice@example.com"]
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", mailoutbox[0].body).group(1)
    form = client.get(link, follow=True)
    assert form.status_code == 200 and b"new_password1" in form.content
    done = client.post(form.redirect_chain[-1][0], {"new_password1": "a-new-password-77", "new_password2": "a-new-password-77"})
    assert done.status_code == 302
    assert b"Your password is set" in client.get(done["Location"]).content
    assert client.post("/accounts/login/", {"username": "alice", "password": "a-new-password-77"}).status_code == 302
