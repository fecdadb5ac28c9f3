"""Writing a reply: the two wire dialects and the paced SSE writer.

The per-chunk path is the hot loop of the benchmark upstream (thousands of concurrent streams),
so each response precomputes the bytes around the chunk text and the loop only JSON-escapes
the text (one C call), sleeps until an absolute deadline and sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_str

from .faults import Faults


class DropConnection(Exception):
    """Raised to make the server abort the connection mid-response (the ``drop_after`` fault).

    uvicorn closes the transport when an app raises after the response started, so the client
    sees a truncated chunked body. The matching log record is filtered out, it is not a bug.
    """


class _DropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DropConnection))


_drop_filter = _DropFilter()


def drop_connection() -> DropConnection:
    """The exception to raise; installs the log filter first (after uvicorn set up logging)."""
    logger = logging.getLogger("uvicorn.error")
    if _drop_filter not in logger.filters:
        logger.addFilter(_drop_filter)
    return DropConnection("emulator fault: drop_after")


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Reply:
    """Everything needed to send one completion."""

    tokens: tuple[str, ...]  # already cut to max_tokens
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    model: str
    ttft: float  # seconds
    rate: float  # tokens per second, 0 = no pacing
    chunk_tokens: int
    faults: Faults

    @property
    def usage(self) -> dict[str, int]:
        c = len(self.tokens)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": c, "total_tokens": self.prompt_tokens + c}


class Dialect:
    """Genesys AI Gateway wire format."""

    name = "genesys"

    def new_id(self) -> str:
        return "gen-" + secrets.token_hex(12)

    def _head(self, gen_id: str, model: str) -> str:
        return '{"id":"%s",' % gen_id

    def frames(self, gen_id: str, model: str) -> tuple[bytes, bytes, bytes]:
        """(role event, content prefix, content suffix)."""
        head = self._head(gen_id, model)
        role = f'data: {head}"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}\n\n'
        prefix = f'data: {head}"choices":[{{"index":0,"delta":{{"content":'
        suffix = '},"finish_reason":null}]}\n\n'
        return role.encode(), prefix.encode(), suffix.encode()

    def final_event(self, gen_id: str, model: str, finish_reason: str, usage: dict[str, int]) -> bytes:
        head = self._head(gen_id, model)
        body = f'{head}"choices":[{{"index":0,"delta":{{}},"finish_reason":"{finish_reason}"}}],"usage":'
        return b"data: " + body.encode() + dumps(usage) + b"}\n\ndata: [DONE]\n\n"

    def full_body(self, gen_id: str, reply: Reply, text: str) -> dict:
        return {
            "id": gen_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reply.finish_reason}],
            "usage": reply.usage,
        }

    def error_body(self, status: int, code: str, message: str) -> dict:
        return {"message": message, "code": code, "status": status}


class OpenAIDialect(Dialect):
    """OpenAI ``/v1/chat/completions`` wire format (for gateways such as LiteLLM in front)."""

    name = "openai"
    _ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 429: "rate_limit_error"}

    def new_id(self) -> str:
        return "chatcmpl-" + secrets.token_hex(12)

    def _head(self, gen_id: str, model: str) -> str:
        return '{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,' % (
            gen_id, int(time.time()), _json_str(model))

    def full_body(self, gen_id: str, reply: Reply, text: str) -> dict:
        body = {"id": gen_id, "object": "chat.completion", "created": int(time.time()), "model": reply.model}
        body.update(super().full_body(gen_id, reply, text))
        return body

    def error_body(self, status: int, code: str, message: str) -> dict:
        kind = self._ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}


GENESYS = Dialect()
OPENAI = OpenAIDialect()

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
MALFORMED_EVENT = b"data: {this is not json\n\n"


async def pause(seconds: float, disconnected: asyncio.Future) -> bool:
    """Sleep, but wake early if the client goes away. Returns False when it went away."""
    if seconds > 0:
        if seconds > 0.25:
            await asyncio.wait((disconnected,), timeout=seconds)
        else:
            await asyncio.sleep(seconds)
    return not disconnected.done()


class PacingClock:
    """Wakes paced streams on a shared 2 ms grid.

    With thousands of streams, one ``asyncio.sleep`` per chunk means one timer handle and heap
    operation per chunk; here all streams due in the same 2 ms slot share one timer and each
    waits on a bare future (so cancelling one stream never disturbs another). Deadlines are
    rounded up, never down, so the rate is exact and no chunk comes early.
    """

    TICK = 0.002

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._slots: dict[int, list[asyncio.Future]] = {}

    def until(self, deadline: float) -> asyncio.Future:
        slot = -int(-deadline // self.TICK)  # ceil
        waiters = self._slots.get(slot)
        if waiters is None:
            waiters = self._slots[slot] = []
            self.loop.call_at(slot * self.TICK, self._fire, slot)
        future = self.loop.create_future()
        waiters.append(future)
        return future

    def _fire(self, slot: int) -> None:
        for future in self._slots.pop(slot):
            if not future.done():
                future.set_result(None)


MAX_BATCH = 16  # events per write when chunks are already due (full speed or catching up)


async def send_stream(send, reply: Reply, dialect: Dialect, disconnected: asyncio.Future,
                      clock: PacingClock) -> bool:
    """Stream ``reply`` as SSE. Returns True when the whole stream was sent.

    Pacing follows absolute deadlines (first content at ttft, then one chunk every
    chunk_tokens/rate seconds), so sleep overshoot never accumulates. Events that are already
    due (rate 0, or a stream catching up under load) go out together, up to MAX_BATCH per
    write, with a yield to the loop in between so a full-speed stream cannot starve the others.
    Faults fire "after i content chunks": malformed at 2, stall_mid at `after`, drop at
    `drop_after`, each clamped to the number of chunks so they also fire on short replies.
    """
    loop = clock.loop
    gen_id = dialect.new_id()
    role_event, prefix, suffix = dialect.frames(gen_id, reply.model)
    faults = reply.faults
    tokens, rate, k = reply.tokens, reply.rate, reply.chunk_tokens
    n_chunks = -(-len(tokens) // k)
    has_faults = faults.malformed or faults.stall_mid > 0 or faults.drop_after is not None
    malformed_at = min(2, n_chunks) if faults.malformed else -1
    stall_at = min(faults.after, n_chunks) if faults.stall_mid > 0 else -1
    drop_at = min(faults.drop_after, n_chunks) if faults.drop_after is not None else -1

    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    base = loop.time() + reply.ttft
    if not await pause(reply.ttft, disconnected):
        return False
    pending = [role_event]

    chunk = 0
    for start in range(0, len(tokens) + 1, k):
        if has_faults:
            if chunk == drop_at:
                await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
                raise drop_connection()
            if chunk == malformed_at:
                pending.append(MALFORMED_EVENT)
            if chunk == stall_at:
                await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
                pending = []
                if not await pause(faults.stall_mid, disconnected):
                    return False
                base += faults.stall_mid
        if start >= len(tokens):
            break
        if rate:
            deadline = base + start / rate
            if deadline > loop.time():
                if pending:
                    await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
                    pending = []
                await clock.until(deadline)
                if disconnected.done():
                    return False
        text = tokens[start] if k == 1 else "".join(tokens[start:start + k])
        pending.append(prefix + _json_str(text).encode() + suffix)
        chunk += 1
        if len(pending) >= MAX_BATCH:
            await send({"type": "http.response.body", "body": b"".join(pending), "more_body": True})
            pending = []
            await asyncio.sleep(0)
            if disconnected.done():
                return False

    pending.append(dialect.final_event(gen_id, reply.model, reply.finish_reason, reply.usage))
    await send({"type": "http.response.body", "body": b"".join(pending), "more_body": False})
    return True


async def send_full(send, reply: Reply, dialect: Dialect, disconnected: asyncio.Future) -> bool:
    """Answer with one JSON body after the time the stream would have taken."""
    duration = reply.ttft + reply.faults.stall_mid + (len(reply.tokens) / reply.rate if reply.rate else 0)
    if not await pause(duration, disconnected):
        return False
    text = "".join(reply.tokens)
    body = dumps(dialect.full_body(dialect.new_id(), reply, text))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if reply.faults.drop_after is not None:
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise drop_connection()
    await send({"type": "http.response.body", "body": body, "more_body": False})
    return True
