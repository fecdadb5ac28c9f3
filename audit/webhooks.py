"""The webhook outbox: which endpoints want a completion's event, and its delivery job enqueued in
the completion's own transaction (so an event exists exactly when its audit entry does).

`enqueue_completion()` is the one call the audit trail makes. It costs a dictionary look-up when
no endpoint wants the event, and one INSERT (Procrastinate's job) per endpoint that does: the list
of endpoints is read at most every WEBHOOK_ENDPOINT_CACHE_SECONDS per process, not per completion.
The job (audit/tasks.py) signs, POSTs, retries and logs in a worker process, never in the chat's.

Endpoints are named in a job by their id, or by "settings" for the one ANALYTICS_WEBHOOK_URL
defines: its row is written by the worker (`settings_endpoint()`), so the chat path never writes
anything but the job.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from audit.models import SETTINGS_ENDPOINT, EventType, WebhookDelivery, WebhookEndpoint



_lock = threading.Lock()
_cached: tuple[float, dict[str, list[int | str]]] = (0.0, {})


def endpoints_changed() -> None:
    """Forget this process' endpoint list (an endpoint was saved here); others see it within
    WEBHOOK_ENDPOINT_CACHE_SECONDS."""
    global _cached
    _cached = (0.0, {})


def endpoints_by_event() -> dict[str, list[int | str]]:
    """Event type -> the endpoints (ids, or SETTINGS_ENDPOINT) that want it, cached briefly."""
    global _cached
    expires, by_event = _cached
    if time.monotonic() < expires:
        return by_event
    with _lock:
        by_event = {}
        settings_endpoint_active = bool(settings.ANALYTICS_WEBHOOK_URL)
        rows = WebhookEndpoint.objects.filter(Q(is_active=True) | Q(from_settings=True))
        for pk, event_types, active, from_settings in rows.values_list("pk", "event_types", "is_active", "from_settings"):
            if from_settings:
                # Disabled (by failures, or by a superuser) wins over the environment until re-enabled.
                settings_endpoint_active = settings_endpoint_active and active
                continue
            for event_type in event_types:
                by_event.setdefault(event_type, []).append(pk)
        if settings_endpoint_active:
            for event_type in EventType.values:
                by_event.setdefault(event_type, []).append(SETTINGS_ENDPOINT)
        _cached = (time.monotonic() + settings.WEBHOOK_ENDPOINT_CACHE_SECONDS, by_event)
    return by_event


def enqueue_completion(entry: dict, usage: dict) -> None:
    """Enqueue the delivery of a completion's event to every endpoint that wants it, in the
    caller's transaction. `entry` and `usage` are the rows audit.actions.completion_rows() made."""
    endpoints = endpoints_by_event().get(entry["action"])  # the event type is the audit entry's action
    if not endpoints:
        return
    event = completion_event(entry, usage)
    event_id = "msg_" + uuid.uuid4().hex
    _defer([(endpoint, event_id, {"event_id": event_id, "endpoint": endpoint, "event": event}) for endpoint in endpoints])


def lane_lock(endpoint: int | str, event_id: str) -> str:
    """The Procrastinate lock of an event's delivery job: one of WEBHOOK_ENDPOINT_CONCURRENCY
    lanes of its endpoint, chosen by the event id. Jobs sharing a lock run one at a time, in
    order, and a job waiting for its retry holds its lane: so a dead or slow endpoint occupies at
    most that many job workers' slots, and is tried that many times per back-off, not once per
    event queued for it. The other endpoints' events go on meanwhile."""
    lanes = max(1, settings.WEBHOOK_ENDPOINT_CONCURRENCY)
    return f"webhook:{endpoint}:{int(event_id[-8:], 16) % lanes}"


def _defer(jobs: list[tuple[int | str, str, dict]]) -> None:
    """Enqueue delivery jobs, (endpoint, event id, job arguments) each, in one INSERT."""
    from procrastinate.contrib.django import app

    from audit.tasks import deliver_webhook

    template = deliver_webhook.configure().job
    app.job_manager.batch_defer_jobs(
        [template.evolve(lock=lane_lock(endpoint, event_id), task_kwargs=kwargs) for endpoint, event_id, kwargs in jobs]
    )


def completion_event(entry: dict, usage: dict) -> dict:
    """The webhook body: the seed's analytics fields at the top level, as the seed sent them (so
    its receivers keep working), plus the event type, who, which model, time to first token, where
    the token counts come from and the audit id. Only ids here, so the chat path reads nothing
    more: the worker adds the person's user name and the team's name."""
    return {
        "type": entry["action"],
        "request_id": usage["request_id"],
        "latency_ms": usage["latency_ms"],
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "tokens_per_second": usage["tokens_per_second"],
        "status": usage["status"],
        "timestamp": usage["timestamp"].isoformat(),
        "input_chars": usage["input_chars"],
        "output_chars": usage["output_chars"],
        "person": {"id": usage["user_id"]},
        "team": {"id": usage["team_id"]} if usage["team_id"] is not None else None,
        "model": usage["model_id"],
        "ttft_ms": usage["ttft_ms"],
        "token_source": usage["token_source"],
        "error_code": entry["error_code"],
        "audit_id": entry["audit_id"],
    }


def resend(deliveries) -> tuple[int, int]:
    """Send these deliveries again, same event id and body, newly signed, with a new retry window.
    Pending ones are skipped (they are being retried), as are those of inactive endpoints.
    Returns (re-sent, skipped)."""
    now = timezone.now()
    total = deliveries.count()
    chosen = deliveries.exclude(status=WebhookDelivery.Status.PENDING).filter(endpoint__is_active=True)
    with transaction.atomic():
        found = list(chosen.select_for_update(of=("self",)).values_list("pk", "event_id", "endpoint_id", "endpoint__from_settings"))
        ids = [pk for pk, *_ in found]
        WebhookDelivery.objects.filter(pk__in=ids).update(
            status=WebhookDelivery.Status.PENDING, retry_until=now + timedelta(seconds=settings.WEBHOOK_RETRY_FOR),
            next_attempt_at=now, delivered_at=None,
        )
        jobs = [(SETTINGS_ENDPOINT if from_settings else endpoint, event_id, {"delivery": pk})
                for pk, event_id, endpoint, from_settings in found]
        for start in range(0, len(jobs), 1000):
            _defer(jobs[start:start + 1000])
    return len(ids), total - len(ids)


@receiver([post_save, post_delete], sender=WebhookEndpoint, dispatch_uid="webhook-endpoints-changed")
def _forget_endpoints(sender, **kwargs):
    endpoints_changed()
