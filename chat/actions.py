"""The writes of a completion, each in one transaction (Zulip's do_* style).

A completion writes twice whatever its length: once when it starts (the question and an empty
answer, so a reload mid-answer shows it; the executor does this while the upstream thinks) and once when it ends (the answer with its outcome, the
audit entry and the usage record together, so an answer is never stored without its audit entry).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditEntry, UsageRecord, new_audit_id
from chat.models import Conversation, Message


class ConversationNotFound(Exception):
    code = "not_found"
    detail = "That conversation does not exist or is not yours. Start a new chat."


@dataclass
class Exchange:
    user_id: int
    conversation_id: int
    title: str
    user_message_id: int
    message_id: int  # the assistant's answer
    history: list[dict]  # what is sent upstream, the new question last
    model_id: str
    temperature: float
    max_tokens: int
    input_chars: int = field(init=False)

    def __post_init__(self):
        self.input_chars = sum(len(m["content"]) for m in self.history)


def load_history(*, user, conversation_id) -> tuple[str, list[dict]]:
    """The title and messages of the owner's conversation (anyone else's is not found)."""
    title = Conversation.objects.filter(pk=conversation_id, user=user).values_list("title", flat=True).first()
    if title is None:
        raise ConversationNotFound()
    history = [
        {"role": role, "content": text}
        for role, text in Message.objects.filter(conversation_id=conversation_id)
        .exclude(content="")
        .order_by("created_at", "id")
        .values_list("role", "content")
    ]
    return title, history


def do_start_exchange(
    *, user, conversation_id, title, history, model_id, temperature, max_tokens, request_id, worker=""
) -> Exchange:
    """Store the question (the last of `history`, already validated) and an empty answer."""
    content = history[-1]["content"]
    with transaction.atomic():
        if conversation_id is None:
            title = Conversation.title_from(content)
            conversation_id = Conversation.objects.create(user=user, title=title).pk
        elif not Conversation.objects.filter(pk=conversation_id, user=user).update(updated_at=timezone.now()):
            raise ConversationNotFound()  # deleted since its history was read
        question, answer = Message.objects.bulk_create(
            [
                Message(conversation_id=conversation_id, role=Message.Role.USER, content=content, request_id=request_id),
                Message(
                    conversation_id=conversation_id,
                    role=Message.Role.ASSISTANT,
                    status=Message.Status.STREAMING,
                    model_id=model_id,
                    request_id=request_id,
                    worker=worker,
                ),
            ]
        )
    return Exchange(
        user_id=user.pk,
        conversation_id=conversation_id,
        title=title,
        user_message_id=question.pk,
        message_id=answer.pk,
        history=history,
        model_id=model_id,
        temperature=temperature,
        max_tokens=max_tokens,
    )


@dataclass
class Outcome:
    status: str  # a Message.Status value
    text: str
    finish_reason: str = ""
    error_code: str = ""
    error_detail: str = ""
    filters: list[dict] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    token_source: str = UsageRecord.TokenSource.ESTIMATE
    latency_ms: int = 0
    ttft_ms: int | None = None

    @property
    def tokens_per_second(self) -> float:
        # Generation speed once the answer started, so a slow first token does not hide a fast stream.
        # When the whole answer arrived in one read, fall back to the whole latency (at least 1 ms).
        ms = self.latency_ms - (self.ttft_ms or 0)
        if ms <= 0:
            ms = max(self.latency_ms, 1)
        return round(self.output_tokens * 1000 / ms, 2) if self.output_tokens else 0.0

    @classmethod
    def from_message(cls, message: Message) -> Outcome:
        stats = message.stats or {}
        return cls(
            status=message.status,
            text=message.content,
            finish_reason=message.finish_reason,
            error_code=message.error_code,
            error_detail=message.error_detail,
            filters=message.filters,
            input_tokens=stats.get("input_tokens", 0),
            output_tokens=stats.get("output_tokens", 0),
            token_source=stats.get("token_source", UsageRecord.TokenSource.ESTIMATE),
            latency_ms=stats.get("latency_ms", 0),
            ttft_ms=stats.get("ttft_ms"),
        )

    def stats(self) -> dict:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "token_source": self.token_source,
            "ttft_ms": self.ttft_ms,
            "latency_ms": self.latency_ms,
        }


AUDIT_STATUS = {
    Message.Status.COMPLETE: "success",
    Message.Status.ERROR: "error",
    Message.Status.CANCELLED: "cancelled",
}


def do_finish_exchange(exchange: Exchange, outcome: Outcome, *, request_id: str) -> None:
    """Store the answer's final text and outcome with its audit entry and usage record, atomically.

    The seed's audit id (AUD- and 8 hex digits) has 4 billion values, so at a million entries one
    new id in a few thousand collides; the whole transaction is then tried again with a new id
    (no savepoint, so the common case costs nothing), rather than losing the answer.
    """
    for attempt in range(3):
        try:
            return _finish_exchange(exchange, outcome, request_id=request_id, audit_id=new_audit_id())
        except IntegrityError as exc:
            if attempt == 2 or "audit_id" not in str(exc):
                raise


def _finish_exchange(exchange: Exchange, outcome: Outcome, *, request_id: str, audit_id: str) -> None:
    now = timezone.now()
    status = AUDIT_STATUS[outcome.status]
    with transaction.atomic():
        Message.objects.filter(pk=exchange.message_id).update(
            content=outcome.text,
            status=outcome.status,
            finish_reason=outcome.finish_reason,
            error_code=outcome.error_code,
            error_detail=outcome.error_detail,
            filters=outcome.filters,
            stats=outcome.stats(),
            completed_at=now,
        )
        AuditEntry.objects.create(
            audit_id=audit_id,
            request_id=request_id,
            user_id=exchange.user_id,
            conversation_id=exchange.conversation_id,
            message_id=exchange.message_id,
            model_id=exchange.model_id,
            status=status,
            error_code=outcome.error_code,
            safety_filtered=bool(outcome.filters),
            filters=outcome.filters,
            timestamp=now,
        )
        UsageRecord.objects.create(
            request_id=request_id,
            user_id=exchange.user_id,
            model_id=exchange.model_id,
            status=status,
            latency_ms=outcome.latency_ms,
            ttft_ms=outcome.ttft_ms,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            input_chars=exchange.input_chars,
            output_chars=len(outcome.text),
            token_source=outcome.token_source,
            tokens_per_second=outcome.tokens_per_second,
            timestamp=now,
        )
