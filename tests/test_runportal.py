"""`manage.py runportal` from the outside: what it prints, who can log in, how it stops."""

import json

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async

from chat.models import Message
from tests.helpers import launch_portal, nonce, session_cookie_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_says_where_to_go_first_and_the_admin_can_log_in(portal):
    first_line = portal.output.splitlines()[0]
    assert first_line == f"Starting Gateway Portal at {portal.url} …"
    assert f"Gateway Portal is running at {portal.url}" in portal.output
    assert "the bundled emulator at http://127.0.0.1:" in portal.output
    with httpx.Client(base_url=portal.url, timeout=30) as client:  # a password check is slow on a busy machine
        login = client.get("/accounts/login/")
        response = client.post(
            "/accounts/login/",
            data={"username": "admin", "password": "admin-password-1", "csrfmiddlewaretoken": login.cookies["csrftoken"]},
            headers={"Referer": portal.url + "/accounts/login/"},
        )
        assert response.status_code == 302 and response.headers["location"] == "/"
        assert client.get("/admin/audit/auditentry/").status_code == 200


def test_an_admin_nobody_can_log_in_to_does_not_stop_the_first_admin(django_user_model):
    # What the benchmark leaves behind (bench-staff has no password).
    django_user_model.objects.create(username=f"bench-staff-{nonce()}", is_staff=True, is_superuser=True)
    output = launch_portal().stop()
    assert "Log in as “admin” with the password in PORTAL_ADMIN_PASSWORD." in output


async def test_sigterm_mid_answer_stores_the_partial_answer_as_cancelled(portal, alice):
    cookie = await sync_to_async(session_cookie_for)(alice)
    async with websockets.connect(
        portal.url.replace("http", "ws") + "/ws/chat/",
        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": portal.url},
    ) as ws:
        await ws.send(json.dumps({"type": "send", "conversation": None, "content": f"Long {nonce()} [[emulator tokens=3000 rate=50]]", "max_tokens": 4096}))
        started = json.loads(await ws.recv())
        shown = ""
        while len(shown.split()) < 5:
            frame = json.loads(await ws.recv())
            shown += frame.get("text", "")
        output = await sync_to_async(portal.stop)()
    assert "Gateway Portal stopped." in output
    message = await sync_to_async(Message.objects.get)(pk=started["message"])
    assert message.status == "cancelled"
    assert message.content.startswith(shown) and len(message.content.split()) < 3000


@pytest.mark.parametrize(
    "payload, code",
    [
        ("x" * (5 * 1024 * 1024), 1009),  # 5 MB: over the 1 MiB limit (chat/consumers.py)
        (b"\xff\xfe not UTF-8", 1007),
    ],
)
async def test_a_frame_too_big_or_not_utf8_closes_with_a_code_and_a_reason(portal, alice, payload, code):
    cookie = await sync_to_async(session_cookie_for)(alice)
    url = portal.url.replace("http", "ws") + "/ws/chat/"
    headers = {"Cookie": f"sessionid={cookie}", "Origin": portal.url}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        try:
            await ws.send(payload, text=True)
            await ws.recv()
        except websockets.ConnectionClosed:
            pass
        await ws.wait_closed()
        assert ws.close_code == code and ws.close_reason
    async with websockets.connect(url, additional_headers=headers) as ws:  # the portal serves on
        await ws.send(json.dumps({"type": "send", "conversation": None, "content": f"after {nonce()}"}))
        while (frame := json.loads(await ws.recv()))["type"] not in ("done", "error"):
            pass
        assert frame["type"] == "done"
