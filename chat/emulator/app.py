"""An emulator of the Genesys Cloud AI Gateway as a plain ASGI app (no framework, no Django).

It is the upstream for local runs, the tests (over a real loopback socket) and the benchmark, so
it speaks the seed protocol exactly (OAuth client-credentials tokens with expiry, streaming chat
completions, the documented error statuses) plus the OpenAI shape at ``/v1/chat/completions``.
Faults are injected per request with directives (see ``faults.py``).

Routes:
    GET  /health                                    -> 200 ok
    POST /oauth/token                               -> bearer token (HTTP Basic client auth)
    POST /api/v2/ai/generations/chat/completions    -> Genesys completion (SSE or JSON)
    POST /v1/chat/completions                       -> OpenAI completion (SSE or JSON)
    GET  /_emulator/stats, POST /_emulator/reset    -> counters for tests and the benchmark
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from .faults import DirectiveError, Faults, parse_faults, split_directives
from .streaming import GENESYS, OPENAI, Dialect, PacingClock, Reply, dumps, pause, send_full, send_stream
from .text import reply_tokens

GENESYS_COMPLETIONS_PATH = "/api/v2/ai/generations/chat/completions"
OPENAI_COMPLETIONS_PATH = "/v1/chat/completions"
TOKEN_PATH = "/oauth/token"

ROLES = ("system", "user", "assistant")
OPENAI_ROLES = ("system", "user", "assistant", "developer", "tool")
MAX_BODY = 8 * 1024 * 1024
CONTEXT_WINDOW = 32_768  # prompt tokens; beyond it the gateway answers 400 (token limit)

# status -> (code, message) for injected faults, worded like the gateway's own errors.
FAULT_ERRORS = {
    400: ("bad.request", "The request was rejected as invalid (emulator fault=400)."),
    401: ("authentication.required", "The access token is invalid or expired; request a new token."),
    403: ("missing.permissions",
          "AI Gateway is not enabled for this organization or the client lacks scope ai:generation:write"),
    429: ("too.many.requests", "Rate limit exceeded for the AI Gateway; retry after the indicated time."),
    500: ("internal.server.error", "The AI Gateway had an internal error."),
    502: ("bad.gateway", "The AI Gateway could not reach the model provider."),
    503: ("service.unavailable", "The AI Gateway is temporarily unavailable."),
    504: ("gateway.timeout", "The model provider did not answer in time."),
}


@dataclass(frozen=True)
class EmulatorConfig:
    client_id: str = "emulator"
    client_secret: str = "emulator-secret"
    token_ttl: int = 86399  # seconds, returned as expires_in and enforced
    ttft_ms: float = 300
    tokens_per_second: float = 40.0  # 0 = as fast as possible
    reply_tokens: int = 120
    chunk_tokens: int = 1  # words per SSE content event
    models: tuple[str, ...] = ("gpt-4", "gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3-70b")


class HTTPError(Exception):
    """An error answer: status, machine code and a human sentence."""

    def __init__(self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or []


def bad_request(message: str) -> HTTPError:
    return HTTPError(400, "bad.request", message)


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict]  # as received; part of the fault-counter key
    pairs: tuple[tuple[str, str], ...]  # (role, text content)
    model: str
    max_tokens: int | None
    stream: bool


class EmulatorState:
    """Issued tokens, fault counters and statistics of one emulator process."""

    def __init__(self) -> None:
        self.tokens: dict[str, float] = {}  # access token -> monotonic expiry
        self.fault_hits: dict[str, int] = {}
        self.active_streams = 0
        self.reset()

    def reset(self) -> None:
        """Zero counters and fault state. Tokens stay valid and the active gauge stays true."""
        self.fault_hits.clear()
        self.token_requests = 0
        self.completion_requests = 0
        # Client addresses (host, port) seen on completion requests: one per TCP connection, so
        # a client that reuses its connections shows fewer of them than it made requests.
        self.completion_clients: set[tuple] = set()
        self.completed_streams = 0
        self.faults_injected = 0
        self.client_disconnects = 0

    def issue_token(self, ttl: float) -> str:
        now = time.monotonic()
        if len(self.tokens) > 10_000:
            self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
        token = "emu-" + secrets.token_hex(16)
        self.tokens[token] = now + ttl
        return token

    def token_valid(self, token: str) -> bool:
        expiry = self.tokens.get(token)
        if expiry is None:
            return False
        if expiry <= time.monotonic():
            del self.tokens[token]
            return False
        return True

    def revoke(self, token: str) -> None:
        self.tokens.pop(token, None)

    def hit(self, key: str) -> int:
        """Count one more request carrying this directive and these messages."""
        count = self.fault_hits.get(key, 0) + 1
        self.fault_hits[key] = count
        return count

    def stats(self) -> dict[str, int]:
        return {
            "token_requests": self.token_requests,
            "completion_requests": self.completion_requests,
            "completion_connections": len(self.completion_clients),
            "active_streams": self.active_streams,
            "completed_streams": self.completed_streams,
            "faults_injected": self.faults_injected,
            "client_disconnects": self.client_disconnects,
        }


class EmulatorApp:
    """The ASGI callable. ``state`` is public so in-process users can inspect it."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.state = EmulatorState()
        self.clock: PacingClock | None = None  # made on first use, in the serving loop
        self.routes = {
            ("GET", "/health"): self.health,
            ("POST", TOKEN_PATH): self.token,
            ("POST", GENESYS_COMPLETIONS_PATH): self.genesys_completion,
            ("POST", OPENAI_COMPLETIONS_PATH): self.openai_completion,
            ("GET", "/_emulator/stats"): self.stats,
            ("POST", "/_emulator/reset"): self.reset,
        }

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        handler = self.routes.get((scope["method"], path))
        dialect = OPENAI if path.startswith("/v1/") else GENESYS
        try:
            if handler is None:
                if any(p == path for _, p in self.routes):
                    raise HTTPError(405, "method.not.allowed", f"{scope['method']} is not allowed on {path}.")
                raise HTTPError(404, "not.found", f"No such endpoint: {path}.")
            await handler(scope, receive, send)
        except HTTPError as err:
            await send_json(send, err.status, dialect.error_body(err.status, err.code, err.message), err.headers)
        except _ClientGone:
            self.state.client_disconnects += 1

    # -- small endpoints -------------------------------------------------------------------

    async def health(self, scope, receive, send) -> None:
        await send_bytes(send, 200, b"ok", b"text/plain")

    async def stats(self, scope, receive, send) -> None:
        await send_json(send, 200, self.state.stats())

    async def reset(self, scope, receive, send) -> None:
        self.state.reset()
        await send_json(send, 200, self.state.stats())

    async def token(self, scope, receive, send) -> None:
        """OAuth2 client credentials; errors use the OAuth error shape, like the real login host."""
        self.state.token_requests += 1
        body = await read_body(receive)
        if not self._client_ok(header(scope, b"authorization")):
            await send_json(send, 401, {
                "error": "invalid_client",
                "error_description": "Client authentication failed: send HTTP Basic credentials client_id:client_secret.",
            }, [(b"www-authenticate", b'Basic realm="emulator"')])
            return
        form = parse_qs(body.decode("latin-1"))
        grant = form.get("grant_type", [""])[0]
        if grant != "client_credentials":
            await send_json(send, 400, {
                "error": "unsupported_grant_type",
                "error_description": f"grant_type must be client_credentials, got '{grant}'.",
            })
            return
        ttl = self.config.token_ttl
        await send_json(send, 200, {
            "access_token": self.state.issue_token(ttl), "token_type": "bearer", "expires_in": ttl,
        }, [(b"cache-control", b"no-store")])

    def _client_ok(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            client_id, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and hmac.compare_digest(client_id, self.config.client_id) and hmac.compare_digest(
            secret, self.config.client_secret)

    # -- completions -----------------------------------------------------------------------

    async def genesys_completion(self, scope, receive, send) -> None:
        self.state.completion_requests += 1
        if scope.get("client"):
            self.state.completion_clients.add(tuple(scope["client"]))
        token = bearer(scope)
        if not token or not self.state.token_valid(token):
            what = "is missing" if not token else "is invalid or expired"
            raise HTTPError(401, "authentication.required",
                            f"The bearer token {what}; request a new token from /oauth/token.")
        request = validate_genesys(load_json(await read_body(receive)), self.config.models)
        await self.complete(scope, receive, send, request, GENESYS, token)

    async def openai_completion(self, scope, receive, send) -> None:
        self.state.completion_requests += 1
        token = bearer(scope)
        if not token:
            raise HTTPError(401, "invalid_api_key", "Send an Authorization: Bearer <key> header (any key works).")
        request = validate_openai(load_json(await read_body(receive)))
        await self.complete(scope, receive, send, request, OPENAI, token)

    async def complete(self, scope, receive, send, request: ChatRequest, dialect: Dialect, token: str) -> None:
        """Apply directives, then answer with a fault or a (streamed) completion."""
        pairs, faults = _directives(request.pairs, header(scope, b"x-emulator"))
        fault, expire = self._due_faults(faults, request.messages)

        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        self.state.active_streams += 1
        try:
            if faults.stall_first and not await pause(faults.stall_first, disconnected):
                raise _ClientGone
            if expire:
                self.state.revoke(token)
                code, message = FAULT_ERRORS[401]
                raise HTTPError(401, code, message)
            if fault:
                raise _fault_error(fault, faults.retry_after)
            reply = self._reply(request, pairs, faults)
            if request.stream:
                done = await send_stream(send, reply, dialect, disconnected, self._clock())
            else:
                done = await send_full(send, reply, dialect, disconnected)
            if done:
                self.state.completed_streams += 1
            else:
                raise _ClientGone
        finally:
            self.state.active_streams -= 1
            disconnected.cancel()

    def _clock(self) -> PacingClock:
        loop = asyncio.get_running_loop()
        if self.clock is None or self.clock.loop is not loop:
            self.clock = PacingClock(loop)
        return self.clock

    def _due_faults(self, faults: Faults, messages: list[dict]) -> tuple[int | None, bool]:
        """Which of the requested fault / expire_token apply to this request (``times`` counting)."""
        if not (faults.fault or faults.expire_token):
            return None, False
        key_src = faults.directive + "\n" + json.dumps(messages, sort_keys=True, separators=(",", ":"))
        count = self.state.hit(hashlib.sha256(key_src.encode()).hexdigest())
        fault = faults.fault if faults.times is None or count <= faults.times else None
        expire = faults.expire_token and count <= (1 if faults.times is None else faults.times)
        if fault or expire:
            self.state.faults_injected += 1
        return fault, expire

    def _reply(self, request: ChatRequest, pairs: tuple[tuple[str, str], ...], faults: Faults) -> Reply:
        cfg = self.config
        length = faults.tokens or cfg.reply_tokens
        tokens = reply_tokens(pairs, length, faults.think, faults.gen_error)
        finish = "stop"
        if request.max_tokens is not None and len(tokens) > request.max_tokens:
            tokens, finish = tokens[: request.max_tokens], "length"
        chars = sum(len(content) for _, content in request.pairs)
        return Reply(
            tokens=tokens,
            finish_reason=finish,
            prompt_tokens=math.ceil(chars / 4),
            model=request.model,
            ttft=(cfg.ttft_ms if faults.ttft_ms is None else faults.ttft_ms) / 1000,
            rate=cfg.tokens_per_second if faults.rate is None else faults.rate,
            chunk_tokens=faults.chunk_tokens or cfg.chunk_tokens,
            faults=faults,
        )


def build_app(config: EmulatorConfig | None = None) -> EmulatorApp:
    """The emulator's ASGI app with its own state."""
    return EmulatorApp(config or EmulatorConfig())


# -- request validation ---------------------------------------------------------------------

def load_json(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.")
    return data


def validate_genesys(data: dict, models: tuple[str, ...]) -> ChatRequest:
    messages = data.get("messages")
    pairs = _validate_messages(messages, ROLES, allow_parts=False)
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise bad_request("params must be a JSON object.")
    model = params.get("model_id", models[0])
    if model not in models:
        raise bad_request(f"params.model_id '{model}' is not a supported model; use one of {', '.join(models)}.")
    temperature = params.get("temperature", 0.7)
    if not _is_number(temperature) or not 0 <= temperature <= 1:
        raise bad_request("params.temperature must be a number between 0.0 and 1.0.")
    max_tokens = params.get("max_tokens", 4096)
    if not _is_int(max_tokens) or not 1 <= max_tokens <= 4096:
        raise bad_request("params.max_tokens must be an integer between 1 and 4096.")
    stream = params.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("params.stream must be true or false.")
    _check_context(pairs)
    return ChatRequest(messages, pairs, model, max_tokens, stream)


def validate_openai(data: dict) -> ChatRequest:
    messages = data.get("messages")
    pairs = _validate_messages(messages, OPENAI_ROLES, allow_parts=True)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model must be a non-empty string.")
    temperature = data.get("temperature", 1.0)
    if temperature is not None and (not _is_number(temperature) or not 0 <= temperature <= 2):
        raise bad_request("temperature must be a number between 0 and 2.")
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise bad_request("max_tokens must be a positive integer.")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("stream must be true or false.")
    _check_context(pairs)
    return ChatRequest(messages, pairs, model, max_tokens, stream)


def _validate_messages(messages: object, roles: tuple[str, ...], allow_parts: bool) -> tuple[tuple[str, str], ...]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list of {role, content} objects.")
    pairs = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{i}] must be an object with role and content.")
        role, content = message.get("role"), message.get("content")
        if role not in roles:
            raise bad_request(f"messages[{i}].role must be one of {', '.join(roles)}; got {json.dumps(role)}.")
        if allow_parts and content is None:
            content = ""
        elif allow_parts and isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        if not isinstance(content, str):
            raise bad_request(f"messages[{i}].content must be a string.")
        pairs.append((role, content))
    return tuple(pairs)


def _check_context(pairs: tuple[tuple[str, str], ...]) -> None:
    prompt_tokens = math.ceil(sum(len(c) for _, c in pairs) / 4)
    if prompt_tokens > CONTEXT_WINDOW:
        raise bad_request(f"The conversation is about {prompt_tokens} tokens, over the model's limit of {CONTEXT_WINDOW}.")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _directives(pairs: tuple[tuple[str, str], ...], header_value: str) -> tuple[tuple[tuple[str, str], ...], Faults]:
    """Parse the header and the last user message's directive; return the cleaned messages."""
    in_message = ""
    for i in range(len(pairs) - 1, -1, -1):
        if pairs[i][0] == "user":
            in_message, cleaned = split_directives(pairs[i][1])
            if in_message:
                pairs = pairs[:i] + (("user", cleaned),) + pairs[i + 1:]
            break
    if not in_message and not header_value:
        return pairs, Faults()
    try:
        return pairs, parse_faults(header_value, in_message)
    except DirectiveError as err:
        raise bad_request(str(err)) from None


def _fault_error(status: int, retry_after: int | None) -> HTTPError:
    code, message = FAULT_ERRORS[status]
    headers = [(b"retry-after", str(retry_after).encode())] if status == 429 and retry_after is not None else []
    return HTTPError(status, code, message, headers)


# -- ASGI plumbing --------------------------------------------------------------------------

class _ClientGone(Exception):
    """The client disconnected; nothing more to send."""


def header(scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def bearer(scope) -> str:
    scheme, _, token = header(scope, b"authorization").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def read_body(receive) -> bytes:
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPError(413, "request.too.large", f"The request body is over {MAX_BODY} bytes.")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _wait_disconnect(receive) -> None:
    """Completes when the client goes away (or the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_bytes(send, status: int, body: bytes, content_type: bytes, headers=()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def send_json(send, status: int, obj: object, headers=()) -> None:
    await send_bytes(send, status, dumps(obj), b"application/json", headers)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
