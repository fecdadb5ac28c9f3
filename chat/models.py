from django.conf import settings
from django.db import models
from django.urls import reverse

from chat.completion import Outcome


class Conversation(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    # The team the person chats for in it (gateway_portal/models.py); teammates may read it when shared.
    team = models.ForeignKey("gateway_portal.Team", on_delete=models.PROTECT, related_name="conversations")
    shared = models.BooleanField(default=False, help_text="Teammates may open it read-only.")
    title = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["user", "-updated_at"]), models.Index(fields=["team", "-updated_at"], condition=models.Q(shared=True), name="chat_shared_by_team")]

    def __str__(self):
        return self.title

    def get_absolute_url(self):
        return reverse("chat:conversation", args=[self.pk])

    @staticmethod
    def title_from(question: str) -> str:
        line = " ".join(question.split())
        return (line[:77] + "…") if len(line) > 80 else (line or "New chat")


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETE = "complete"
        ERROR = "error"
        CANCELLED = "cancelled"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    team = models.ForeignKey("gateway_portal.Team", on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    model_id = models.CharField(max_length=100, blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    # The channel-layer channel of the server process generating a streaming answer ("" with one
    # process): where a socket served by another process sends its Stop and asks to follow
    # (chat/answer_bus.py).
    process_channel = models.CharField(max_length=200, blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_detail = models.TextField(blank=True)
    # Whether pressing Retry later can help (chat/errors.py): the page shows the button for it.
    error_retryable = models.BooleanField(default=False)
    # What the safety filters changed, e.g. [{"filter": "think_blocks", "count": 1}]: shown under the answer.
    filters = models.JSONField(default=list, blank=True)
    # The upstream's text before the filters, kept only when they changed it (compliance review);
    # never sent to the browser.
    upstream_text = models.TextField("upstream's text", blank=True, help_text="Before the safety filters; kept only when they changed it.")
    # An assistant message's {"usage": {input_tokens, output_tokens, source}, latency_ms, ttft_ms}
    # (Outcome.stats()): shown under the answer.
    stats = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # A streaming answer's heartbeat: when its text was last saved (every PORTAL_CHECKPOINT_SECONDS
    # while it streams). One that stops beating belongs to a process that died (chat/recovery.py).
    checkpoint_at = models.DateTimeField(null=True, blank=True)
    # When the retention job blanked its content (audit/retention.py); its audit entry keeps the hashes.
    purged_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["checkpoint_at"], condition=models.Q(status="streaming"), name="chat_streaming_heartbeat"),
        ]

    def __str__(self):
        return f"{self.role}: {self.content[:60]}"

    @staticmethod
    def fields_for(outcome: Outcome) -> dict:
        """The columns that store an answer's outcome (outcome() reads them back)."""
        return {
            "content": outcome.text,
            "status": outcome.status,
            "finish_reason": outcome.finish_reason,
            "error_code": outcome.error_code,
            "error_detail": outcome.error_detail,
            "error_retryable": outcome.retryable,
            "filters": outcome.filters,
            "upstream_text": outcome.upstream_text,
            "stats": outcome.stats(),
        }

    def outcome(self) -> Outcome:
        """How this answer ended, as stored."""
        stats = self.stats or {}
        usage = stats.get("usage") or {}
        return Outcome(
            status=self.status,
            text=self.content,
            model_id=self.model_id,
            finish_reason=self.finish_reason,
            error_code=self.error_code,
            error_detail=self.error_detail,
            retryable=self.error_retryable,
            filters=self.filters,
            input_tokens=usage.get("input_tokens", 0),
            output_tokens=usage.get("output_tokens", 0),
            token_source=usage.get("source", Outcome.token_source),
            latency_ms=stats.get("latency_ms", 0),
            ttft_ms=stats.get("ttft_ms"),
            left_out=stats.get("left_out", 0),
        )

    def to_dict(self) -> dict:
        """The message for the chat page's payload and for a reader who comes after its end: the
        same facts, under the same names, as the live `done` and `error` frames."""
        if self.role != self.Role.ASSISTANT:
            return {"id": self.pk, "role": self.role, "content": self.content, "status": self.status}
        return {"id": self.pk, "role": self.role, "content": self.content, **self.outcome().to_dict()}
