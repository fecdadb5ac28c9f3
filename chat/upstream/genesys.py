"""The client for the Genesys Cloud AI Gateway (and the bundled emulator, which speaks the same).

Three parts: `UpstreamTarget` (where to go and with which credentials, from settings),
`TokenManager` (OAuth2 client credentials, cached in-process and in the shared Django cache,
refreshed 60 s before expiry) and `GenesysClient.stream_chat()` (one streamed completion with the
retry policy below). Tokens come over one `httpx.AsyncClient` per process and event loop;
completion streams over a `StreamPool` (streaming.py: why the hot path does not use httpx).

Both honour HTTPS_PROXY / HTTP_PROXY / NO_PROXY, decided in one place (`streaming.Proxies`).

Retry policy: 429 waits for Retry-After (else backoff); 5xx, refused connections, timeouts and
streams that break before any text wait with exponential backoff and full jitter; 401 refreshes the
token once; 400 and 403 are final. Attempts are bounded (UPSTREAM_MAX_ATTEMPTS) and so is the time
to first text (UPSTREAM_DEADLINE). Once text has been yielded nothing is retried (UpstreamInterrupted).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from django.conf import settings
from django.core.cache import cache

from chat.upstream import errors
from chat.upstream.sse import SSEDecoder
from chat.upstream.streaming import Proxies, StreamError, StreamPool, StreamTimeout, ssl_context
from gateway_portal import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpstreamTarget:
    name: str  # "genesys" or "emulator": shown at start-up and in logs, never the secret
    login_url: str
    api_url: str
    completions_path: str
    client_id: str
    client_secret: str
    scope: str

    @classmethod
    def from_settings(cls) -> UpstreamTarget:
        if settings.GENESYS_CLIENT_ID and settings.GENESYS_CLIENT_SECRET:
            region = settings.GENESYS_REGION
            return cls(
                name="genesys",
                login_url=(settings.GENESYS_LOGIN_URL or f"https://login.{region}").rstrip("/"),
                api_url=(settings.GENESYS_API_URL or f"https://api.{region}").rstrip("/"),
                completions_path=settings.GENESYS_COMPLETIONS_PATH,
                client_id=settings.GENESYS_CLIENT_ID,
                client_secret=settings.GENESYS_CLIENT_SECRET,
                scope=settings.GENESYS_SCOPE,
            )
        base = settings.EMULATOR_URL.rstrip("/")
        return cls(
            name="emulator",
            login_url=base,
            api_url=base,
            completions_path=settings.GENESYS_COMPLETIONS_PATH,
            client_id="emulator",
            client_secret="emulator-secret",
            scope=settings.GENESYS_SCOPE,
        )

    @property
    def completions_url(self) -> str:
        return self.api_url + self.completions_path

    @property
    def token_cache_key(self) -> str:
        digest = hashlib.sha256(f"{self.login_url}\0{self.client_id}".encode()).hexdigest()[:24]
        return f"upstream-token:{digest}"


# --- the shared HTTP clients --------------------------------------------------------------------

USER_AGENT = "gateway-portal/0.1"
_clients: dict[asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, str | None]] = {}
_stream_pools: dict[asyncio.AbstractEventLoop, StreamPool] = {}


def proxies() -> Proxies:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY (settings.py reads them from the environment)."""
    return Proxies(https=settings.HTTPS_PROXY, http=settings.HTTP_PROXY, no_proxy=settings.NO_PROXY)


def http_client(url: str) -> httpx.AsyncClient:
    """The process's AsyncClient (tokens) for the running event loop (tests run one loop per test),
    through the proxy `url` needs: Proxies decides for tokens and streams alike, not httpx's own
    reading of the environment (trust_env=False), so both always take the same way out."""
    loop = asyncio.get_running_loop()
    proxy = proxies().url_for(url)
    client, client_proxy = _clients.get(loop, (None, None))
    if client is None or client.is_closed or client_proxy != proxy:
        for other in [lp for lp in _clients if lp.is_closed()]:
            del _clients[other]
        client = httpx.AsyncClient(
            verify=ssl_context(settings.UPSTREAM_TLS_VERIFY),
            timeout=_timeout(),
            headers={"User-Agent": USER_AGENT},
            proxy=proxy,
            trust_env=False,
        )
        _clients[loop] = (client, proxy)
    return client


def stream_pool() -> StreamPool:
    """The process's connection pool for completion streams, for the running event loop."""
    loop = asyncio.get_running_loop()
    pool = _stream_pools.get(loop)
    if pool is None or pool.proxies != proxies():
        for other in [lp for lp in _stream_pools if lp.is_closed()]:
            del _stream_pools[other]
        pool = StreamPool(
            proxies=proxies(),
            verify=settings.UPSTREAM_TLS_VERIFY,
            max_connections=settings.UPSTREAM_MAX_CONNECTIONS,
            keepalive_expiry=30.0,
            connect_timeout=settings.UPSTREAM_CONNECT_TIMEOUT,
            read_timeout=settings.UPSTREAM_READ_TIMEOUT,
        )
        _stream_pools[loop] = pool
    return pool


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.UPSTREAM_CONNECT_TIMEOUT,
        read=settings.UPSTREAM_READ_TIMEOUT,
        write=settings.UPSTREAM_CONNECT_TIMEOUT,
        pool=settings.UPSTREAM_CONNECT_TIMEOUT,
    )


# --- tokens -------------------------------------------------------------------------------------


class TokenManager:
    """OAuth2 client-credentials tokens, shared by every process through the Django cache.

    The in-process copy answers almost every call without I/O; the cache is consulted only when
    it is missing or due, so a fleet asks the token endpoint about once per token lifetime.
    """

    REFRESH_MARGIN = 60.0  # seconds before expiry that a token counts as due

    def __init__(self, target: UpstreamTarget, clock=time.time):
        self.target = target
        self.clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self, *, rejected: str | None = None) -> str:
        """A valid token; `rejected` is one the upstream just refused (401), never handed out again."""
        if self._token and self._token != rejected and self.clock() < self._refresh_at:
            return self._token
        async with self._lock:
            if self._token and self._token != rejected and self.clock() < self._refresh_at:
                return self._token
            cached = await cache.aget(self.target.token_cache_key)
            if cached and cached["token"] != rejected and self.clock() < cached["refresh_at"]:
                self._token, self._refresh_at = cached["token"], cached["refresh_at"]
                return self._token
            token, lifetime = await self._fetch()
            # Refresh 60 s early; for very short lifetimes (emulator, tests) halfway instead.
            margin = min(self.REFRESH_MARGIN, lifetime / 2)
            self._token, self._refresh_at = token, self.clock() + lifetime - margin
            await cache.aset(
                self.target.token_cache_key,
                {"token": token, "refresh_at": self._refresh_at},
                timeout=max(1, int(lifetime - margin)),
            )
            return token

    async def _fetch(self) -> tuple[str, float]:
        target = self.target
        basic = base64.b64encode(f"{target.client_id}:{target.client_secret}".encode()).decode()
        try:
            response = await http_client(target.login_url).post(
                target.login_url + "/oauth/token",
                headers={"Authorization": f"Basic {basic}"},
                data={"grant_type": "client_credentials", "scope": target.scope},
            )
        except httpx.TimeoutException as exc:
            raise errors.UpstreamTimeout() from exc
        except httpx.TransportError as exc:
            raise errors.UpstreamUnavailable() from exc
        if response.status_code == 407:
            log.error("The proxy refused the token request to %s (HTTP 407): check the credentials in "
                      "HTTPS_PROXY / HTTP_PROXY", target.login_url)
            raise errors.UpstreamUnavailable(status=407)
        if response.status_code in (400, 401, 403):
            log.error("Token endpoint %s refused the client credentials: HTTP %s", target.login_url, response.status_code)
            raise errors.UpstreamAuthFailed(status=response.status_code)
        if response.status_code != 200:
            raise errors.UpstreamUnavailable(status=response.status_code)
        try:
            body = response.json()
            return body["access_token"], float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.UpstreamUnavailable("The AI service's sign-in answered in an unexpected format. Please try again later.") from exc


# --- completions --------------------------------------------------------------------------------


@dataclass
class TextBatch:
    """All content that arrived in one network read."""

    text: str


@dataclass
class Finish:
    finish_reason: str
    usage: dict | None  # the upstream's usage block when it sent one


class GenesysClient:
    def __init__(self, target: UpstreamTarget | None = None, tokens: TokenManager | None = None, sleep=asyncio.sleep):
        self.target = target or UpstreamTarget.from_settings()
        self.tokens = tokens or TokenManager(self.target)
        self.sleep = sleep

    async def stream_chat(
        self, *, messages: list[dict], model_id: str, temperature: float, max_tokens: int, request_id: str
    ) -> AsyncIterator[TextBatch | Finish]:
        payload = {
            "messages": messages,
            "params": {"model_id": model_id, "temperature": temperature, "max_tokens": max_tokens, "stream": True},
        }
        body = json.dumps(payload).encode()
        deadline = time.monotonic() + settings.UPSTREAM_DEADLINE
        attempts = settings.UPSTREAM_MAX_ATTEMPTS
        rejected_token = None
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            yielded = False
            try:
                token = await self.tokens.get(rejected=rejected_token)
                async for event in self._attempt(body, token, request_id):
                    yielded = yielded or isinstance(event, TextBatch)
                    yield event
                return
            except _TokenRejected:
                if refreshed:
                    raise errors.UpstreamAuthFailed(status=401) from None
                refreshed, rejected_token = True, token
                attempt -= 1  # a refresh is not a failed attempt
                continue
            except errors.UpstreamError as exc:
                if yielded:
                    raise errors.UpstreamInterrupted(status=exc.status) from exc
                if not exc.retryable or attempt >= attempts:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("upstream attempt %d for %s failed (%s); retrying in %.2fs", attempt, request_id, exc.code, delay)
                metrics.UPSTREAM_RETRIES.labels(exc.code).inc()
                await self.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog): spreads a burst of retries from many streams.
        ceiling = min(settings.UPSTREAM_BACKOFF_MAX, settings.UPSTREAM_BACKOFF_BASE * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _attempt(self, body: bytes, token: str, request_id: str) -> AsyncIterator[TextBatch | Finish]:
        """One HTTP exchange; every network error is translated here and nowhere else."""
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "User-Agent": USER_AGENT,
            "X-Request-Id": request_id,
        }
        url = self.target.completions_url
        try:
            response = await stream_pool().request("POST", url, headers, body)
        except StreamTimeout as exc:
            raise errors.UpstreamTimeout() from exc
        except StreamError as exc:  # refused, reset, TLS refused, malformed head
            log.warning("upstream request for %s failed: %s", request_id, exc)
            raise errors.UpstreamUnavailable() from exc
        try:
            if response.status != 200:
                _raise_for_status(response.status, response.headers, await response.read(), url)
            decoder = SSEDecoder()
            chunks = response.chunks()
            async for raw in chunks:
                finish = None
                pieces = []
                for data in decoder.feed(raw):
                    event = _parse_event(data, request_id)
                    if event is None:
                        continue
                    if event is _DONE:
                        finish = finish or Finish("stop", None)
                        break
                    text, finished = event
                    if text:
                        pieces.append(text)
                    if finished is not None:
                        finish = finished
                if pieces:
                    yield TextBatch("".join(pieces))
                if finish is not None:
                    yield finish
                    # Read the body to its end (the last chunk, [DONE]) so the connection goes back
                    # to the pool: no new TCP/TLS handshake for the next completion.
                    async for _ in chunks:
                        pass
                    return
            raise errors.UpstreamUnavailable("The AI service ended the answer early. Please try again.")
        except StreamTimeout as exc:
            raise errors.UpstreamTimeout() from exc
        except StreamError as exc:  # reset, or a half-sent chunked body
            raise errors.UpstreamUnavailable() from exc
        finally:
            response.close()


class _TokenRejected(Exception):
    pass


_DONE = object()


def _parse_event(data: str, request_id: str):
    if data == "[DONE]":
        return _DONE
    try:
        chunk = json.loads(data)
        choice = chunk["choices"][0] if chunk.get("choices") else {}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        # One bad line should not lose an answer that is otherwise fine.
        log.warning("skipping a malformed event in the stream of %s", request_id)
        return None
    text = (choice.get("delta") or {}).get("content") or ""
    reason = choice.get("finish_reason")
    finish = Finish(reason, chunk.get("usage")) if reason else None
    return text, finish


def _raise_for_status(status: int, headers: dict[str, str], body: bytes, url: str):
    upstream_message = ""
    try:
        upstream_message = str(json.loads(body).get("message", ""))[:300]
    except (ValueError, AttributeError):
        pass
    if status == 401:
        raise _TokenRejected()
    if status == 400:
        detail = "The AI service rejected the request"
        detail += f": {upstream_message}" if upstream_message else "."
        if not detail.endswith("."):
            detail += "."
        raise errors.UpstreamRejected(detail + " Shorten the conversation or change the model or settings.", status=400)
    if status == 403:
        log.error("upstream answered 403 (scope ai:generation:write / AI Gateway enablement): %s", upstream_message)
        raise errors.UpstreamForbidden(status=403)
    if status == 429:
        raise errors.UpstreamRateLimited(retry_after=_retry_after(headers.get("retry-after")))
    if status == 407:
        log.error("The proxy refused the completion request to %s (HTTP 407): check the credentials in HTTP_PROXY", url)
        raise errors.UpstreamUnavailable(status=407)
    if status == 404:
        log.error("upstream answered 404 for %s: check GENESYS_API_URL / GENESYS_COMPLETIONS_PATH", url)
        raise errors.UpstreamError("The portal's AI service address is misconfigured. Please tell an administrator.", status=404)
    if status >= 500:
        raise errors.UpstreamUnavailable(status=status)
    raise errors.UpstreamError(status=status)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


_client: GenesysClient | None = None


def get_client() -> GenesysClient:
    """The process-wide client for the configured target (rebuilt when settings change it)."""
    global _client
    target = UpstreamTarget.from_settings()
    if _client is None or _client.target != target:
        _client = GenesysClient(target)
    return _client
