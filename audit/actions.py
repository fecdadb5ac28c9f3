"""The writes of the audit trail (Zulip's do_* style): what a completion leaves for compliance.

`do_record_completion()` writes a completion's audit entry and usage record inside the same
transaction as whatever the caller stores with them (the chat's answer), so an answer is never
stored without its audit entry. It owns the audit id and the entry's place in the hash chain
(audit/chain.py: the chain's lock is taken in that transaction, so it is held only until the
commit). `completion_rows()` is the one shape of those two rows: the live path and `seed_usage`
both write through it. The webhook delivery jobs of the
completion's event are enqueued in that transaction too (audit/webhooks.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import chain, webhooks
from audit.models import COMPLIANCE_TAG, Action, AuditEntry, Status, UsageRecord, new_audit_id
from chat.completion import CANCELLED, COMPLETE, ERROR, Exchange, Outcome

AUDIT_STATUS = {COMPLETE: Status.SUCCESS, ERROR: Status.ERROR, CANCELLED: Status.CANCELLED}
ACTION = {COMPLETE: Action.COMPLETION_SUCCEEDED, ERROR: Action.COMPLETION_FAILED, CANCELLED: Action.COMPLETION_CANCELLED}


def completion_rows(exchange: Exchange, outcome: Outcome, *, audit_id: str, when: datetime) -> tuple[dict, dict]:
    """The column values of a completion's AuditEntry and UsageRecord."""
    status = AUDIT_STATUS[outcome.status]
    entry = {
        "action": ACTION[outcome.status],
        "audit_id": audit_id,
        "request_id": exchange.request_id,
        "user_id": exchange.user_id,
        "team_id": exchange.team_id,
        "conversation_id": exchange.conversation_id,
        "message_id": exchange.message_id,
        "model_id": exchange.model_id,
        "status": status,
        "error_code": outcome.error_code,
        "safety_filtered": bool(outcome.filters),
        "filters": outcome.filters,
        "compliance_tag": COMPLIANCE_TAG,
        "timestamp": when,
        "prompt_sha256": chain.sha256_of(json.dumps(exchange.messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)),
        "answer_sha256": chain.sha256_of(outcome.text),
        "details": {"client": exchange.client},
    }
    usage = {
        "request_id": exchange.request_id,
        "user_id": exchange.user_id,
        "team_id": exchange.team_id,
        "model_id": exchange.model_id,
        "status": status,
        "latency_ms": outcome.latency_ms,
        "ttft_ms": outcome.ttft_ms,
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
        "input_chars": exchange.input_chars,
        "output_chars": len(outcome.text),
        "token_source": outcome.token_source,
        "tokens_per_second": outcome.tokens_per_second,
        "timestamp": when,
    }
    return entry, usage


def do_record_completion(exchange: Exchange, outcome: Outcome, *, also: Callable[[datetime], None] | None = None) -> str:
    """Write the completion's audit entry and usage record, and run `also(now)` (the caller's own
    writes) in the same transaction; returns the audit id.

    The seed's audit id (AUD- and 8 hex digits) has 4 billion values, so at a million entries one
    new id in a few thousand collides; the whole transaction is then tried again with a new id
    (no savepoint, so the common case costs nothing), rather than losing the answer.
    """
    for attempt in range(3):
        audit_id = new_audit_id()
        try:
            with transaction.atomic():
                head = chain.lock_head()  # first: the entry's time then follows the chain's order
                now = timezone.now()
                if also is not None:
                    also(now)  # before the rows: it may find the answer deleted meanwhile and say so in `exchange`
                entry, usage = completion_rows(exchange, outcome, audit_id=audit_id, when=now)
                chain.link([entry], head)
                AuditEntry.objects.create(**entry)
                UsageRecord.objects.create(**usage)
                webhooks.enqueue_completion(entry, usage)  # the outbox: committed with the entry, or not at all
            return audit_id
        except IntegrityError as exc:
            if attempt == 2 or "audit_id" not in str(exc):
                raise
    raise AssertionError("unreachable")
