"""OpenAI's chat completion shapes: the request read into the portal's terms, and the answer,
its chunks and its errors written back. No I/O here; views.py and sse.py use these.

Supported: model, messages (system, developer, user, assistant; text content, as a string or as
text parts), temperature, max_tokens / max_completion_tokens, stream, stream_options.include_usage,
n = 1, user (ignored). Anything else that changes the answer (tools, n > 1, logprobs,
response_format other than text, stop, seed, ...) is refused with 400, not silently ignored.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from django.conf import settings

from chat.completion import Outcome
from chat.errors import InvalidRequest

# Parameters accepted without effect: they do not change the answer.
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
FINISH_REASONS = frozenset({"stop", "length", "content_filter"})

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    temperature: float
    max_tokens: int
    stream: bool
    include_usage: bool


def _refuse(sentence: str, param: str | None = None):
    error = InvalidRequest(sentence)
    error.param = param
    raise error


def parse_chat_request(body: bytes) -> ChatRequest:
    """The portal's request from OpenAI's JSON body; InvalidRequest (400) for what cannot be read
    or is not supported. The rules of chat/validation.py (model, ranges, lengths) are the
    executor's to apply, not repeated here."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        _refuse("The request body must be JSON.")
    if not isinstance(data, dict):
        _refuse("The request body must be a JSON object.")
    for name, value in data.items():
        if name in IGNORED or name in ("model", "messages", "temperature", "max_tokens", "max_completion_tokens", "stream", "stream_options"):
            continue
        if name == "n" and value in (None, 1):
            continue
        if name == "response_format" and (value is None or value == {"type": "text"}):
            continue
        if value is None or value is False or value == []:  # a client's explicit default
            continue
        _refuse(f"The parameter “{name}” is not supported by this portal.", name)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        _refuse("Name a model: “model” is required (GET /v1/models lists them).", "model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        _refuse("“messages” must be a non-empty list.", "messages")
    read = [_message(m, i) for i, m in enumerate(messages)]
    temperature = data.get("temperature")
    temperature = settings.PORTAL_DEFAULT_TEMPERATURE if temperature is None else temperature
    max_tokens = data.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = data.get("max_tokens")
    max_tokens = settings.PORTAL_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    if isinstance(max_tokens, float) and max_tokens.is_integer():
        max_tokens = int(max_tokens)
    stream = data.get("stream") or False
    if not isinstance(stream, bool):
        _refuse("“stream” must be true or false.", "stream")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        _refuse("“stream_options” must be an object.", "stream_options")
    return ChatRequest(model, read, temperature, max_tokens, stream, bool(options.get("include_usage")))


def _message(message, index: int) -> dict:
    if not isinstance(message, dict):
        _refuse(f"Message {index} must be an object with “role” and “content”.", "messages")
    role = message.get("role")
    role = ROLE_ALIASES.get(role, role)
    content = message.get("content")
    if isinstance(content, list):  # content parts: text only
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                _refuse(f"Message {index} has a part that is not text; this portal accepts text only.", "messages")
            texts.append(part["text"])
        content = "".join(texts)
    # The role and the text are the executor's to validate (chat/validation.py), with its sentences.
    return {"role": role, "content": content}


def error_body(sentence: str, status: int, code: str, param: str | None = None) -> dict:
    return {"error": {"message": sentence, "type": ERROR_TYPES.get(status, "api_error"), "code": code, "param": param}}


def retry_after_header(seconds: float | None) -> str:
    return str(max(1, math.ceil(seconds or 1)))


def usage(outcome: Outcome) -> dict:
    return {
        "prompt_tokens": outcome.input_tokens,
        "completion_tokens": outcome.output_tokens,
        "total_tokens": outcome.input_tokens + outcome.output_tokens,
    }


def finish_reason(outcome: Outcome) -> str:
    return outcome.finish_reason if outcome.finish_reason in FINISH_REASONS else "stop"


def completion_body(completion_id: str, model: str, outcome: Outcome) -> dict:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": outcome.text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(outcome),
            }
        ],
        "usage": usage(outcome),
    }


class Chunks:
    """The SSE events of one streamed completion. Each delta is the same JSON around its text, so
    the frame around it is built once and only the text is encoded per chunk."""

    def __init__(self, completion_id: str, model: str, include_usage: bool):
        self.head = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        self.include_usage = include_usage
        before = json.dumps({**self.head, "choices": [{"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": None}]}
                            | ({"usage": None} if include_usage else {}))
        # Split the frame at the empty content string: before + json(text) + after.
        cut = before.index('"content": ""') + len('"content": ')
        self._before, self._after = "data: " + before[:cut], before[cut + 2 :] + "\n\n"

    def _event(self, payload: dict) -> bytes:
        return ("data: " + json.dumps(payload) + "\n\n").encode()

    def role(self) -> bytes:
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        return self._event({**self.head, "choices": [choice], **({"usage": None} if self.include_usage else {})})

    def text(self, text: str) -> bytes:
        return (self._before + json.dumps(text) + self._after).encode()

    def finish(self, outcome: Outcome) -> bytes:
        choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason(outcome)}
        events = [self._event({**self.head, "choices": [choice], **({"usage": None} if self.include_usage else {})})]
        if self.include_usage:
            events.append(self._event({**self.head, "choices": [], "usage": usage(outcome)}))
        return b"".join(events) + b"data: [DONE]\n\n"

    def error(self, sentence: str, status: int, code: str) -> bytes:
        # After the 200 status was sent, an error can only be an event; OpenAI's SDK raises it.
        return self._event(error_body(sentence, status, code)) + b"data: [DONE]\n\n"
