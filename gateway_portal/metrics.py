"""What Prometheus scrapes at /metrics: every metric the portal keeps, defined here and nowhere else.

Completions are observed from the executor's events (`observed` wraps `ChatExecutor.stream`), so
the figures are those of the final `Done`/`Failed` that the person saw and the audit trail keeps:

    portal_completions_total{model,status,client}     finished answers (complete | error | cancelled)
    portal_time_to_first_token_seconds{model}         histogram, answers that got any text
    portal_completion_latency_seconds{model}          histogram, whole answers
    portal_input_tokens_total{model}, portal_output_tokens_total{model}
    portal_errors_total{code}                         every error a person was shown
    portal_refusals_total{code}                       refused before reaching the upstream (a limit, validation)
    portal_answers_streaming                          gauge: answers between started and their end
    portal_websockets_open                            gauge: chat sockets connected
    portal_upstream_retries_total{code}               upstream attempts retried (chat/upstream/genesys.py)
    portal_webhook_backlog                            gauge: delivery jobs waiting or running (from Postgres)
    portal_webhook_deliveries_given_up                gauge: deliveries that failed for good (from Postgres)

With `runportal --workers N` each worker writes its figures to files in PROMETHEUS_MULTIPROC_DIR
(runportal makes and empties it) and whichever worker answers the scrape adds them all up
(prometheus_client's multiprocess mode). The webhook figures are read from the database at each
scrape: they are the same whoever answers.

Who may scrape: with PORTAL_METRICS_TOKEN set, whoever sends it as a bearer token; unset, only
connections from loopback.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import os

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from chat.completion import Done, Failed, Started

log = logging.getLogger(__name__)

COMPLETIONS = Counter(
    "portal_completions", "Completions finished, by model, how they ended and the kind of client.",
    ["model", "status", "client"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "portal_time_to_first_token_seconds", "Time from sending a completion upstream to its first text.",
    ["model"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
)
LATENCY = Histogram(
    "portal_completion_latency_seconds", "Time from sending a completion upstream to its end.",
    ["model"], buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300),
)
INPUT_TOKENS = Counter("portal_input_tokens", "Prompt tokens sent upstream (the upstream's count, else an estimate).", ["model"])
OUTPUT_TOKENS = Counter("portal_output_tokens", "Answer tokens received (the upstream's count, else an estimate).", ["model"])
ERRORS = Counter("portal_errors", "Errors people were shown, by error code.", ["code"])
REFUSALS = Counter("portal_refusals", "Requests refused before reaching the upstream (a limit or validation), by code.", ["code"])
# livesum: in multiprocess mode the workers alive now are added up; a dead one's count goes with it.
ANSWERS_STREAMING = Gauge("portal_answers_streaming", "Answers streaming now.", multiprocess_mode="livesum")
WEBSOCKETS_OPEN = Gauge("portal_websockets_open", "Chat websockets connected now.", multiprocess_mode="livesum")
UPSTREAM_RETRIES = Counter("portal_upstream_retries", "Upstream attempts that failed and were retried, by error code.", ["code"])

# Not refusals: the portal failing, and someone else's conversation (not audited as a refusal either).
_NOT_REFUSALS = {"internal_error", "not_found"}


def observed(stream):
    """Wraps `ChatExecutor.stream`: counts each completion from its events, in one place."""

    @functools.wraps(stream)
    async def observed_stream(executor, request, *args, **kwargs):
        events = stream(executor, request, *args, **kwargs)
        started = False
        try:
            async for event in events:
                if isinstance(event, Started):
                    started = True
                    ANSWERS_STREAMING.inc()
                elif isinstance(event, (Done, Failed)):
                    # Before the event goes on: once a person sees an answer end, so does a scrape.
                    _finished(request.client, event, started)
                yield event
        finally:
            if started:
                ANSWERS_STREAMING.dec()
            await events.aclose()

    return observed_stream


def _finished(client: str, event: Done | Failed, started: bool) -> None:
    try:
        outcome = event.outcome
        if outcome is not None:
            model = outcome.model_id
            COMPLETIONS.labels(model, outcome.status, client).inc()
            LATENCY.labels(model).observe(outcome.latency_ms / 1000)
            if outcome.ttft_ms is not None:
                TIME_TO_FIRST_TOKEN.labels(model).observe(outcome.ttft_ms / 1000)
            INPUT_TOKENS.labels(model).inc(outcome.input_tokens)
            OUTPUT_TOKENS.labels(model).inc(outcome.output_tokens)
        if isinstance(event, Failed):
            ERRORS.labels(event.code).inc()
            if not started and event.code not in _NOT_REFUSALS:
                REFUSALS.labels(event.code).inc()
    except Exception:  # a metric must never cost a person their answer
        log.exception("could not record the metrics of a completion")


class DatabaseCollector:
    """Figures read from Postgres at scrape time: the same for every process, so never summed."""

    def describe(self):
        return []  # registering must not query the database

    def collect(self):
        from audit.models import WebhookDelivery
        from procrastinate.contrib.django.models import ProcrastinateJob

        try:
            backlog = ProcrastinateJob.objects.filter(queue_name="webhooks", status__in=["todo", "doing"]).count()
            given_up = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.FAILED).count()
        except Exception:
            log.warning("metrics: could not read the webhook figures from the database", exc_info=True)
            return
        yield GaugeMetricFamily("portal_webhook_backlog", "Webhook delivery jobs waiting or running.", value=backlog)
        yield GaugeMetricFamily(
            "portal_webhook_deliveries_given_up", "Webhook deliveries that failed for good (retried until WEBHOOK_RETRY_FOR).",
            value=given_up,
        )


def exposition() -> bytes:
    """The text format: this process's figures (or every worker's), then the database's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector())
    return text + generate_latest(database)


def _allowed(request) -> bool:
    token = settings.PORTAL_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def metrics_view(request):
    if not _allowed(request):
        why = ("the bearer token of PORTAL_METRICS_TOKEN" if settings.PORTAL_METRICS_TOKEN
               else "a connection from loopback (or set PORTAL_METRICS_TOKEN and send it as a bearer token)")
        return HttpResponse(f"Metrics are only for the monitoring: they need {why}.\n", status=403, content_type="text/plain")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
