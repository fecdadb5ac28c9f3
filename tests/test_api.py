"""The API for programs, driven as a program drives it: the official `openai` SDK and plain httpx
against a real `runportal` process (Daphne, the real ASGI app) and its emulator, over sockets.

What a program's author notices: answers whole and streamed with their usage, each error as
OpenAI's error body and the SDK's exception for its status, a revoked or expired key refused, and
what compliance notices: the audit entry says client "api" and the key's name, a client that
hangs up mid-stream leaves a cancelled answer, and a key is shown once and stored as a hash.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import timedelta

import httpx
import openai
import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from audit.models import AuditEntry, UsageRecord
from chat.api import keys
from chat.api.models import ApiKey
from tests.helpers import launch_portal, make_person, nonce, team_named

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def api_portal(django_db_setup, django_db_blocker):
    """One portal for the module (starting one takes seconds): quick retries and a short deadline
    so upstream failures surface fast, and at most two answers at once per person."""
    with django_db_blocker.unblock():
        running = launch_portal(
            "--no-admin", "--job-workers", "0",
            EMULATOR_TTFT_MS="20", EMULATOR_TOKENS_PER_SECOND="400",
            UPSTREAM_BACKOFF_BASE="0.02", UPSTREAM_BACKOFF_MAX="0.1", UPSTREAM_READ_TIMEOUT="1.5",
            UPSTREAM_DEADLINE="4", PORTAL_MAX_CONCURRENT_PER_USER="2",
            # Webhook events are queued (no job worker runs them here): the test reads the queue.
            ANALYTICS_WEBHOOK_URL="http://127.0.0.1:9/analytics", ANALYTICS_WEBHOOK_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def _no_jobs_left():
    """Procrastinate's tables are not flushed between tests: leave no webhook job queued."""
    yield
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs")


@pytest.fixture
def alice_key(api_portal):
    alice = make_person("alice", team="Red")
    row, key = keys.do_create_key(alice, team_named("Red"), "report script")
    return row, key


@pytest.fixture
def sdk(api_portal, alice_key):
    return openai.OpenAI(api_key=alice_key[1], base_url=api_portal.url + "/v1", max_retries=0, timeout=30)


def ask(text: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"{text} {nonce()}"}]


def wait_for(condition, wait: float = 10) -> None:
    deadline = time.monotonic() + wait
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.05)


def entry_for(completion_id: str, *, wait: float = 10) -> AuditEntry:
    request_id = completion_id.removeprefix("chatcmpl-")
    deadline = time.monotonic() + wait
    while True:
        found = AuditEntry.objects.filter(request_id=request_id).first()
        if found is not None or time.monotonic() > deadline:
            assert found is not None, f"no audit entry for {request_id}"
            return found
        time.sleep(0.05)


def test_the_sdk_gets_a_whole_answer_with_its_usage_and_the_trail_names_the_key(sdk, alice_key):
    answer = sdk.chat.completions.create(model="gpt-4o", messages=ask("What is a gateway?"), max_tokens=30, temperature=0.2)

    assert answer.object == "chat.completion" and answer.model == "gpt-4o"
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].message.content.strip()
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.completion_tokens > 0 and answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    entry = entry_for(answer.id)
    assert (entry.action, entry.status, entry.model_id) == ("completion.succeeded", "success", "gpt-4o")
    assert entry.user.username == "alice" and entry.team.slug == "red"
    assert entry.details == {"client": "api", "api_key": {"name": "report script", "prefix": alice_key[0].prefix}}
    usage = UsageRecord.objects.get(request_id=entry.request_id)
    assert (usage.input_tokens, usage.output_tokens) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    with connection.cursor() as cursor:  # the same webhook event as a browser's completion
        cursor.execute("SELECT args FROM procrastinate_jobs WHERE args->'event'->>'request_id' = %s", [entry.request_id])
        job = json.loads(cursor.fetchone()[0])
    assert (job["event"]["type"], job["event"]["output_tokens"]) == ("completion.succeeded", answer.usage.completion_tokens)


def test_the_sdk_streams_the_answer_then_a_usage_chunk(sdk):
    stream = sdk.chat.completions.create(
        model="gpt-4", messages=ask("Stream to me"), max_tokens=25, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 1 and chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    entry = entry_for(chunks[0].id)
    assert entry.status == "success" and entry.details["client"] == "api"
    assert UsageRecord.objects.get(request_id=entry.request_id).output_tokens == chunks[-1].usage.completion_tokens


def test_without_include_usage_the_stream_has_no_usage_chunk(api_portal, alice_key):
    body = {"model": "gpt-4", "messages": ask("Plain stream"), "max_tokens": 10, "stream": True}
    with httpx.stream("POST", api_portal.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {alice_key[1]}"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and '"usage"' not in "".join(lines)


def test_the_models_the_key_may_use_are_listed(sdk, settings):
    assert [m.id for m in sdk.models.list()] == list(settings.PORTAL_MODELS)


@pytest.mark.parametrize("which", ["unknown", "revoked", "expired"])
def test_an_unknown_revoked_or_expired_key_is_refused_with_401(api_portal, alice_key, which):
    row, key = alice_key
    if which == "unknown":
        key = key[:-4] + "AAAA"
    elif which == "revoked":
        keys.do_revoke_key(row, actor=row.user)
    else:
        ApiKey.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    sdk = openai.OpenAI(api_key=key, base_url=api_portal.url + "/v1", max_retries=0)

    with pytest.raises(openai.AuthenticationError) as refused:
        sdk.chat.completions.create(model="gpt-4", messages=ask("Hello"))
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    if which != "unknown":
        assert which in refused.value.message and row.prefix in refused.value.message
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()
    assert not AuditEntry.objects.filter(action__startswith="completion.").exists()


def test_an_invalid_request_is_400_with_the_numbers(sdk):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="gpt-4", messages=ask("Too long an answer"), max_tokens=999_999)
    assert refused.value.status_code == 400 and refused.value.type == "invalid_request_error"
    assert "from 1 to 4096" in refused.value.message
    entry = AuditEntry.objects.get(action="completion.rejected")
    assert entry.details["client"] == "api" and entry.details["api_key"]["name"] == "report script"


def test_parameters_the_portal_cannot_honour_are_refused_not_ignored(sdk):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="gpt-4", messages=ask("Use a tool"), tools=[{"type": "function", "function": {"name": "f"}}])
    assert refused.value.param == "tools" and "not supported" in refused.value.message


def test_a_model_not_allowed_is_403(sdk):
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk.chat.completions.create(model="gpt-99", messages=ask("Hello"))
    assert refused.value.code == "model_not_allowed" and "Pick one of: gpt-4" in refused.value.message


def test_a_limit_is_429_with_retry_after(api_portal, sdk, alice_key):
    slow = {"model": "gpt-4", "max_tokens": 50, "stream": True}
    headers = {"Authorization": f"Bearer {alice_key[1]}"}
    with httpx.Client(base_url=api_portal.url, headers=headers, timeout=30) as http:
        held = [http.stream("POST", "/v1/chat/completions", json={**slow, "messages": ask("[[emulator rate=2]] hold")}) for _ in range(2)]
        try:
            for response in held:
                response.__enter__()
            with pytest.raises(openai.RateLimitError) as refused:
                sdk.chat.completions.create(model="gpt-4", messages=ask("One too many"))
        finally:
            for response in held:
                response.__exit__(None, None, None)
    assert refused.value.status_code == 429 and int(refused.value.response.headers["retry-after"]) >= 1
    assert "2 answers in progress" in refused.value.message
    assert AuditEntry.objects.get(action="completion.refused").details["api_key"]["name"] == "report script"
    wait_for(lambda: AuditEntry.objects.filter(status="cancelled").count() == 2)  # the held ones, hung up


@pytest.mark.parametrize(
    ("directive", "status", "error"),
    [
        ("fault=429 retry_after=30 times=50", 429, openai.RateLimitError),
        ("fault=403 times=50", 502, openai.InternalServerError),
        ("fault=503 times=50", 503, openai.InternalServerError),
        ("stall_first=3", 504, openai.InternalServerError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_trouble_is_its_status_as_an_openai_error(sdk, directive, status, error, stream):
    with pytest.raises(error) as failed:
        result = sdk.chat.completions.create(model="gpt-4", messages=ask(f"[[emulator {directive}]] trouble"), stream=stream)
        list(result) if stream else None
    assert failed.value.status_code == status
    assert failed.value.body["message"] and failed.value.body["type"] == ("rate_limit_error" if status == 429 else "api_error")
    if status == 429:
        assert failed.value.response.headers["retry-after"] == "30"


def test_a_stream_broken_after_text_ends_with_an_error_event(sdk):
    stream = sdk.chat.completions.create(model="gpt-4", messages=ask("[[emulator drop_after=3]] break"), max_tokens=40, stream=True)
    got = []
    with pytest.raises(openai.APIError) as failed:
        for chunk in stream:
            got.append(chunk)
    assert got and "cut off" in failed.value.message
    assert entry_for(got[0].id).status == "error"


def test_a_client_that_hangs_up_mid_stream_leaves_a_cancelled_answer(api_portal, alice_key):
    body = {"model": "gpt-4", "messages": ask("[[emulator rate=5 tokens=200]] long"), "max_tokens": 200, "stream": True}
    with httpx.stream("POST", api_portal.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {alice_key[1]}"}, timeout=30) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        next(line for line in lines if '"content": "' in line and '"content": ""' not in line)
    completion_id = first.split('"id": "')[1].split('"')[0]

    entry = entry_for(completion_id)
    assert (entry.action, entry.status) == ("completion.cancelled", "cancelled")
    assert entry.details["api_key"]["name"] == "report script"
    usage = UsageRecord.objects.get(request_id=entry.request_id)
    assert usage.status == "cancelled" and usage.output_tokens < 200


def test_a_key_is_shown_once_stored_as_a_hash_and_revoked_on_the_settings_page(api_portal):
    alice, bob = make_person("alice", team="Red"), make_person("bob", team="Red")
    page = Client()
    page.force_login(alice)

    made = page.post("/settings/keys/", {"name": "laptop", "team": team_named("Red").pk, "expires_in_days": "30"})
    assert made.status_code == 200 and made["Cache-Control"] == "no-store"
    key = made.context["new_key"]
    assert key.startswith("gpk_") and key in made.content.decode()
    row = ApiKey.objects.get(user=alice)
    assert row.hashed_key == hashlib.sha256(key.encode()).hexdigest() and key.startswith(row.prefix)
    assert key not in str(ApiKey.objects.filter(pk=row.pk).values().get()) and row.expires_at > timezone.now() + timedelta(days=29)
    again = page.get("/settings/keys/").content.decode()
    assert key not in again and row.prefix in again and "laptop" in again
    created = AuditEntry.objects.get(action="apikey.created")
    assert (created.user, created.team.slug, created.target) == (alice, "red", f"apikey:{row.prefix}")

    answer = openai.OpenAI(api_key=key, base_url=api_portal.url + "/v1", max_retries=0).chat.completions.create(
        model="gpt-4", messages=ask("Count me"), max_tokens=5
    )
    entry_for(answer.id)
    listed = page.get("/settings/keys/").content.decode()
    assert 'data-usage="requests">1<' in listed and f'data-usage="tokens">{answer.usage.prompt_tokens} / {answer.usage.completion_tokens}<' in listed

    other = Client()
    other.force_login(bob)
    assert other.post(f"/settings/keys/{row.pk}/revoke/").status_code == 404  # not bob's: it does not exist for him
    assert page.post(f"/settings/keys/{row.pk}/revoke/").status_code == 302
    assert ApiKey.objects.get(pk=row.pk).revoked_at is not None
    assert AuditEntry.objects.filter(action="apikey.revoked", target=f"apikey:{row.prefix}", user=alice).count() == 1
    assert 'data-state="revoked"' in page.get("/settings/keys/").content.decode()


def test_a_key_may_act_only_for_a_team_of_its_person(api_portal):
    charlie = make_person("charlie", team="Blue")
    page = Client()
    page.force_login(charlie)
    refused = page.post("/settings/keys/", {"name": "sneaky", "team": team_named("Red").pk})
    assert refused.status_code == 400 and not ApiKey.objects.exists()
