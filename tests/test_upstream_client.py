"""The upstream client against the emulator over a real socket: tokens, retries, errors."""

import httpx
import pytest
from django.test import override_settings

from chat.upstream import errors
from chat.upstream.genesys import Finish, GenesysClient, TextBatch, TokenManager, UpstreamTarget
from tests.helpers import nonce

pytestmark = pytest.mark.django_db(transaction=True)


class RecordingSleep:
    """Records how long the client chose to wait, and waits for real but briefly."""

    def __init__(self):
        self.delays = []

    async def __call__(self, seconds):
        import asyncio

        self.delays.append(seconds)
        await asyncio.sleep(0)


def stats(emulator):
    return httpx.get(emulator.url + "/_emulator/stats").json()


async def collect(client, prompt, **params):
    text, finish = [], None
    async for event in client.stream_chat(
        messages=[{"role": "user", "content": prompt}],
        model_id=params.get("model_id", "gpt-4"),
        temperature=0.5,
        max_tokens=params.get("max_tokens", 256),
        request_id="req-test",
    ):
        if isinstance(event, TextBatch):
            text.append(event.text)
        else:
            assert isinstance(event, Finish)
            finish = event
    return "".join(text), finish


async def test_a_completion_streams_text_and_reports_upstream_usage(emulator):
    text, finish = await collect(GenesysClient(), f"Explain OAuth {nonce()}")
    assert len(text.split()) >= 10
    assert finish.finish_reason == "stop"
    assert finish.usage["completion_tokens"] > 0


async def test_the_token_is_fetched_once_and_reused_across_completions(emulator):
    before = stats(emulator)["token_requests"]
    client = GenesysClient()
    for _ in range(3):
        await collect(client, f"hello {nonce()}")
    # A second client in the "same fleet" finds the token in the shared cache.
    await collect(GenesysClient(), f"hello {nonce()}")
    assert stats(emulator)["token_requests"] - before == 1


async def test_the_token_is_refreshed_60_seconds_before_it_expires(emulator):
    now = [1_000_000.0]
    target = UpstreamTarget.from_settings()
    tokens = TokenManager(target, clock=lambda: now[0])
    first = await tokens.get()
    now[0] += 86399 - 61  # emulator tokens live 86,399 s; one second before the refresh margin
    assert await tokens.get() == first
    now[0] += 2  # now inside the last 60 s
    assert await tokens.get() != first


async def test_an_expired_token_is_refreshed_once_and_the_completion_succeeds(emulator):
    client = GenesysClient()
    await collect(client, f"warm up {nonce()}")
    before = stats(emulator)["token_requests"]
    text, finish = await collect(client, f"hi {nonce()} [[emulator expire_token]]")
    assert finish.finish_reason == "stop" and text
    assert stats(emulator)["token_requests"] - before == 1


async def test_a_401_after_a_fresh_token_fails_clearly_without_looping(emulator):
    before = stats(emulator)["completion_requests"]
    with pytest.raises(errors.UpstreamAuthFailed) as failure:
        await collect(GenesysClient(), f"hi {nonce()} [[emulator fault=401]]")
    assert "administrator" in failure.value.detail
    assert stats(emulator)["completion_requests"] - before == 2


async def test_429_waits_as_long_as_retry_after_says_then_succeeds(emulator):
    sleep = RecordingSleep()
    text, finish = await collect(GenesysClient(sleep=sleep), f"busy {nonce()} [[emulator fault=429 retry_after=3 times=2]]")
    assert sleep.delays == [3.0, 3.0]
    assert finish.finish_reason == "stop" and text


async def test_429_beyond_the_deadline_tells_the_user_when_to_come_back(emulator):
    with override_settings(UPSTREAM_DEADLINE=5):
        with pytest.raises(errors.UpstreamRateLimited) as failure:
            await collect(GenesysClient(sleep=RecordingSleep()), f"busy {nonce()} [[emulator fault=429 retry_after=20]]")
    assert failure.value.detail == "The AI service is busy; try again in 20 s."
    assert failure.value.retryable


async def test_5xx_is_retried_with_growing_backoff_then_fails_clearly(emulator):
    sleep = RecordingSleep()
    before = stats(emulator)["completion_requests"]
    with override_settings(UPSTREAM_MAX_ATTEMPTS=3, UPSTREAM_BACKOFF_BASE=1.0, UPSTREAM_BACKOFF_MAX=10):
        with pytest.raises(errors.UpstreamUnavailable) as failure:
            await collect(GenesysClient(sleep=sleep), f"down {nonce()} [[emulator fault=503]]")
    assert stats(emulator)["completion_requests"] - before == 3
    assert len(sleep.delays) == 2
    assert 0.5 <= sleep.delays[0] <= 1.0 and 1.0 <= sleep.delays[1] <= 2.0  # full jitter in [ceiling/2, ceiling]
    assert failure.value.detail == "The AI service is unavailable right now. Please try again in a minute."


async def test_a_500_that_clears_is_invisible_to_the_user(emulator):
    text, finish = await collect(GenesysClient(sleep=RecordingSleep()), f"flaky {nonce()} [[emulator fault=500 times=1]]")
    assert finish.finish_reason == "stop" and text


@pytest.mark.parametrize(
    "fault, error, words",
    [
        ("403", errors.UpstreamForbidden, "ai:generation:write"),
        ("400", errors.UpstreamRejected, "rejected the request"),
    ],
)
async def test_400_and_403_are_not_retried(emulator, fault, error, words):
    before = stats(emulator)["completion_requests"]
    with pytest.raises(error) as failure:
        await collect(GenesysClient(), f"no {nonce()} [[emulator fault={fault}]]")
    assert words in failure.value.detail
    assert stats(emulator)["completion_requests"] - before == 1


async def test_a_stream_that_breaks_before_any_text_is_retried(emulator):
    before = stats(emulator)["completion_requests"]
    with override_settings(UPSTREAM_MAX_ATTEMPTS=3):
        with pytest.raises(errors.UpstreamUnavailable):
            await collect(GenesysClient(sleep=RecordingSleep()), f"drop {nonce()} [[emulator drop_after=0]]")
    assert stats(emulator)["completion_requests"] - before == 3


async def test_a_stream_that_breaks_after_text_is_not_retried(emulator):
    before = stats(emulator)["completion_requests"]
    client = GenesysClient(sleep=RecordingSleep())
    seen = []
    with pytest.raises(errors.UpstreamInterrupted):
        async for event in client.stream_chat(
            messages=[{"role": "user", "content": f"drop {nonce()} [[emulator drop_after=3]]"}],
            model_id="gpt-4", temperature=0.5, max_tokens=256, request_id="req-test",
        ):
            seen.append(event)
    assert seen and all(isinstance(e, TextBatch) for e in seen)
    assert stats(emulator)["completion_requests"] - before == 1


async def test_a_stall_longer_than_the_read_timeout_is_a_timeout(emulator):
    with override_settings(UPSTREAM_READ_TIMEOUT=0.3, UPSTREAM_MAX_ATTEMPTS=2):
        with pytest.raises(errors.UpstreamTimeout) as failure:
            await collect(GenesysClient(sleep=RecordingSleep()), f"slow {nonce()} [[emulator stall_first=2]]")
    assert failure.value.detail == "The AI service did not answer in time. Please try again."


async def test_a_malformed_line_is_skipped_and_the_answer_completes(emulator):
    text, finish = await collect(GenesysClient(), f"broken line {nonce()} [[emulator malformed tokens=12]]")
    assert finish.finish_reason == "stop"
    assert len(text.split()) == 12


async def test_unreachable_upstream_fails_as_unavailable(emulator):
    with override_settings(EMULATOR_URL="http://127.0.0.1:9", UPSTREAM_MAX_ATTEMPTS=2):
        with pytest.raises(errors.UpstreamUnavailable):
            await collect(GenesysClient(sleep=RecordingSleep()), "anyone there?")


def test_region_derives_both_hosts_and_overrides_win():
    with override_settings(GENESYS_CLIENT_ID="id", GENESYS_CLIENT_SECRET="s", GENESYS_REGION="mypurecloud.ie"):
        target = UpstreamTarget.from_settings()
        assert (target.name, target.login_url, target.api_url) == ("genesys", "https://login.mypurecloud.ie", "https://api.mypurecloud.ie")
        assert target.completions_url == "https://api.mypurecloud.ie/api/v2/ai/generations/chat/completions"
    with override_settings(GENESYS_CLIENT_ID="id", GENESYS_CLIENT_SECRET="s", GENESYS_API_URL="https://gw.example/"):
        assert UpstreamTarget.from_settings().api_url == "https://gw.example"
    with override_settings(GENESYS_CLIENT_ID="", GENESYS_CLIENT_SECRET="s"):
        assert UpstreamTarget.from_settings().name == "emulator"


async def test_completions_reuse_the_upstream_connection(emulator):
    httpx.post(emulator.url + "/_emulator/reset")
    client = GenesysClient()
    for _ in range(5):
        text, finish = await collect(client, f"again {nonce()}")
        assert finish.finish_reason == "stop"
    counts = stats(emulator)
    assert counts["completion_requests"] == 5 and counts["completion_connections"] == 1


async def test_more_streams_than_connections_wait_their_turn_and_all_finish(emulator):
    import asyncio

    from chat.upstream import genesys

    httpx.post(emulator.url + "/_emulator/reset")
    with override_settings(UPSTREAM_MAX_CONNECTIONS=2):
        genesys._stream_pools.clear()  # a pool with fewer connections for this loop
        client = GenesysClient()
        results = await asyncio.gather(*(collect(client, f"queue {i} {nonce()} [[emulator tokens=20 rate=200]]") for i in range(6)))
    assert all(finish.finish_reason == "stop" and len(text.split()) == 20 for text, finish in results)
    counts = stats(emulator)
    assert counts["completion_requests"] == 6 and counts["completion_connections"] <= 2
