from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import IntegrityError, models, transaction
from django.db.models.fields.json import KeyTextTransform

COMPLIANCE_TAG = "GENESYS_AI_GATEWAY_V2"
# The key of the ANALYTICS_WEBHOOK_URL endpoint in delivery jobs (the others use their row's id).
SETTINGS_ENDPOINT = "settings"


def new_audit_id() -> str:
    return "AUD-" + secrets.token_hex(4)


class Status(models.TextChoices):
    """How a completion ended, in the audit trail and usage records."""

    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Action(models.TextChoices):
    """What an audit entry records: a completion's end, or something a person did that compliance
    reviews (audit/actions.py writes both kinds)."""

    COMPLETION_SUCCEEDED = "completion.succeeded"
    COMPLETION_FAILED = "completion.failed"
    COMPLETION_CANCELLED = "completion.cancelled"
    # Refused before it went upstream: by a limit (quota, rate, budget) or as an invalid request.
    COMPLETION_REFUSED = "completion.refused"
    COMPLETION_REJECTED = "completion.rejected"
    LOGIN = "auth.login"
    LOGIN_FAILED = "auth.login_failed"
    LOGOUT = "auth.logout"
    TRANSCRIPT_VIEWED = "transcript.viewed"
    EXPORT_CREATED = "export.created"
    CONVERSATION_SHARED = "conversation.shared"
    CONVERSATION_UNSHARED = "conversation.unshared"
    TEAM_CREATED = "team.created"
    TEAM_CHANGED = "team.changed"
    MEMBER_ADDED = "team.member_added"
    MEMBER_REMOVED = "team.member_removed"
    ROLE_CHANGED = "team.role_changed"
    LIMITS_CHANGED = "team.limits_changed"
    LEGAL_HOLD_SET = "legal_hold.set"
    LEGAL_HOLD_RELEASED = "legal_hold.released"
    RETENTION_PURGED = "retention.purged"
    APIKEY_CREATED = "apikey.created"
    APIKEY_REVOKED = "apikey.revoked"
    CHECKPOINT = "audit.checkpoint"


class AuditEntry(models.Model):
    """One event of the audit trail: a governed completion (the seed's audit entry: who asked which
    model, and how it ended), or an action compliance reviews (a log-in, a team change, an
    officer opening a transcript, ...): `user` is who acted, `target` what was acted on.
    Append-only and hash-chained (audit/chain.py)."""

    seq = models.BigIntegerField(unique=True, null=True, editable=False)
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    hash = models.CharField(max_length=64, blank=True, editable=False)
    action = models.CharField(max_length=64, choices=Action.choices, default=Action.COMPLETION_SUCCEEDED)
    audit_id = models.CharField(max_length=16, unique=True, default=new_audit_id, editable=False)
    request_id = models.CharField(max_length=64, db_index=True, blank=True)
    # Who acted (none for a failed log-in under a name nobody has: details["username"] says it).
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey("gateway_portal.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # What was acted on, as "kind:identifier" ("user:bob", "team:red", "conversation:42"): exact
    # search in the admin. Empty for completions (their conversation and message say it).
    target = models.CharField(max_length=200, blank=True, db_index=True)
    # Plain references, no database constraint: an entry outlives the conversation it names (it is
    # never updated, so it cannot be set to NULL when the conversation goes).
    conversation = models.ForeignKey(
        "chat.Conversation", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    message = models.ForeignKey("chat.Message", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    model_id = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    safety_filtered = models.BooleanField(default=False)
    filters = models.JSONField(default=list, blank=True)
    compliance_tag = models.CharField(max_length=64, default=COMPLIANCE_TAG)
    timestamp = models.DateTimeField(db_index=True)
    # SHA-256 of what was asked (the messages sent, as canonical JSON) and of the answer: a
    # transcript can be proven unchanged, even after its text is purged.
    prompt_sha256 = models.CharField(max_length=64, blank=True)
    answer_sha256 = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name_plural = "audit entries"
        ordering = ["-timestamp"]
        indexes = [
            models.Index(fields=["user", "-timestamp"]),
            models.Index(fields=["status", "-timestamp"]),
            models.Index(fields=["team", "-timestamp"]),
            models.Index(fields=["action", "-timestamp"]),
            # The officer's filters (audit/admin.py): model, client, safety filters fired.
            models.Index(fields=["model_id", "-timestamp"], name="audit_model_time"),
            models.Index(KeyTextTransform("client", "details"), models.F("timestamp").desc(), name="audit_client_time"),
            models.Index(fields=["-timestamp"], condition=models.Q(safety_filtered=True), name="audit_filtered_time"),
            GinIndex(fields=["filters"], opclasses=["jsonb_path_ops"], name="audit_filters_fired"),
        ]

    def __str__(self):
        return self.audit_id


class UsageRecord(models.Model):
    """The seed's analytics payload for one completion, plus who, which model and time to first token."""

    class TokenSource(models.TextChoices):
        UPSTREAM = "upstream", "reported by the upstream"
        ESTIMATE = "estimate", "estimated (chars / 4)"

    request_id = models.CharField(max_length=64, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey("gateway_portal.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
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
            models.Index(fields=["team", "-timestamp"]),
            # The analytics (audit/analytics.py) read a person's range from this index alone, never
            # the table: an index-only scan of a few pages instead of one table page per record.
            models.Index(
                fields=["user", "-timestamp"], name="usage_user_time_analytics",
                include=["status", "model_id", "token_source", "latency_ms", "ttft_ms",
                         "input_tokens", "output_tokens", "tokens_per_second"],
            ),
            # Everyone's records of a few hours (the part of a range not rolled up yet,
            # audit/rollups.py) from this index alone: records of one hour are not together in
            # the table when they were imported out of order.
            models.Index(
                fields=["timestamp"], name="usage_time_analytics",
                include=["user", "team", "status", "model_id", "token_source", "latency_ms", "ttft_ms",
                         "input_tokens", "output_tokens", "tokens_per_second"],
            ),
        ]

    def __str__(self):
        return f"{self.request_id} {self.model_id} {self.output_tokens} tokens"


class LegalHold(models.Model):
    """A legal hold on a team or on one person: while it stands (not released), the retention job
    purges none of their messages (audit/retention.py). Set and released by superusers in the
    admin, each audited; never deleted, so the list is the hold's history."""

    team = models.ForeignKey("gateway_portal.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        verbose_name="person", help_text="The person whose conversations are held (or choose a team).",
    )
    reason = models.TextField(help_text="Why, for the record (a case or matter reference).")
    set_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", editable=False)
    set_at = models.DateTimeField(editable=False)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    released_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-set_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(team__isnull=True, user__isnull=False) | models.Q(team__isnull=False, user__isnull=True),
                name="legal_hold_on_a_team_or_a_person",
            )
        ]

    def __str__(self):
        return f"legal hold on {self.target}"

    @property
    def target(self) -> str:
        """What is held, as an audit entry's target ("team:red", "user:alice")."""
        return f"team:{self.team.slug}" if self.team_id else f"user:{self.user.get_username()}"

    @property
    def active(self) -> bool:
        return self.released_at is None


# --- Webhooks: the seed's analytics callbacks, durable and signed (README.md "Webhooks") -------


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: "whsec_" and the base64 of 32 random bytes (the spec asks 24-64)."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class EventType(models.TextChoices):
    """What a webhook endpoint can subscribe to: the audit actions of a completion's end (an
    event's type is its audit entry's `action`, class Action above)."""

    COMPLETION_SUCCEEDED = "completion.succeeded"
    COMPLETION_FAILED = "completion.failed"
    COMPLETION_CANCELLED = "completion.cancelled"
    COMPLETION_REFUSED = "completion.refused"  # by a limit, before it went upstream


class WebhookEndpoint(models.Model):
    """A receiver of completion events, managed by superusers in the admin. The one that
    ANALYTICS_WEBHOOK_URL defines is kept here too (`from_settings`), so that its deliveries,
    attempts and failures show in the same lists; the environment stays its source of truth."""

    url = models.URLField(max_length=500, help_text="Where events are POSTed (https in production).")
    secret = models.CharField(
        max_length=200, blank=True, default=new_webhook_secret,
        help_text="Standard Webhooks signing secret (whsec_…). Leave blank to generate one; give it to the receiver.",
    )
    event_types = models.JSONField(default=list, help_text="The events sent to this endpoint.")
    description = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField("active", default=True)
    # Teams arrive with the governance issue: an endpoint will then belong to a team (null: every
    # team, set by a superuser) and receive only that team's events; the payload gains "team".
    from_settings = models.BooleanField(default=False, editable=False)
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.TextField(blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(fields=["from_settings"], condition=models.Q(from_settings=True), name="one_settings_endpoint")
        ]

    def __str__(self):
        return self.url

    def save(self, *args, **kwargs):
        if not self.secret:
            self.secret = new_webhook_secret()
        super().save(*args, **kwargs)  # audit/webhooks.py forgets its cached endpoint list on post_save

    @classmethod
    def from_environment(cls) -> WebhookEndpoint | None:
        """The row of the ANALYTICS_WEBHOOK_URL endpoint, created or brought up to date with the
        environment (the worker calls this; None when the setting is not set)."""
        if not settings.ANALYTICS_WEBHOOK_URL:
            return None
        wanted = {"url": settings.ANALYTICS_WEBHOOK_URL, "secret": settings.ANALYTICS_WEBHOOK_SECRET}
        endpoint = cls.objects.filter(from_settings=True).first()
        if endpoint is None:
            try:
                with transaction.atomic():
                    return cls.objects.create(
                        from_settings=True, event_types=list(EventType.values),
                        description="ANALYTICS_WEBHOOK_URL (set in the environment)", **wanted,
                    )
            except IntegrityError:  # another worker created it first
                endpoint = cls.objects.get(from_settings=True)
        if endpoint.url != wanted["url"] or endpoint.secret != wanted["secret"]:
            for field, value in wanted.items():
                setattr(endpoint, field, value)
            endpoint.save(update_fields=["url", "secret", "updated"])
        return endpoint


class WebhookDelivery(models.Model):
    """One event for one endpoint: the exact body signed and sent, and where its delivery stands.
    Written by the worker at its first attempt (the completion's transaction only enqueues a job)."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending (retrying)"
        DELIVERED = "delivered"
        FAILED = "failed", "failed (gave up)"
        SKIPPED = "skipped", "skipped (endpoint inactive)"

    event_id = models.CharField(max_length=64, help_text="The webhook-id header: the same on every attempt and re-send.")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=32, choices=EventType.choices)
    audit_id = models.CharField(max_length=16, db_index=True)
    body = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(db_index=True)
    retry_until = models.DateTimeField()
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created"]
        constraints = [models.UniqueConstraint(fields=["event_id", "endpoint"], name="one_delivery_per_event_and_endpoint")]
        indexes = [models.Index(fields=["endpoint", "-created"]), models.Index(fields=["status", "-created"])]

    def __str__(self):
        return f"{self.event_type} {self.event_id}"


class WebhookAttempt(models.Model):
    """One POST of a delivery: what the receiver answered (or the error) and how long it took."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    at = models.DateTimeField()
    status_code = models.PositiveIntegerField(null=True, blank=True, help_text="The receiver's HTTP status.")
    latency_ms = models.PositiveIntegerField()
    error = models.CharField(max_length=500, blank=True)
    worker = models.CharField(max_length=100, blank=True, help_text="The job worker that made the attempt.")

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self):
        return f"attempt {self.number} of {self.delivery_id}"

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


# --- Usage roll-ups: a day's usage records summed, for the analytics at scale (audit/rollups.py) --


class RollupFigures(models.Model):
    """What a group of usage records adds up to: counts, sums, and histograms of latency, time to
    first token and tokens per second in fixed log-spaced buckets (audit.rollups.BUCKETS), from
    which percentiles are read within a stated error. `day` is a date in the portal's time zone."""

    day = models.DateField()
    team = models.ForeignKey("gateway_portal.Team", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    model_id = models.CharField(max_length=100)
    requests = models.PositiveIntegerField()
    success = models.PositiveIntegerField()
    error = models.PositiveIntegerField()
    cancelled = models.PositiveIntegerField()
    refused = models.PositiveIntegerField()
    estimated = models.PositiveIntegerField()
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    # Of successful completions (latency, ttft) and of completions with output (tps), as the raw figures.
    latency_hist = ArrayField(models.IntegerField())
    ttft_hist = ArrayField(models.IntegerField())
    tps_hist = ArrayField(models.IntegerField())

    class Meta:
        abstract = True


class UsageDay(RollupFigures):
    """A day's usage per team and model: the everyone-view's figures, time series, teams, models."""

    class Meta:
        indexes = [models.Index(fields=["day"])]


class UsagePersonDay(RollupFigures):
    """A day's usage per person, team and model: the people breakdown, and every view narrowed to
    a team admin's teams (their own records in other teams included)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")

    class Meta:
        indexes = [models.Index(fields=["day"]), models.Index(fields=["team", "day"])]


class RolledDay(models.Model):
    """A day whose roll-ups are complete: the analytics read it from the roll-ups, any other day
    from the usage records."""

    day = models.DateField(primary_key=True)
    rolled_at = models.DateTimeField()
    records = models.PositiveIntegerField()

    class Meta:
        ordering = ["-day"]
