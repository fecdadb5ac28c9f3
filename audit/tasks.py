"""The webhook delivery job, run by Procrastinate's workers (`manage.py procrastinate worker`),
never by the process that served the chat; and, at the end, the daily retention purge.

One job delivers one event to one endpoint (audit/webhooks.py enqueued it in the completion's
transaction). Its first run writes the `WebhookDelivery`: the body exactly as it is signed and
sent, every time. Each run is one attempt:

    sign (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature)
    -> POST, each step bounded by WEBHOOK_TIMEOUT
    -> log the attempt (status, latency, error, worker) and where the delivery stands, one transaction
    -> 2xx: delivered. Otherwise retried by Procrastinate after an exponential, jittered delay,
       until WEBHOOK_RETRY_FOR after the first attempt; an endpoint that has not taken a delivery
       for WEBHOOK_DISABLE_AFTER is disabled (the admin says so).

Procrastinate gives a job to one worker at a time, so several workers never send one attempt
twice. A worker killed between a receiver's 2xx and the commit sends that event again: receivers
deduplicate by webhook-id (the Standard Webhooks rule).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone
from procrastinate import RetryDecision
from procrastinate.contrib.django import app
from procrastinate.retry import BaseRetryStrategy
from procrastinate.worker import WORKER_NAME
from standardwebhooks.webhooks import Webhook

from gateway_portal.models import Team
from audit.models import SETTINGS_ENDPOINT, WebhookAttempt, WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)

Delivery = WebhookDelivery.Status

# What a receiver's answer may hold that the attempt log keeps; the rest is read and dropped.
KEPT_RESPONSE_CHARS = 200
MAX_RESPONSE_BYTES = 64 * 1024


class RetryLater(Exception):
    """This attempt failed; the job runs again in `delay` seconds."""

    def __init__(self, delay: float, error: str):
        super().__init__(f"retry in {delay:.1f} s: {error}")
        self.delay = delay


class Backoff(BaseRetryStrategy):
    def get_retry_decision(self, *, exception, job):
        if isinstance(exception, RetryLater):
            return RetryDecision(retry_in={"seconds": exception.delay})
        # Anything else is a fault on our side (the database away, a bug): retried the same way,
        # a bounded number of times, so it shows in the job list instead of looping for ever.
        if job.attempts >= 20:
            return None
        return RetryDecision(retry_in={"seconds": backoff_delay(job.attempts + 1)})


def backoff_delay(attempt: int) -> float:
    """Before attempt `attempt` + 1: doubling from WEBHOOK_BACKOFF_BASE up to WEBHOOK_BACKOFF_MAX,
    half of it random, so that the events queued while a receiver was down do not all come back
    at the same instant."""
    ceiling = min(settings.WEBHOOK_BACKOFF_MAX, settings.WEBHOOK_BACKOFF_BASE * 2 ** min(attempt - 1, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


@app.periodic(cron="7 * * * *")
@app.task(name="audit.roll_up_usage", queue="rollups", queueing_lock="roll_up_usage")
def roll_up_usage(timestamp):
    """Re-roll the last closed days' usage (audit/rollups.py says why these and not fewer)."""
    from audit import rollups

    close_old_connections()
    try:
        rollups.roll_recent()
    finally:
        close_old_connections()


@app.task(name="audit.deliver_webhook", queue="webhooks", pass_context=True, retry=Backoff())
def deliver_webhook(context, *, event_id: str = "", endpoint: int | str = "", event: dict | None = None, delivery: int | None = None):
    """Deliver `event` to `endpoint` (an id, or "settings"), or re-send the stored `delivery`."""
    # A worker is not a request: nothing else closes a connection the database dropped.
    close_old_connections()
    try:
        if delivery is None:
            found = _first_run(event_id, endpoint, event)
        else:
            found = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery).first()
        if found is None or found.status != Delivery.PENDING:
            return  # gone, or settled by an earlier run of this job
        if not found.endpoint.is_active:
            WebhookDelivery.objects.filter(pk=found.pk).update(status=Delivery.SKIPPED, next_attempt_at=None)
            return
        _attempt(found, context.job.attempts + 1, _worker_name(context))
    finally:
        close_old_connections()


def _worker_name(context) -> str:
    """The --name given to the worker, else where it runs: which process made an attempt."""
    if context.worker_name and context.worker_name != WORKER_NAME:
        return context.worker_name
    return f"{socket.gethostname()}:{os.getpid()}"


def _first_run(event_id: str, endpoint_key: int | str, event: dict) -> WebhookDelivery | None:
    if endpoint_key == SETTINGS_ENDPOINT:
        endpoint = WebhookEndpoint.from_environment()
    else:
        endpoint = WebhookEndpoint.objects.filter(pk=endpoint_key).first()
    if endpoint is None:
        return None  # deleted since the event (or ANALYTICS_WEBHOOK_URL unset)
    try:
        with transaction.atomic():
            return WebhookDelivery.objects.create(
                event_id=event_id, endpoint=endpoint, event_type=event["type"], audit_id=event["audit_id"],
                body=_body(event), created=datetime.fromisoformat(event["timestamp"]),
                retry_until=timezone.now() + timedelta(seconds=settings.WEBHOOK_RETRY_FOR),
                status=Delivery.PENDING if endpoint.is_active else Delivery.SKIPPED,
            )
    except IntegrityError:  # a run of this job that died after writing it
        return WebhookDelivery.objects.select_related("endpoint").get(event_id=event_id, endpoint=endpoint)


def _body(event: dict) -> str:
    person = event["person"]
    person["username"] = get_user_model().objects.filter(pk=person["id"]).values_list("username", flat=True).first()
    team = event.get("team")
    if team:
        team["name"] = Team.objects.filter(pk=team["id"]).values_list("name", flat=True).first()
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def signed_headers(secret: str, event_id: str, when: datetime, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, when, body),
    }


def _attempt(delivery: WebhookDelivery, job_attempt: int, worker: str) -> None:
    endpoint = delivery.endpoint
    sent_at = timezone.now()
    headers = signed_headers(endpoint.secret, delivery.event_id, sent_at, delivery.body)
    started = time.monotonic()
    status_code, error = _post(endpoint.url, delivery.body, headers)
    latency_ms = round((time.monotonic() - started) * 1000)
    now = timezone.now()
    delivery.attempts += 1
    retry_in = None
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery, number=delivery.attempts, at=sent_at, status_code=status_code, latency_ms=latency_ms,
            error=error[:500], worker=worker[:100],
        )
        if not error:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at, delivery.last_error = Delivery.DELIVERED, now, None, ""
            if endpoint.failing_since is not None:
                WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
        else:
            delivery.last_error = error[:500]
            if _disable_if_failing_too_long(endpoint, sent_at, now, error):
                delivery.status, delivery.next_attempt_at = Delivery.SKIPPED, None
            elif now >= delivery.retry_until:
                delivery.status, delivery.next_attempt_at = Delivery.FAILED, None
            else:
                retry_in = min(backoff_delay(job_attempt), (delivery.retry_until - now).total_seconds())
                delivery.next_attempt_at = now + timedelta(seconds=retry_in)
        delivery.save(update_fields=["attempts", "status", "delivered_at", "next_attempt_at", "last_error"])
    if retry_in is not None:
        raise RetryLater(retry_in, error)


def _disable_if_failing_too_long(endpoint: WebhookEndpoint, sent_at: datetime, now: datetime, error: str) -> bool:
    WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(failing_since=sent_at)
    days = settings.WEBHOOK_DISABLE_AFTER / 86400
    disabled = WebhookEndpoint.objects.filter(
        pk=endpoint.pk, is_active=True, failing_since__lt=now - timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER)
    ).update(
        is_active=False, disabled_at=now,
        disabled_reason=f"No delivery succeeded for more than {days:g} days (WEBHOOK_DISABLE_AFTER). Last error: {error}"[:1000],
    )
    if disabled:
        log.warning("webhook endpoint %s disabled: failing for more than %g days", endpoint.pk, days)
    return bool(disabled)


_local = threading.local()


def _client() -> httpx.Client:
    """One keep-alive client per worker thread (sync jobs run in a thread pool)."""
    client = getattr(_local, "client", None)
    if client is None:
        timeout = settings.WEBHOOK_TIMEOUT
        client = _local.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), follow_redirects=False,
            headers={"user-agent": "GatewayPortal-Webhooks/1"},
        )
    return client


def _post(url: str, body: str, headers: dict[str, str]) -> tuple[int | None, str]:
    """(status code, error): the error is "" for a 2xx, else a sentence for the attempt log."""
    try:
        with _client().stream("POST", url, content=body.encode(), headers=headers) as response:
            answer = b""
            for chunk in response.iter_bytes():
                answer += chunk
                if len(answer) > MAX_RESPONSE_BYTES:
                    break
            if 200 <= response.status_code < 300:
                return response.status_code, ""
            text = answer[:KEPT_RESPONSE_CHARS].decode(errors="replace").strip()
            return response.status_code, f"HTTP {response.status_code}" + (f": {text}" if text else "")
    except httpx.TimeoutException as exc:
        return None, f"no answer within {settings.WEBHOOK_TIMEOUT:g} s ({type(exc).__name__})"
    except httpx.ConnectError as exc:
        return None, f"could not connect: {exc}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return None, f"{type(exc).__name__}: {exc}"


@app.periodic(cron="0 * * * *")
@app.task(name="audit.publish_checkpoint", queueing_lock="publish_audit_checkpoint")
def publish_audit_checkpoint(timestamp):
    """Every hour: the chain's head to the log and the checkpoint file (audit/checkpoints.py)."""
    from audit import checkpoints

    close_old_connections()
    checkpoints.publish()


@app.periodic(cron="17 3 * * *")
@app.task(name="audit.purge_content", queueing_lock="purge_content")
def purge_content(timestamp: int):
    """Daily: blank message content older than the retention (audit/retention.py)."""
    from audit import retention

    close_old_connections()
    try:
        for done in retention.purge():
            log.info("retention: purged %d messages of team %s (older than %d days)", done.messages, done.team.slug, done.retention_days)
    finally:
        close_old_connections()
