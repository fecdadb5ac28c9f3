"""The writes of the audit trail (Zulip's do_* style): what a completion, or a person, leaves for
compliance.

Every entry is appended by `_append()`: in one transaction it takes the chain's lock, reads its
head (audit/chain.py), runs the caller's own writes, and inserts the sealed entry, so an answer is
never stored without its entry and the lock is held only until the commit.

- `do_record_completion()`: a completion's end (complete, error, cancelled): entry + usage record,
  and the webhook delivery jobs of its event (audit/webhooks.py), beside the stored answer.
- `do_record_refusal()`: a completion refused before it went upstream (a limit, an invalid
  request): entry + usage record with status "rejected", and no message.
- `do_record_event()`: anything else compliance reviews (log-ins, team changes, exports, ...).

`completion_rows()` is the one shape of a completion's two rows: the live path and `seed_usage`
both write through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import chain, webhooks
from audit.models import COMPLIANCE_TAG, Action, AuditEntry, Status, UsageRecord, new_audit_id
from chat.completion import CANCELLED, COMPLETE, ERROR, ESTIMATE, Exchange, Outcome

AUDIT_STATUS = {COMPLETE: Status.SUCCESS, ERROR: Status.ERROR, CANCELLED: Status.CANCELLED}
ACTION = {COMPLETE: Action.COMPLETION_SUCCEEDED, ERROR: Action.COMPLETION_FAILED, CANCELLED: Action.COMPLETION_CANCELLED}
# A refusal by one of the limits (chat/quotas.py) rather than by validation.
LIMIT_CODES = frozenset({"quota_exceeded", "rate_limited", "budget_exhausted"})


def prompt_sha256(messages: list[dict]) -> str:
    return chain.sha256_of(json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def completion_rows(exchange: Exchange, outcome: Outcome, *, audit_id: str, when: datetime) -> tuple[dict, dict]:
    """The column values of a completion's AuditEntry and UsageRecord."""
    status = AUDIT_STATUS[outcome.status]
    entry = {
        "action": ACTION[outcome.status],
        "audit_id": audit_id,
        "request_id": exchange.request_id,
        "user_id": exchange.user_id,
        "team_id": exchange.team_id,
        "target": "",
        "conversation_id": exchange.conversation_id,
        "message_id": exchange.message_id,
        "model_id": exchange.model_id,
        "status": status,
        "error_code": outcome.error_code,
        "safety_filtered": bool(outcome.filters),
        "filters": outcome.filters,
        "compliance_tag": COMPLIANCE_TAG,
        "timestamp": when,
        "prompt_sha256": prompt_sha256(exchange.messages),
        "answer_sha256": chain.sha256_of(outcome.text),
        "details": _client_details(exchange.client, exchange.api_key),
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


def _client_details(client: str, api_key: dict | None) -> dict:
    """Who asked, as the trail and analytics show it: the client, and a program's key name and prefix."""
    return {"client": client, "api_key": api_key} if api_key else {"client": client}


Rows = Callable[[str, datetime], tuple[dict, dict | None]]


def _append(rows: Rows, *, also: Callable[[datetime], None] | None = None, notify: bool = False) -> str:
    """Append one entry (and its usage record, if `rows` gives one) after the caller's writes
    `also(now)`, all in one transaction; returns the audit id.

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
                    also(now)  # before the rows: it may find the answer deleted meanwhile and say so
                entry, usage = rows(audit_id, now)
                chain.link([entry], head)
                AuditEntry.objects.create(**entry)
                if usage is not None:
                    UsageRecord.objects.create(**usage)
                    if notify:
                        webhooks.enqueue_completion(entry, usage)  # the outbox: committed with the entry, or not at all
            return audit_id
        except IntegrityError as exc:
            if attempt == 2 or "audit_id" not in str(exc):
                raise
    raise AssertionError("unreachable")


def do_record_completion(exchange: Exchange, outcome: Outcome, *, also: Callable[[datetime], None] | None = None) -> str:
    """Write the completion's audit entry and usage record, and run `also(now)` (the caller's own
    writes: the answer) in the same transaction; returns the audit id."""
    return _append(lambda audit_id, now: completion_rows(exchange, outcome, audit_id=audit_id, when=now), also=also, notify=True)


def _storable(text: str, limit: int) -> str:
    """`text` as PostgreSQL can keep it in a column of `limit` characters: no NUL, no lone
    surrogate (each becomes U+FFFD), cut to the limit."""
    text = str(text).encode("utf-8", "surrogatepass").decode("utf-8", "replace").replace("\x00", "\ufffd")
    return text[:limit]


def do_record_refusal(
    *, request_id: str, user_id: int, team_id: int | None, model_id: str, client: str, code: str, sentence: str,
    retry_after: float | None = None, conversation_id: int | None = None, messages: list[dict] | None = None,
    limit: dict | None = None,
    api_key: dict | None = None,
) -> str:
    """A completion refused before it went upstream: one entry (status "rejected", the error code,
    the sentence the person was shown) and a usage record with no tokens, so analytics count it.
    A refusal by a limit is a webhook event (completion.refused); an invalid request is not."""
    by_limit = code in LIMIT_CODES
    # What was refused may be anything a client sent (a model name with NUL or a lone surrogate,
    # ten thousand characters long): the entry keeps a storable copy rather than failing.
    model_id, sentence = _storable(model_id, 100), _storable(sentence, 2000)
    details = {**_client_details(client, api_key), "reason": sentence}
    if retry_after is not None:
        details["retry_after"] = retry_after
    if limit:  # which limit of chat/quotas.py refused it, and its value then
        details["limit"], details["limit_value"] = limit["name"], limit["value"]

    def rows(audit_id: str, now: datetime) -> tuple[dict, dict]:
        entry = {
            "action": Action.COMPLETION_REFUSED if by_limit else Action.COMPLETION_REJECTED,
            "audit_id": audit_id, "request_id": request_id, "user_id": user_id, "team_id": team_id,
            "target": "", "conversation_id": conversation_id, "message_id": None, "model_id": model_id,
            "status": Status.REJECTED, "error_code": code, "safety_filtered": False, "filters": [],
            "compliance_tag": COMPLIANCE_TAG, "timestamp": now,
            "prompt_sha256": prompt_sha256(messages) if messages else "", "answer_sha256": "", "details": details,
        }
        usage = {
            "request_id": request_id, "user_id": user_id, "team_id": team_id, "model_id": model_id,
            "status": Status.REJECTED, "latency_ms": 0, "ttft_ms": None, "input_tokens": 0, "output_tokens": 0,
            "input_chars": 0, "output_chars": 0, "tokens_per_second": 0.0, "timestamp": now,
            "token_source": ESTIMATE,  # the webhook event names it (audit/webhooks.py)
        }
        return entry, usage

    return _append(rows, notify=by_limit)


def do_record_event(
    action: Action, *, actor=None, team=None, target: str = "", details: dict | None = None,
    conversation_id: int | None = None, also: Callable[[datetime], None] | None = None,
) -> str:
    """Audit something a person did (Action: a log-in, a team change, an export, ...): who acted
    (`actor`, a user or None), for which team, on what (`target`, "kind:identifier") and the facts
    that matter (`details`, JSON). `also(now)` runs the change itself in the same transaction, so
    a change is never made without its entry."""

    def rows(audit_id: str, now: datetime) -> tuple[dict, None]:
        return {
            "action": action, "audit_id": audit_id, "request_id": "",
            "user_id": getattr(actor, "pk", actor), "team_id": getattr(team, "pk", team), "target": target,
            "conversation_id": conversation_id, "message_id": None, "model_id": "", "status": "", "error_code": "",
            "safety_filtered": False, "filters": [], "compliance_tag": COMPLIANCE_TAG, "timestamp": now,
            "prompt_sha256": "", "answer_sha256": "", "details": details or {},
        }, None

    return _append(rows, also=also)
