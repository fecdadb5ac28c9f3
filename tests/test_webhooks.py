"""Webhooks from the outside: a real HTTP receiver on loopback, real `manage.py procrastinate
worker` processes, completions from the executor (or written through audit.actions when there
are many), and what the receiver, the signature library and the admin see.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from audit import webhooks
from audit.actions import do_record_completion
from audit.models import AuditEntry, WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_webhook_secret
from chat.actions import NoTranscript
from chat.completion import API, COMPLETE, CompletionRequest, Delta, Done, Exchange, Failed, Outcome
from chat.executor import ChatExecutor
from gateway_portal.models import current_team
from gateway_portal.child_processes import CAPTURE, ChildProcess, LinePrinted, NotReady, free_port
from tests.helpers import PROJECT, _test_database_url, launch_portal, nonce

pytestmark = pytest.mark.django_db(transaction=True)

ALL_EVENTS = ["completion.succeeded", "completion.failed", "completion.cancelled"]


class Receiver:
    """A webhook receiver on a loopback port: answers 500 to the first `fail_first` requests of
    each webhook-id, holds every request while `hanging`, and keeps what it was sent."""

    def __init__(self, port: int | None = None, *, fail_first: int = 0):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.fail_first = fail_first
        self.requests: list[tuple[dict, bytes]] = []  # every request, in arrival order
        self.accepted: list[tuple[dict, bytes]] = []  # those answered 2xx
        self.held = 0
        self.hanging = threading.Event()
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.server = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver.lock:
                    receiver.requests.append((headers, body))
                    seen = sum(1 for h, _ in receiver.requests if h.get("webhook-id") == headers.get("webhook-id"))
                if receiver.hanging.is_set():
                    with receiver.lock:
                        receiver.held += 1
                    receiver.released.wait(60)
                status = 500 if seen <= receiver.fail_first else 204
                if status == 204:
                    with receiver.lock:
                        receiver.accepted.append((headers, body))
                self.send_response(status)
                self.send_header("content-length", "0" if status == 204 else "13")
                self.end_headers()
                if status != 204:
                    self.wfile.write(b"receiver down")

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.released.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def accepted_ids(self) -> Counter:
        with self.lock:
            return Counter(headers["webhook-id"] for headers, _ in self.accepted)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a held request does not keep the test run alive


@pytest.fixture
def receiver():
    running = Receiver().start()
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _empty_job_queue():
    """Procrastinate's tables are not flushed between tests: start and end with none queued, and
    with this process' endpoint list read afresh."""
    def empty():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM procrastinate_jobs")
        webhooks.endpoints_changed()

    empty()
    yield
    empty()


# Quick retries for the tests; each test may override.
WORKER_ENV = {"WEBHOOK_BACKOFF_BASE": "0.05", "WEBHOOK_BACKOFF_MAX": "0.5", "WEBHOOK_TIMEOUT": "5"}


@pytest.fixture
def start_workers():
    """`manage.py procrastinate worker` processes on the test database; stopped after the test."""
    started: list[ChildProcess] = []

    def start(count=1, concurrency="4", **env):
        names = []
        for _ in range(count):
            name = f"test-worker-{nonce()}"
            child = ChildProcess.start(
                [sys.executable, "manage.py", "procrastinate", "worker", "--name", name,
                 "--fetch-job-polling-interval", "0.1", "--concurrency", concurrency],
                name=name, cwd=PROJECT, output=CAPTURE, die_with_parent=True,
                env={**os.environ, "DATABASE_URL": _test_database_url(), **WORKER_ENV, **env},
            )
            started.append(child)
            names.append(name)
        for child in started[-count:]:
            try:
                child.wait_ready(LinePrinted("Launching a worker"), 60)
            except NotReady as exc:
                pytest.fail(str(exc))
        return names

    yield start
    for child in started:
        child.stop(grace=15)


def wait_for(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def jobs_left() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")
        return cursor.fetchone()[0]


def endpoint_for(receiver, **fields) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(url=receiver.url, event_types=fields.pop("event_types", ALL_EVENTS), **fields)


def request_for(user, content, **params):
    return CompletionRequest(
        user=user, team=params.pop("team", None), messages=[{"role": "user", "content": content}], model_id="gpt-4o",
        temperature=0.5, max_tokens=params.pop("max_tokens", 256), client=API,
    )


async def complete(user, content, *, stop_after_deltas=None, team=None):
    events = []
    task = asyncio.current_task()
    async for event in ChatExecutor().stream(request_for(user, content, team=team), NoTranscript()):
        events.append(event)
        if stop_after_deltas is not None and sum(isinstance(e, Delta) for e in events) == stop_after_deltas:
            task.cancel()
    return events


def record_completions(user, count: int) -> None:
    """Many completions at once, written as the executor writes them (audit.actions), without
    running each against the emulator."""
    for number in range(count):
        exchange = Exchange(
            request_id=f"req-bulk-{nonce()}{number}", user_id=user.pk, team_id=None, client=API,
            messages=[{"role": "user", "content": "hello"}], model_id="gpt-4o", temperature=0.5, max_tokens=64,
        )
        outcome = Outcome(status=COMPLETE, text="hi there", model_id="gpt-4o", input_tokens=2, output_tokens=3,
                          latency_ms=120, ttft_ms=40)
        do_record_completion(exchange, outcome)


def test_a_receiver_that_fails_its_first_attempts_gets_each_event_once_after_retries(alice, start_workers):
    receiver = Receiver(fail_first=2).start()
    try:
        endpoint_for(receiver)
        start_workers()
        for _ in range(5):
            events = async_to_sync_run(complete(alice, f"hello {nonce()}"))
            assert isinstance(events[-1], Done)
        wait_for(lambda: len(receiver.accepted_ids()) == 5, "five events accepted")
        wait_for(lambda: jobs_left() == 0, "the queue to empty")
    finally:
        receiver.stop()

    accepted = receiver.accepted_ids()
    assert set(accepted.values()) == {1}  # each event once
    assert set(accepted) == set(WebhookDelivery.objects.values_list("event_id", flat=True))
    assert Counter(h["webhook-id"] for h, _ in receiver.requests) == {event_id: 3 for event_id in accepted}
    # Every attempt is in the admin: two refusals and the success, with the receiver's answer.
    delivery = WebhookDelivery.objects.first()
    assert delivery.status == "delivered" and delivery.attempts == 3
    page = superuser_client().get(f"/admin/audit/webhookdelivery/{delivery.pk}/change/").content.decode()
    assert page.count("HTTP 500: receiver down") == 2 and "204" in page


def test_events_made_while_the_receiver_is_down_all_arrive_once_it_is_back(alice, start_workers):
    count = 1000
    receiver = Receiver()  # not started: its port refuses connections
    endpoint_for(receiver)
    start_workers(WEBHOOK_BACKOFF_BASE="1", WEBHOOK_BACKOFF_MAX="4")
    record_completions(alice, count)
    # The worker has been failing to deliver them: the head of each of the endpoint's lanes, again
    # and again; the rest wait behind them rather than each taking a worker's slot.
    wait_for(lambda: WebhookAttempt.objects.filter(error__startswith="could not connect").count() >= 20, "refused attempts")
    assert not WebhookDelivery.objects.filter(status="delivered").exists()
    assert WebhookDelivery.objects.count() <= 4  # WEBHOOK_ENDPOINT_CONCURRENCY
    refused = set(WebhookAttempt.objects.values_list("delivery_id", flat=True))
    receiver.start()
    try:
        wait_for(lambda: len(receiver.accepted_ids()) == count, f"{count} events accepted", 180)
        wait_for(lambda: jobs_left() == 0, "the queue to empty")
    finally:
        receiver.stop()
    accepted = receiver.accepted_ids()
    assert len(accepted) == count and set(accepted.values()) == {1}
    assert WebhookDelivery.objects.filter(status="delivered").count() == count
    # Those refused while it was down were delivered by a later attempt.
    assert set(WebhookDelivery.objects.filter(pk__in=refused, attempts__gte=2, status="delivered").values_list("pk", flat=True)) == refused


def test_a_hanging_endpoint_holds_no_more_worker_slots_than_its_cap(alice, receiver, start_workers):
    stuck = Receiver().start()
    stuck.hanging.set()
    try:
        endpoint_for(stuck, description="hangs")
        endpoint_for(receiver, description="healthy")
        # Ten slots; the hanging endpoint may take two of them, however many of its events wait.
        start_workers(1, WEBHOOK_TIMEOUT="30", concurrency="10")
        with override_settings(WEBHOOK_ENDPOINT_CONCURRENCY=2):  # the lanes are chosen as events are enqueued
            record_completions(alice, 40)
        wait_for(lambda: len(receiver.accepted_ids()) == 40, "the healthy endpoint's 40 events")
        assert stuck.held <= 2 and len(stuck.requests) <= 2
    finally:
        stuck.stop()


def test_two_workers_deliver_every_event_once(alice, receiver, start_workers):
    count = 300
    endpoint_for(receiver)
    names = start_workers(2)
    record_completions(alice, count)
    wait_for(lambda: len(receiver.accepted_ids()) == count, f"{count} events accepted")
    wait_for(lambda: jobs_left() == 0, "the queue to empty")
    accepted = receiver.accepted_ids()
    assert len(accepted) == count and set(accepted.values()) == {1}
    assert len(receiver.requests) == count
    # Both took part (so the test did put two workers on the same queue).
    assert set(WebhookAttempt.objects.values_list("worker", flat=True)) == set(names)


def test_the_settings_endpoint_gets_every_event_signed_per_standard_webhooks(alice, receiver, start_workers):
    secret = new_webhook_secret()
    start_workers(ANALYTICS_WEBHOOK_URL=receiver.url, ANALYTICS_WEBHOOK_SECRET=secret)
    with override_settings(ANALYTICS_WEBHOOK_URL=receiver.url, ANALYTICS_WEBHOOK_SECRET=secret):
        webhooks.endpoints_changed()
        red = current_team(alice)
        succeeded = async_to_sync_run(complete(alice, f"hello {nonce()}", team=red))[-1]
        failed = async_to_sync_run(complete(alice, f"bad {nonce()} [[emulator fault=400]]"))[-1]
        cancelled = async_to_sync_run(complete(alice, f"long {nonce()} [[emulator tokens=400 rate=200]]", stop_after_deltas=1))[-1]
    assert isinstance(succeeded, Done) and isinstance(failed, Failed) and cancelled.outcome.status == "cancelled"
    wait_for(lambda: len(receiver.accepted_ids()) == 3, "three events accepted")

    received = {}
    for headers, body in receiver.accepted:
        payload = Webhook(secret).verify(body, headers)
        received[payload["type"]] = payload
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body.replace(b'"output_tokens":', b'"output_tokens":1'), headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(new_webhook_secret()).verify(body, headers)
    assert set(received) == set(ALL_EVENTS)
    payload = received["completion.succeeded"]
    entry = AuditEntry.objects.get(audit_id=payload["audit_id"])
    assert payload["request_id"] == entry.request_id and payload["status"] == "success"
    assert payload["person"] == {"id": alice.pk, "username": "alice"} and payload["model"] == "gpt-4o"
    assert payload["team"] == {"id": red.pk, "name": red.name}
    assert received["completion.failed"]["team"] is None  # asked for no team (a command, say)
    assert payload["output_tokens"] == succeeded.outcome.output_tokens > 0
    assert payload["latency_ms"] == succeeded.outcome.latency_ms and payload["ttft_ms"] == succeeded.outcome.ttft_ms
    assert {"tokens_per_second", "input_tokens", "timestamp", "token_source"} <= set(payload)
    assert received["completion.failed"]["error_code"] == failed.code
    # Its row in the admin says where it comes from, and takes no edits of what the environment sets.
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.from_settings and endpoint.secret == secret
    page = superuser_client().get(f"/admin/audit/webhookendpoint/{endpoint.pk}/change/").content.decode()
    assert "ANALYTICS_WEBHOOK_URL (set in the environment)" in page and 'name="url"' not in page


async def test_a_hanging_receiver_costs_the_chat_nothing(alice, receiver, start_workers, open_socket):
    receiver.hanging.set()
    await sync_to_async(endpoint_for)(receiver)
    await sync_to_async(start_workers)(WEBHOOK_TIMEOUT="60")
    first = await complete(alice, f"hello {nonce()}")
    assert isinstance(first[-1], Done)
    await sync_to_async(wait_for)(lambda: receiver.held == 1, "the receiver to hold the first event")
    # While the receiver holds it, answers go on arriving whole in the browser.
    socket = await open_socket(alice)
    for _ in range(3):
        await socket.send(type="send", conversation=None, content=f"and now {nonce()}")
        frames = await socket.receive_until("done", "error")
        assert frames[-1]["type"] == "done"
    assert receiver.held >= 1 and not receiver.accepted
    receiver.released.set()
    await sync_to_async(wait_for)(lambda: len(receiver.accepted_ids()) == 4, "the four events once released")


def test_an_endpoint_failing_too_long_is_disabled_with_a_warning_then_its_events_can_be_resent(alice, start_workers):
    receiver = Receiver(fail_first=1000).start()
    try:
        endpoint = endpoint_for(receiver)
        start_workers(WEBHOOK_DISABLE_AFTER="0.5")
        record_completions(alice, 3)
        wait_for(lambda: not WebhookEndpoint.objects.get().is_active, "the endpoint to be disabled")
        wait_for(lambda: WebhookDelivery.objects.filter(status="skipped").count() == 3, "its deliveries to stop")
        admin = superuser_client()
        page = admin.get("/admin/audit/webhookendpoint/").content.decode()
        assert f"Webhook endpoint {receiver.url} was disabled on" in page and "disabled after failing" in page
        # Fixed: enabled again, and what it missed re-sent from the deliveries list.
        receiver.fail_first = 0
        admin.post("/admin/audit/webhookendpoint/", {"action": "enable_again", "index": "0", "_selected_action": [endpoint.pk]})
        assert WebhookEndpoint.objects.get().is_active
        before = Counter(h["webhook-id"] for h, _ in receiver.requests)
        response = admin.post(
            "/admin/audit/webhookdelivery/?status__exact=skipped",
            {"action": "resend", "select_across": "1", "index": "0", "_selected_action": [0]}, follow=True,
        )
        assert "3 deliveries queued to be sent again." in response.content.decode()
        wait_for(lambda: len(receiver.accepted_ids()) == 3, "the three missed events")
    finally:
        receiver.stop()
    # The same events, by id: those it refused before (an event queued behind another in its lane
    # may have been skipped unsent once the endpoint was disabled).
    assert set(receiver.accepted_ids()) == set(WebhookDelivery.objects.values_list("event_id", flat=True)) >= set(before)


def test_the_deliveries_of_a_time_range_can_be_sent_again_same_event_newly_signed(alice, receiver, start_workers):
    endpoint = endpoint_for(receiver)
    start_workers()
    record_completions(alice, 2)
    wait_for(lambda: len(receiver.accepted_ids()) == 2, "two events")
    old, recent = WebhookDelivery.objects.order_by("created")
    WebhookDelivery.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(days=3))
    since = urlencode({"created__gte": (timezone.now() - timedelta(hours=1)).isoformat()})
    response = superuser_client().post(
        f"/admin/audit/webhookdelivery/?{since}",
        {"action": "resend", "select_across": "1", "index": "0", "_selected_action": [recent.pk]}, follow=True,
    )
    assert "1 deliveries queued to be sent again." in response.content.decode()
    wait_for(lambda: len(receiver.accepted) == 3, "the re-sent event")
    wait_for(lambda: jobs_left() == 0, "the queue to empty")
    assert receiver.accepted_ids() == {old.event_id: 1, recent.event_id: 2}
    headers, body = receiver.accepted[-1]
    assert headers["webhook-id"] == recent.event_id and body == recent.body.encode()
    assert Webhook(endpoint.secret).verify(body, headers)
    assert WebhookDelivery.objects.get(pk=recent.pk).attempts == 2


def test_an_endpoint_added_in_the_admin_gets_a_generated_secret(admin_client):
    response = admin_client.post(
        "/admin/audit/webhookendpoint/add/",
        {"url": "https://hooks.example.com/portal", "description": "BI", "event_types": ["completion.succeeded"],
         "secret": "", "is_active": "on"},
    )
    assert response.status_code == 302
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret.startswith("whsec_") and endpoint.event_types == ["completion.succeeded"]
    Webhook(endpoint.secret)  # a secret the receivers' library accepts
    refused = admin_client.post(
        "/admin/audit/webhookendpoint/add/",
        {"url": "https://hooks.example.com/2", "event_types": ["completion.failed"], "secret": "hunter2", "is_active": "on"},
    )
    assert "A Standard Webhooks secret" in refused.content.decode()


def test_compliance_officers_do_not_see_endpoints_or_their_secrets(olivia, receiver):
    endpoint_for(receiver)
    client = Client()
    client.force_login(olivia)
    assert client.get("/admin/audit/webhookendpoint/").status_code == 403
    assert "Webhook endpoints" not in client.get("/admin/").content.decode()


def test_runportal_starts_a_job_worker_and_stops_it_with_the_rest(alice, receiver):
    secret = new_webhook_secret()
    portal = launch_portal(ANALYTICS_WEBHOOK_URL=receiver.url, ANALYTICS_WEBHOOK_SECRET=secret, **WORKER_ENV)
    try:
        with override_settings(ANALYTICS_WEBHOOK_URL=receiver.url, ANALYTICS_WEBHOOK_SECRET=secret):
            webhooks.endpoints_changed()
            record_completions(alice, 1)
        wait_for(lambda: len(receiver.accepted_ids()) == 1, "the event, delivered by runportal's worker")
    finally:
        output = portal.stop()
    line = next(line for line in output.splitlines() if line.startswith("Background jobs (webhook delivery): 1 worker"))
    pid = int(line.rsplit("pid ", 1)[1].rstrip("."))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_runportal_restarts_a_job_worker_that_dies(alice, receiver):
    secret = new_webhook_secret()
    portal = launch_portal(ANALYTICS_WEBHOOK_URL=receiver.url, ANALYTICS_WEBHOOK_SECRET=secret, **WORKER_ENV)
    try:
        line = next(line for line in portal.output.splitlines() if line.startswith("Background jobs (webhook delivery)"))
        first = int(line.rsplit("pid ", 1)[1].rstrip("."))
        time.sleep(_JOB_WORKER_MIN_LIFETIME)  # not "right after starting": replaced at once
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: f"A job worker (pid {first}) exited with status -9; starting another." in portal.output,
                 "runportal to notice")
        # The new worker delivers.
        with override_settings(ANALYTICS_WEBHOOK_URL=receiver.url, ANALYTICS_WEBHOOK_SECRET=secret):
            webhooks.endpoints_changed()
            record_completions(alice, 1)
        wait_for(lambda: len(receiver.accepted_ids()) == 1, "the event, delivered by the replacement")
        # Logged by the worker once the receiver answered.
        wait_for(lambda: WebhookAttempt.objects.filter(worker__startswith="runportal-").exists(), "the attempt logged")
    finally:
        portal.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)


_JOB_WORKER_MIN_LIFETIME = 10.5


def superuser_client() -> Client:
    from django.contrib.auth import get_user_model

    admin, _ = get_user_model().objects.get_or_create(username="root", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(admin)
    return client


def async_to_sync_run(coroutine):
    return asyncio.run(coroutine)
