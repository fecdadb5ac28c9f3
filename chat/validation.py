"""The seed's request validation, with limits from settings. Each error is a sentence a person can act on."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from chat.errors import InvalidRequest, ModelNotAllowed

ROLES = ("system", "user", "assistant")
TEMPERATURE_MIN, TEMPERATURE_MAX = 0.0, 1.0  # the seed's range (and the upstream's)


@dataclass(frozen=True)
class Limits:
    models: tuple[str, ...]
    max_tokens: int
    max_history_tokens: int
    max_message_chars: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            models=tuple(settings.PORTAL_MODELS),
            max_tokens=settings.PORTAL_MAX_TOKENS_LIMIT,
            max_history_tokens=settings.PORTAL_MAX_HISTORY_TOKENS,
            max_message_chars=settings.PORTAL_MAX_MESSAGE_CHARS,
        )


def estimate_tokens(chars: int) -> int:
    """The seed's estimate: four characters a token, rounded up."""
    return -(-chars // 4)


# NUL cannot be stored in PostgreSQL text, and a lone surrogate cannot be encoded as UTF-8: text
# with either would reach the upstream and then fail to be stored, so it is refused first.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def validate(messages: list[dict], *, model_id, temperature, max_tokens, limits: Limits | None = None) -> None:
    limits = limits or Limits.from_settings()
    if not isinstance(model_id, str) or _UNSTORABLE.search(model_id):
        raise InvalidRequest(f"That model name cannot be read. Pick one of: {', '.join(limits.models)}.")
    if model_id not in limits.models:
        raise ModelNotAllowed(f"The model “{model_id}” is not available here. Pick one of: {', '.join(limits.models)}.")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not TEMPERATURE_MIN <= temperature <= TEMPERATURE_MAX:
        raise InvalidRequest(f"Temperature must be a number from {TEMPERATURE_MIN} to {TEMPERATURE_MAX}.")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= limits.max_tokens:
        raise InvalidRequest(f"Max tokens must be a whole number from 1 to {limits.max_tokens}.")
    if not messages:
        raise InvalidRequest("There is nothing to send: write a message first.")
    total_chars = 0
    for message in messages:
        if message.get("role") not in ROLES:
            raise InvalidRequest(f"A message has the role “{message.get('role')}”; roles must be system, user or assistant.")
        content = message.get("content")
        if not isinstance(content, str):
            raise InvalidRequest("Every message must be text.")
        if _UNSTORABLE.search(content):
            raise InvalidRequest(
                "The message contains characters that cannot be stored (a NUL byte or half of an "
                "emoji pair). Remove them, or paste the text again, and send."
            )
        total_chars += len(content)
    last = messages[-1]["content"]
    if not last.strip():
        raise InvalidRequest("The message is empty: write something first.")
    if len(last) > limits.max_message_chars:
        raise InvalidRequest(
            f"The message is {len(last):,} characters long; the limit is {limits.max_message_chars:,}. Shorten it and send again."
        )
    estimated = estimate_tokens(total_chars)
    if estimate_tokens(len(last)) > limits.max_history_tokens:
        raise InvalidRequest(
            f"The message is about {estimated:,} tokens long; the limit is {limits.max_history_tokens:,}. "
            "Shorten it and send again."
        )
    if estimated > limits.max_history_tokens:
        raise InvalidRequest(
            f"This conversation is too long for the model (about {estimated:,} tokens; the limit is "
            f"{limits.max_history_tokens:,}). Start a new chat, or shorten the message."
        )


def trim_history(messages: list[dict], *, limits: Limits | None = None) -> tuple[list[dict], int]:
    """The messages to send when a conversation has grown over the history limit: its system
    messages and the newest messages that fit, the new question always. Returns them and how many
    earlier messages were left out (the person is told). When even the system messages and the
    question do not fit, nothing is left out here: validate() then refuses with the numbers."""
    limits = limits or Limits.from_settings()
    budget = limits.max_history_tokens
    if not messages or estimate_tokens(sum(_chars(m) for m in messages)) <= budget:
        return messages, 0
    kept_chars = sum(_chars(m) for m in messages if m.get("role") == "system") + _chars(messages[-1])
    keep = {len(messages) - 1}
    for index in range(len(messages) - 2, -1, -1):
        if messages[index].get("role") == "system":
            continue
        size = _chars(messages[index])
        if estimate_tokens(kept_chars + size) > budget:
            break
        kept_chars += size
        keep.add(index)
    trimmed = [m for i, m in enumerate(messages) if i in keep or m.get("role") == "system"]
    if estimate_tokens(kept_chars) > budget:
        return messages, 0
    return trimmed, len(messages) - len(trimmed)


def _chars(message: dict) -> int:
    content = message.get("content")
    return len(content) if isinstance(content, str) else 0
