import secrets

from django.conf import settings
from django.db import models

COMPLIANCE_TAG = "GENESYS_AI_GATEWAY_V2"


def new_audit_id() -> str:
    return "AUD-" + secrets.token_hex(4)


class Status(models.TextChoices):
    """How a completion ended, in the audit trail and usage records."""

    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class AuditEntry(models.Model):
    """One governed completion, as the seed's audit entry: who asked which model, and how it ended."""

    audit_id = models.CharField(max_length=16, unique=True, default=new_audit_id, editable=False)
    request_id = models.CharField(max_length=64, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    conversation = models.ForeignKey("chat.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    message = models.ForeignKey("chat.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    model_id = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices)
    error_code = models.CharField(max_length=64, blank=True)
    safety_filtered = models.BooleanField(default=False)
    filters = models.JSONField(default=list, blank=True)
    compliance_tag = models.CharField(max_length=64, default=COMPLIANCE_TAG)
    timestamp = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name_plural = "audit entries"
        ordering = ["-timestamp"]
        indexes = [models.Index(fields=["user", "-timestamp"]), models.Index(fields=["status", "-timestamp"])]

    def __str__(self):
        return self.audit_id


class UsageRecord(models.Model):
    """The seed's analytics payload for one completion, plus who, which model and time to first token."""

    class TokenSource(models.TextChoices):
        UPSTREAM = "upstream", "reported by the upstream"
        ESTIMATE = "estimate", "estimated (chars / 4)"

    request_id = models.CharField(max_length=64, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    model_id = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices)
    latency_ms = models.PositiveIntegerField()
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    input_chars = models.PositiveIntegerField(default=0)
    output_chars = models.PositiveIntegerField(default=0)
    token_source = models.CharField(max_length=16, choices=TokenSource.choices, default=TokenSource.ESTIMATE)
    tokens_per_second = models.FloatField(default=0.0)
    timestamp = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-timestamp"]
        indexes = [
            models.Index(fields=["user", "-timestamp"]),
            models.Index(fields=["model_id", "-timestamp"]),
            # The analytics (audit/analytics.py) read a person's range from this index alone, never
            # the table: an index-only scan of a few pages instead of one table page per record.
            models.Index(
                fields=["user", "-timestamp"], name="usage_user_time_analytics",
                include=["status", "model_id", "token_source", "latency_ms", "ttft_ms",
                         "input_tokens", "output_tokens", "tokens_per_second"],
            ),
        ]

    def __str__(self):
        return f"{self.request_id} {self.model_id} {self.output_tokens} tokens"
