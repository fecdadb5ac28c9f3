"""Several server processes (REDIS_URL): an answer is followed and stopped from a socket that
another process serves, and `runportal --workers N` serves one port with N processes.

Two separate `runportal` processes on two ports stand in for two workers behind one port: the
test then knows which process each socket reaches.
"""

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from chat import answer_bus
from chat.models import Message
from gateway_portal.management.commands.runportal import _WorkerPool
from tests.helpers import launch_portal, nonce, session_cookie_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_portals(redis_url):
    portals = []
    try:
        for _ in range(2):
            portals.append(launch_portal("--no-admin", REDIS_URL=redis_url))
        yield portals
    finally:
        for running in portals:
            assert "Gateway Portal stopped." in running.stop()


def connect(portal, cookie):
    return websockets.connect(
        portal.url.replace("http", "ws") + "/ws/chat/",
        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": portal.url},
    )


async def start_long_answer(ws) -> dict:
    """Ask for a minute-long answer (3,000 tokens at 50/s) and return its "started" frame."""
    await ws.send(json.dumps(
        {"type": "send", "conversation": None, "content": f"Long {nonce()} [[emulator tokens=3000 rate=50]]",
         "max_tokens": 4096}
    ))
    return json.loads(await ws.recv())


async def frames_until_final(ws, timeout=30):
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            frames.append(frame)
            if frame["type"] in ("done", "error"):
                return frames


async def test_a_reload_served_by_another_process_gets_the_whole_answer_once(two_portals, alice):
    first, second = two_portals
    cookie = await sync_to_async(session_cookie_for)(alice)
    async with connect(first, cookie) as ws_first:
        await ws_first.send(json.dumps(
            {"type": "send", "conversation": None, "content": f"Tell me {nonce()} [[emulator tokens=120 rate=60]]"}
        ))
        started = json.loads(await ws_first.recv())
        assert started["type"] == "started"
        early = json.loads(await ws_first.recv())
        assert early["type"] == "delta"

        # The browser reloads; its new socket reaches the other process (and, impatient, asks twice).
        async with connect(second, cookie) as ws_second:
            await ws_second.send(json.dumps({"type": "resume", "message": started["message"]}))
            await ws_second.send(json.dumps({"type": "resume", "message": started["message"]}))
            frames = await frames_until_final(ws_second)
            # Nothing more arrives for it afterwards (a second forward, or a late "not running").
            extra = []
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(answer_bus.FOLLOW_TIMEOUT + 1):
                    while True:
                        extra.append(json.loads(await ws_second.recv()))
            assert extra == []
        seen_by_first = [early, *await frames_until_final(ws_first)]

    # The second resume restarted the forwarding from a new snapshot; as the page does, keep the
    # furthest snapshot and the deltas after it.
    at, snapshot = max(((i, f) for i, f in enumerate(frames) if f["type"] == "snapshot"), key=lambda p: (p[1]["seq"], p[0]))
    rest = frames[at + 1:]
    assert snapshot["message"] == started["message"]
    deltas = [f for f in rest if f["type"] == "delta" and f["seq"] > snapshot["seq"]]
    assert [d["seq"] for d in deltas] == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(deltas)))
    assert rest[-1]["type"] == "done" and rest[-1]["status"] == "complete"
    followed_text = snapshot["text"] + "".join(d["text"] for d in deltas)
    original_text = "".join(f["text"] for f in seen_by_first if f["type"] == "delta")
    stored = await sync_to_async(Message.objects.get)(pk=started["message"])
    assert followed_text == original_text == stored.content
    assert len(stored.content.split()) == 120


async def test_stop_from_a_socket_of_another_process_stops_the_answer(two_portals, alice):
    first, second = two_portals
    cookie = await sync_to_async(session_cookie_for)(alice)
    async with connect(first, cookie) as ws_first, connect(second, cookie) as ws_second:
        started = await start_long_answer(ws_first)
        assert json.loads(await ws_first.recv())["type"] == "delta"
        await ws_second.send(json.dumps({"type": "stop", "message": started["message"]}))
        final = (await frames_until_final(ws_first))[-1]
    assert final["type"] == "done" and final["status"] == "cancelled"
    stored = await sync_to_async(Message.objects.get)(pk=started["message"])
    assert stored.status == "cancelled" and 0 < len(stored.content.split()) < 3000


async def test_another_user_cannot_follow_or_stop_an_answer_through_the_other_process(two_portals, alice, bob):
    first, second = two_portals
    alice_cookie = await sync_to_async(session_cookie_for)(alice)
    bob_cookie = await sync_to_async(session_cookie_for)(bob)
    async with connect(first, alice_cookie) as ws_alice, connect(second, bob_cookie) as ws_bob:
        await ws_alice.send(json.dumps(
            {"type": "send", "conversation": None, "content": f"Mine {nonce()} [[emulator tokens=150 rate=60]]"}
        ))
        started = json.loads(await ws_alice.recv())
        await ws_bob.send(json.dumps({"type": "resume", "message": started["message"]}))
        assert json.loads(await ws_bob.recv())["code"] == "not_found"
        await ws_bob.send(json.dumps({"type": "stop", "message": started["message"]}))
        assert json.loads(await ws_bob.recv())["code"] == "not_running"
        final = (await frames_until_final(ws_alice))[-1]
    assert final["type"] == "done" and final["status"] == "complete"


async def test_following_an_answer_whose_process_died_says_so_instead_of_hanging(redis_url, alice):
    doomed = launch_portal("--no-admin", REDIS_URL=redis_url)
    survivor = launch_portal("--no-admin", REDIS_URL=redis_url)
    try:
        cookie = await sync_to_async(session_cookie_for)(alice)
        async with connect(doomed, cookie) as ws_doomed:
            started = await start_long_answer(ws_doomed)
            assert json.loads(await ws_doomed.recv())["type"] == "delta"
            doomed.child.kill()  # SIGKILL: no chance to store the answer as cancelled
        async with connect(survivor, cookie) as ws:
            await ws.send(json.dumps({"type": "resume", "message": started["message"]}))
            async with asyncio.timeout(15):
                answer = json.loads(await ws.recv())
        assert answer["type"] == "error" and answer["code"] == "not_running" and answer["message"] == started["message"]
    finally:
        doomed.child.kill()
        assert "Gateway Portal stopped." in survivor.stop()


async def test_the_concurrency_quota_counts_answers_on_every_process(redis_url, alice):
    portals = []
    try:
        for _ in range(2):
            portals.append(launch_portal("--no-admin", REDIS_URL=redis_url, PORTAL_MAX_CONCURRENT_PER_USER="1"))
        first, second = portals
        cookie = await sync_to_async(session_cookie_for)(alice)
        async with connect(first, cookie) as ws_first, connect(second, cookie) as ws_second:
            started = await start_long_answer(ws_first)
            await ws_second.send(json.dumps({"type": "send", "conversation": None, "content": f"One more {nonce()}"}))
            refused = json.loads(await ws_second.recv())
            assert refused["type"] == "error" and refused["code"] == "quota_exceeded"

            await ws_first.send(json.dumps({"type": "stop", "message": started["message"]}))
            assert (await frames_until_final(ws_first))[-1]["status"] == "cancelled"
            # The slot is free again, whichever process asks.
            await ws_second.send(json.dumps({"type": "send", "conversation": None, "content": f"Now {nonce()}"}))
            assert (await frames_until_final(ws_second))[-1]["status"] == "complete"
    finally:
        for running in portals:
            assert "Gateway Portal stopped." in running.stop()


def test_workers_serve_one_port_and_all_stop_together(redis_url, alice):
    running = launch_portal("--workers", "2", REDIS_URL=redis_url)
    try:
        assert "2 worker processes" in running.output
        cookie = session_cookie_for(alice)

        async def ask(ws, text):
            await ws.send(json.dumps({"type": "send", "conversation": None, "content": f"{text} {nonce()}"}))
            return (await frames_until_final(ws))[-1]

        async def ask_several():
            async def ask_once(index):
                async with connect(running, cookie) as ws:
                    return await ask(ws, f"Q{index}")

            return await asyncio.gather(*(ask_once(i) for i in range(6)))

        async def ask_after_a_pause():
            # Longer than the channel layer's blocking read (5 s): the idle socket must stay open.
            async with connect(running, cookie) as ws:
                await asyncio.sleep(6.5)
                return await ask(ws, "Still there?")

        finals = asyncio.run(ask_several())
        assert [f["status"] for f in finals] == ["complete"] * 6
        assert asyncio.run(ask_after_a_pause())["status"] == "complete"
        with httpx.Client(base_url=running.url) as client:
            assert client.get("/accounts/login/").status_code == 200
    finally:
        output = running.stop()
    assert "Gateway Portal stopped." in output
    assert "Traceback" not in output


def serving_workers(running) -> set[int]:
    """runportal's worker processes, from /proc (its other child is the emulator)."""
    pid = running.child.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children if b"--worker-ready-fd" in _cmdline(child)}


def _cmdline(pid) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # ended meanwhile


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_worker_that_dies_is_replaced(redis_url):
    running = launch_portal("--workers", "2", "--no-admin", REDIS_URL=redis_url)
    try:
        first = serving_workers(running)
        assert len(first) == 2
        # A worker that dies right after starting stops runportal instead (it would die again).
        time.sleep(_WorkerPool.MIN_LIFETIME + 0.5)
        for number, pid in enumerate(first, 1):
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: running.output.count("starting another") == number
                     and len(serving_workers(running) - first) == number)
        # Only replacements are left to answer.
        with httpx.Client(base_url=running.url) as client:
            wait_for(lambda: _answers(client, "/accounts/login/"))
    finally:
        output = running.stop()
    assert "Gateway Portal stopped." in output


def _answers(client, path) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.TransportError:
        return False


def test_more_than_one_worker_without_redis_is_refused_with_a_reason(settings):
    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="needs REDIS_URL"):
        call_command("runportal", "--workers", "2", "--port", "1")


async def test_completions_on_two_processes_at_once_make_one_unbroken_audit_chain(two_portals, alice, bob):
    cookies = [await sync_to_async(session_cookie_for)(person) for person in (alice, bob)]

    async def chat(portal, cookie, count):
        async with connect(portal, cookie) as ws:
            for n in range(count):
                await ws.send(json.dumps({"type": "send", "conversation": None, "content": f"Chain {n} {nonce()}"}))
                assert (await frames_until_final(ws))[-1]["status"] == "complete"

    # Four sockets, two on each process, each asking one question after another.
    await asyncio.gather(*(
        chat(portal, cookie, 5) for portal in two_portals for cookie in cookies
    ))

    def verified():
        from io import StringIO

        from audit.models import AuditEntry

        out = StringIO()
        call_command("verify_audit", stdout=out)
        completions = AuditEntry.objects.filter(action="completion.succeeded").count()
        seqs = list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True))
        return out.getvalue(), completions, seqs

    report, completions, seqs = await sync_to_async(verified)()
    assert completions == 20 and seqs == list(range(1, len(seqs) + 1))
    assert f"intact: {len(seqs)} entries checked" in report
