"""/metrics as Prometheus reads it: the real parser, after chats over the websocket."""

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import nonce

pytestmark = pytest.mark.django_db(transaction=True)


def send_frame(content, **extra):
    frame = {"type": "send", "conversation": None, "content": content, "model": "gpt-4o", "temperature": 0.5, "max_tokens": 256}
    frame.update(extra)
    return frame


async def ask(socket, content, **extra):
    await socket.send(**send_frame(content, **extra))
    return await socket.receive_until("done", "error")


def parse(text: str) -> dict:
    """(sample name, sorted labels) -> value, as a Prometheus server would read the page."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(**headers) -> dict:
    response = await AsyncClient().get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_chats_are_counted_by_model_status_and_client_with_timings_and_tokens(alice, open_socket):
    before = await scrape()
    socket = await open_socket(alice)
    answers = [await ask(socket, f"Count me {nonce()}") for _ in range(3)]
    failed = await ask(socket, f"[[emulator fault=400]] rejected {nonce()}")
    retried = await ask(socket, f"[[emulator fault=503 times=1]] once more {nonce()}")
    refused = await ask(socket, "x" * 40_000)  # over PORTAL_MAX_MESSAGE_CHARS: never sent upstream
    after = await scrape()

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert all(frames[-1]["type"] == "done" for frames in answers) and retried[-1]["type"] == "done"
    assert failed[-1]["type"] == "error" and refused[-1]["type"] == "error"
    assert grew("portal_completions_total", model="gpt-4o", status="complete", client="browser") == 4
    assert grew("portal_completions_total", model="gpt-4o", status="error", client="browser") == 1
    assert grew("portal_completion_latency_seconds_count", model="gpt-4o") == 5
    assert grew("portal_time_to_first_token_seconds_count", model="gpt-4o") == 4  # the rejected one had no text
    output_tokens = sum(frames[-1]["usage"]["output_tokens"] for frames in [*answers, retried])
    assert grew("portal_output_tokens_total", model="gpt-4o") == output_tokens
    assert grew("portal_input_tokens_total", model="gpt-4o") > 0
    assert grew("portal_errors_total", code=failed[-1]["code"]) == 1
    assert grew("portal_errors_total", code=refused[-1]["code"]) == 1
    assert grew("portal_refusals_total", code=refused[-1]["code"]) == 1
    assert grew("portal_refusals_total", code=failed[-1]["code"]) == 0  # it reached the upstream
    assert grew("portal_upstream_retries_total", code="upstream_unavailable") == 1
    assert value(after, "portal_answers_streaming") == 0
    assert value(after, "portal_websockets_open") == value(before, "portal_websockets_open") + 1


async def test_the_webhook_backlog_and_given_up_deliveries_come_from_the_database(alice):
    from audit.models import WebhookDelivery, WebhookEndpoint
    from django.utils import timezone

    @sync_to_async
    def give_up_one():
        endpoint = WebhookEndpoint.objects.create(url="http://127.0.0.1:9/hook", secret="whsec_" + "A" * 32)
        WebhookDelivery.objects.create(
            event_id="evt-1", endpoint=endpoint, event_type=WebhookDelivery._meta.get_field("event_type").choices[0][0],
            audit_id="AUD-00000001", body="{}", status=WebhookDelivery.Status.FAILED, attempts=9,
            created=timezone.now(), retry_until=timezone.now(),
        )

    before = await scrape()
    await give_up_one()
    after = await scrape()
    assert value(after, "portal_webhook_deliveries_given_up") == value(before, "portal_webhook_deliveries_given_up") + 1
    assert ("portal_webhook_backlog", ()) in after


def test_metrics_are_refused_off_loopback_without_the_token():
    response = Client(REMOTE_ADDR="10.1.2.3").get("/metrics")
    assert response.status_code == 403 and b"PORTAL_METRICS_TOKEN" in response.content


def test_with_a_token_set_only_its_bearer_may_scrape_even_from_loopback():
    with override_settings(PORTAL_METRICS_TOKEN="s3cret-scrape-token"):
        assert Client().get("/metrics").status_code == 403
        assert Client().get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 403
        remote = Client(REMOTE_ADDR="10.1.2.3")
        samples = parse(remote.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"}).content.decode())
    assert ("portal_websockets_open", ()) in samples


async def test_runportal_with_two_workers_adds_up_the_chats_of_both(redis_url, alice, tmp_path):
    """Whichever worker answers the scrape counts the chats every worker served, and none of an
    earlier run's."""
    import asyncio
    import json
    import os
    import subprocess
    import sys
    import urllib.request

    import websockets

    from chat.models import Message
    from tests.helpers import launch_portal, session_cookie_for

    # An earlier run's figures, left in the folder: runportal empties it at start.
    subprocess.run(
        [sys.executable, "-c", "from prometheus_client import Counter; Counter('portal_completions', '', "
         "['model', 'status', 'client']).labels('gpt-4o', 'complete', 'browser').inc(100)"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, check=True,
    )
    assert list(tmp_path.glob("counter_*.db"))
    portal = await sync_to_async(launch_portal)(
        "--workers", "2", "--job-workers", "0", "--no-admin", REDIS_URL=redis_url, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)
    )
    try:
        cookie = await sync_to_async(session_cookie_for)(alice)

        async def chat():
            # A connection each: the kernel spreads new connections over the two workers.
            async with websockets.connect(
                portal.url.replace("http", "ws") + "/ws/chat/",
                additional_headers={"Cookie": f"sessionid={cookie}", "Origin": portal.url},
            ) as ws:
                await ws.send(json.dumps(send_frame(f"Worker count {nonce()}")))
                async with asyncio.timeout(30):
                    while (frame := json.loads(await ws.recv()))["type"] not in ("done", "error"):
                        pass
                return frame

        served_by = set()
        chats = 0
        while len(served_by) < 2 and chats < 32:  # until both workers served some (the kernel picks)
            finals = await asyncio.gather(*(chat() for _ in range(4)))
            chats += 4
            assert all(frame["type"] == "done" for frame in finals)
            served_by = await sync_to_async(
                lambda: set(Message.objects.filter(role="assistant").values_list("process_channel", flat=True))
            )()
        assert len(served_by) == 2

        def scrape_portal():
            with urllib.request.urlopen(portal.url + "/metrics", timeout=10) as response:
                return parse(response.read().decode())

        for _ in range(4):  # new connections each time: both workers answer some of them
            samples = await sync_to_async(scrape_portal)()
            assert value(samples, "portal_completions_total", model="gpt-4o", status="complete", client="browser") == chats
            assert value(samples, "portal_time_to_first_token_seconds_count", model="gpt-4o") == chats
            assert value(samples, "portal_answers_streaming") == 0
    finally:
        assert "Gateway Portal stopped." in await sync_to_async(portal.stop)()
