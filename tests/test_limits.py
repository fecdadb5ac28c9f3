"""The limits (chat/quotas.py) from the outside: a message over a limit gets an error frame naming
the limit, its value and when to send again, and an audit entry; token limits reserve before the
call and settle after, so concurrent answers cannot overspend; a dead process's leases expire;
long conversations send the newest messages that fit; the team's limits page."""

import asyncio
import json
import time

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.test import Client

from audit.models import Action, AuditEntry, UsageRecord
from chat import quotas
from chat.models import Message
from gateway_portal.models import Membership, TeamLimits
from tests.helpers import launch_portal, nonce, session_cookie_for, team_named

pytestmark = pytest.mark.django_db(transaction=True)


def send_frame(content, **extra):
    return {"type": "send", "conversation": None, "content": content, "model": "gpt-4", "temperature": 0.7,
            "max_tokens": 512, **extra}


async def send_many(socket, count, content, **extra) -> list[dict]:
    """Send `count` questions at once; the first frame of each (started, or an error with no message)."""
    for _ in range(count):
        await socket.send(**send_frame(f"{content} {nonce()}", **extra))
    firsts = []
    while len(firsts) < count:
        frame = await socket.receive()
        if frame["type"] == "started" or frame["type"] == "error" and frame["message"] is None:
            firsts.append(frame)
    # Answers started first, then refusals: a refusal (one audit write) can beat the start of an
    # answer asked before it (the upstream call and two writes), and the order is not the point.
    return sorted(firsts, key=lambda frame: frame["type"] != "started")


async def stop_all(socket, started):
    for frame in started:
        await socket.send(type="stop", message=frame["message"])
    finals = set()
    while len(finals) < len(started):
        frame = await socket.receive()
        if frame["type"] in ("done", "error") and frame["message"] is not None:
            finals.add(frame["message"])


async def refusal_entry(user, name):
    entry = await AuditEntry.objects.filter(user=user, action=Action.COMPLETION_REFUSED, details__limit=name).afirst()
    assert entry is not None, f"no audit entry names {name}"
    return entry


def assert_refused(frame, name, value):
    assert frame["type"] == "error" and frame["message"] is None and frame["retryable"] is True
    assert frame["limit"] == {"name": name, "value": value}
    assert frame["retry_after"] > 0


@pytest.fixture(params=["memory", "redis"])
def backend(request, settings):
    """Both ways of counting: in this process's memory, and one Lua step in Redis."""
    if request.param == "redis":
        settings.REDIS_URL = request.getfixturevalue("redis_url")
    return request.param


SLOW = "slow [[emulator tokens=400 rate=100]]"


async def test_the_monthly_budget_starts_only_the_answers_it_can_pay_for(alice, open_socket, settings, backend):
    # Each answer reserves its max tokens (300) plus its input (about 10): 3 fit in 1,000, not 4.
    settings.PORTAL_TOKENS_PER_MONTH_PER_TEAM = 1000
    socket = await open_socket(alice)
    firsts = await send_many(socket, 5, SLOW, max_tokens=300)
    started = [f for f in firsts if f["type"] == "started"]
    refused = [f for f in firsts if f["type"] == "error"]
    assert len(started) == 3 and len(refused) == 2
    for frame in refused:
        assert_refused(frame, "tokens_per_month", 1000)
        assert frame["code"] == "budget_exhausted" and "monthly budget of 1,000 tokens" in frame["detail"]
    entry = await refusal_entry(alice, "tokens_per_month")
    assert entry.error_code == "budget_exhausted" and entry.details["limit_value"] == 1000 and entry.details["retry_after"] > 0

    # Stopped early, they used far less than they reserved: the rest comes back for the next question.
    await stop_all(socket, started)
    used = await sync_to_async(lambda: sum(r.input_tokens + r.output_tokens for r in UsageRecord.objects.filter(user=alice)))()
    assert used < 1000 - 310
    await socket.send(**send_frame(f"again {nonce()} [[emulator tokens=5]]", max_tokens=300))
    assert (await socket.receive_until("done", "error"))[-1]["type"] == "done"


async def test_tokens_per_minute_count_what_streaming_answers_reserved(alice, open_socket, settings, backend):
    settings.PORTAL_TOKENS_PER_MINUTE_PER_TEAM = 800
    socket = await open_socket(alice)
    first, second = await send_many(socket, 2, SLOW, max_tokens=500)
    assert first["type"] == "started"
    assert_refused(second, "tokens_per_minute", 800)
    assert second["code"] == "quota_exceeded" and second["retry_after"] <= 60
    await refusal_entry(alice, "tokens_per_minute")
    await stop_all(socket, [first])


async def test_concurrency_per_team_and_for_the_whole_portal(alice, bob, charlie, open_socket, settings):
    settings.PORTAL_MAX_CONCURRENT_PER_TEAM = 1
    settings.PORTAL_MAX_CONCURRENT_TOTAL = 2
    alice_socket, bob_socket, charlie_socket = [await open_socket(p) for p in (alice, bob, charlie)]
    (alice_first,) = await send_many(alice_socket, 1, SLOW)
    assert alice_first["type"] == "started"
    (bob_first,) = await send_many(bob_socket, 1, SLOW)  # same team (Red): the team's one slot is taken
    assert_refused(bob_first, "concurrent_per_team", 1)
    (charlie_first,) = await send_many(charlie_socket, 1, SLOW)  # team Blue: its own slot
    assert charlie_first["type"] == "started"
    await stop_all(alice_socket, [alice_first])
    (bob_again,) = await send_many(bob_socket, 1, SLOW)
    assert bob_again["type"] == "started"  # Red's slot came back
    settings.PORTAL_MAX_CONCURRENT_PER_TEAM = 0
    (alice_second,) = await send_many(alice_socket, 1, SLOW)  # two answers already: the portal's limit
    assert_refused(alice_second, "concurrent_global", 2)
    await refusal_entry(bob, "concurrent_per_team")
    await refusal_entry(alice, "concurrent_global")
    await stop_all(bob_socket, [bob_again])
    await stop_all(charlie_socket, [charlie_first])


async def test_requests_per_minute_per_person(alice, open_socket, settings):
    settings.PORTAL_REQUESTS_PER_MINUTE_PER_USER = 2
    await wait_for_a_fresh_minute()
    socket = await open_socket(alice)
    for _ in range(2):
        await socket.send(**send_frame(f"quick {nonce()} [[emulator tokens=5]]"))
        assert (await socket.receive_until("done", "error"))[-1]["type"] == "done"
    await socket.send(**send_frame(f"one more {nonce()}"))
    refused = (await socket.receive_until("error"))[-1]
    assert_refused(refused, "requests_per_minute", 2)
    assert refused["retry_after"] <= 60 and "2 messages this minute" in refused["detail"]
    await refusal_entry(alice, "requests_per_minute")


async def wait_for_a_fresh_minute(needed=25):
    """Minute windows are fixed: a test counting requests should not straddle two of them."""
    left = 60 - time.time() % 60
    if left < needed:
        await asyncio.sleep(left + 0.2)


async def test_a_lease_not_renewed_expires_and_one_renewed_does_not(settings, redis_url):
    # A process that dies renews nothing and settles nothing: its slot comes back by itself.
    settings.REDIS_URL = redis_url
    settings.PORTAL_LEASE_SECONDS = 1.0
    settings.PORTAL_MAX_CONCURRENT_PER_USER = 1
    user_id = 10_000 + int(time.time()) % 10_000
    renewed = await quotas.limits.reserve(user_id, None, 10)
    await asyncio.sleep(1.6)  # six renewals later it still holds the slot
    with pytest.raises(quotas.QuotaExceeded):
        await quotas.limits.reserve(user_id, None, 10)
    renewed._renewal.cancel()  # as if its process died
    await asyncio.sleep(1.2)
    again = await quotas.limits.reserve(user_id, None, 10)
    await again.settle()


async def test_redis_down_is_a_retryable_error_and_leaves_nothing_taken(alice, open_socket, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    socket = await open_socket(alice)
    await socket.send(**send_frame(f"hello {nonce()}"))
    error = (await socket.receive_until("error"))[-1]
    assert error["retryable"] is True and error["message"] is None
    assert "cannot start answers right now" in error["detail"]
    assert await Message.objects.acount() == 0
    settings.REDIS_URL = ""
    await socket.send(**send_frame(f"hello again {nonce()} [[emulator tokens=5]]"))
    assert (await socket.receive_until("done", "error"))[-1]["type"] == "done"


async def test_a_long_conversation_sends_the_newest_messages_that_fit_and_says_so(alice, open_socket, settings):
    settings.PORTAL_MAX_HISTORY_TOKENS = 120
    socket = await open_socket(alice)
    conversation = None
    for turn in range(3):
        await socket.send(**send_frame(f"Question {turn} {'x' * 150} {nonce()} [[emulator tokens=5]]", conversation=conversation))
        frames = await socket.receive_until("done", "error")
        assert frames[-1]["type"] == "done"
        conversation = frames[0]["conversation"]
    started, *_, done = frames
    # About 48 tokens a question: the third fits with the newest earlier messages only.
    assert started["left_out"] >= 1 and done["left_out"] == started["left_out"]
    usage = await UsageRecord.objects.filter(user=alice).order_by("-timestamp").afirst()
    assert usage.input_chars <= 120 * 4
    stored = await Message.objects.aget(pk=done["message"])
    assert stored.to_dict()["left_out"] == started["left_out"]  # a reload shows the same line
    # A single message over the limit cannot be trimmed: refused with the numbers.
    await socket.send(**send_frame("y" * 600, conversation=conversation))
    error = (await socket.receive_until("error"))[-1]
    assert error["code"] == "invalid_request" and "the limit is 120" in error["detail"]


# --- the limits page ------------------------------------------------------------------------


def test_the_team_admin_changes_the_limits_and_the_change_is_audited(alice, bob, client):
    Membership.objects.filter(user=alice).update(role=Membership.Role.ADMIN)
    client.force_login(alice)
    page = client.get("/teams/red/limits/")
    assert page.status_code == 200 and b"Save the team" in page.content
    answer = client.post("/teams/red/limits/", {"requests_per_minute": "3", "tokens_per_month": "50000",
                                                 "concurrent_per_person": "", "concurrent_per_team": "", "tokens_per_minute": ""})
    assert answer.status_code == 302
    own = TeamLimits.objects.get(team=team_named("Red"))
    assert own.requests_per_minute == 3 and own.tokens_per_month == 50000 and own.concurrent_per_team is None
    entry = AuditEntry.objects.get(action=Action.LIMITS_CHANGED)
    assert entry.user == alice and entry.team == team_named("Red")
    assert entry.details["changed"] == {"requests_per_minute": [None, 3], "tokens_per_month": [None, 50000]}
    assert b"3 messages" in client.get("/teams/red/limits/").content


def test_a_member_sees_the_limits_and_what_is_used_but_cannot_change_them(alice, bob, client, settings):
    settings.PORTAL_TOKENS_PER_MONTH_PER_TEAM = 10_000
    TeamLimits.objects.create(team=team_named("Red"), concurrent_per_team=4)
    client.force_login(bob)
    page = client.get("/teams/red/limits/")
    text = page.content.decode()
    assert page.status_code == 200 and 'name="requests_per_minute"' not in text and "Save the team" not in text
    assert "4 answers" in text and "set by the team" in text and "0 of 10000" in text
    assert client.post("/teams/red/limits/", {"requests_per_minute": "100"}).status_code == 405
    assert not TeamLimits.objects.filter(requests_per_minute=100).exists()


def test_someone_outside_the_team_gets_404(charlie, alice):
    client = Client()
    client.force_login(charlie)
    assert client.get("/teams/red/limits/").status_code == 404
    assert client.post("/teams/red/limits/", {"requests_per_minute": "0"}).status_code == 404
    assert Client().get("/teams/red/limits/").status_code == 302  # log in first


async def test_a_team_admins_value_applies_to_the_next_message(alice, open_socket):
    await sync_to_async(TeamLimits.objects.create)(team=await sync_to_async(team_named)("Red"), requests_per_minute=1)
    await wait_for_a_fresh_minute()
    socket = await open_socket(alice)
    await socket.send(**send_frame(f"quick {nonce()} [[emulator tokens=5]]"))
    assert (await socket.receive_until("done", "error"))[-1]["type"] == "done"
    await socket.send(**send_frame(f"again {nonce()}"))
    assert_refused((await socket.receive_until("error"))[-1], "requests_per_minute", 1)


# --- several server processes ---------------------------------------------------------------


def connect(portal, cookie):
    return websockets.connect(portal.url.replace("http", "ws") + "/ws/chat/",
                              additional_headers={"Cookie": f"sessionid={cookie}", "Origin": portal.url})


async def send(ws, content, **extra):
    await ws.send(json.dumps({"type": "send", "conversation": None, "content": f"{content} {nonce()}", **extra}))
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "started" or frame["type"] == "error" and frame["message"] is None:
            return frame


async def until_final(ws):
    async with asyncio.timeout(30):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] in ("done", "error") and frame.get("message") is not None:
                return frame


async def test_limits_hold_across_two_server_processes_and_a_dead_ones_slots_come_back(redis_url, alice, bob):
    env = dict(REDIS_URL=redis_url, PORTAL_MAX_CONCURRENT_PER_USER="1", PORTAL_REQUESTS_PER_MINUTE_PER_USER="3",
               PORTAL_LEASE_SECONDS="4")
    first = launch_portal("--no-admin", **env)
    second = launch_portal("--no-admin", **env)
    try:
        await wait_for_a_fresh_minute(40)
        alice_cookie, bob_cookie = [await sync_to_async(session_cookie_for)(p) for p in (alice, bob)]
        long = "Long [[emulator tokens=3000 rate=50]]"
        async with connect(first, alice_cookie) as a1, connect(second, alice_cookie) as a2:
            started = await send(a1, long, max_tokens=4096)
            assert started["type"] == "started"
            assert_refused(await send(a2, "One more"), "concurrent_per_person", 1)
            await a1.send(json.dumps({"type": "stop", "message": started["message"]}))
            await until_final(a1)
            # Requests per minute, counted on both: alice has started 1; 2 more, then refused.
            assert (await send(a2, "Quick [[emulator tokens=5]]"))["type"] == "started"
            await until_final(a2)
            assert (await send(a1, "Quick [[emulator tokens=5]]"))["type"] == "started"
            await until_final(a1)
            assert_refused(await send(a2, "Fourth"), "requests_per_minute", 3)

        # bob's process dies mid-answer: his slot is held until the lease (4 s) runs out, not an hour.
        async with connect(first, bob_cookie) as b1:
            assert (await send(b1, long, max_tokens=4096))["type"] == "started"
            first.child.kill()
        async with connect(second, bob_cookie) as b2:
            assert_refused(await send(b2, "Now?"), "concurrent_per_person", 1)
            deadline = time.monotonic() + 20
            while True:
                frame = await send(b2, "Now? [[emulator tokens=5]]")
                if frame["type"] == "started" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            assert frame["type"] == "started"
            await until_final(b2)
    finally:
        first.child.kill()
        assert "Gateway Portal stopped." in second.stop()
