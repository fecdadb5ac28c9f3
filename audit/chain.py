"""The audit trail's hash chain: each entry seals the one before it.

Every AuditEntry has a `seq` (1, 2, 3, … with no gaps), the `prev_hash` of the entry before it
and its own `hash = SHA-256(prev_hash || canonical JSON of the entry)`. Changing, removing or
inserting an entry anywhere breaks every hash after it, which `verify()` (and `manage.py
verify_audit`) finds. The database also refuses UPDATE and DELETE on the table, whoever runs them
(a trigger, audit/migrations/0003_chain.py); the chain is what catches someone who gets past it.

Appends from many processes keep one unbroken chain: `append()` takes a transaction-scoped
advisory lock inside the caller's transaction, reads the head, and inserts, so the lock is held
only until that transaction commits (two statements more per completion).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from django.db import connection

# pg_advisory_xact_lock's key for "the audit chain's head" (any fixed 64-bit number).
LOCK_KEY = 0x41554449545F4348  # "AUDIT_CH"
GENESIS = "0" * 64

# The fields an entry's hash covers, in the canonical JSON (everything but id, hash, prev_hash).
SEALED = (
    "seq", "audit_id", "action", "request_id", "user_id", "team_id", "conversation_id", "message_id",
    "model_id", "status", "error_code", "safety_filtered", "filters", "compliance_tag", "timestamp",
    "prompt_sha256", "answer_sha256", "details",
)
# Fields added after entries were first sealed: covered when set, left out of the JSON when
# empty, so every entry sealed before they existed still verifies (and emptying one still shows).
SEALED_WHEN_SET = ("target",)


def _plain(value):
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return value


def canonical(values: dict) -> bytes:
    """The entry as sorted, compact JSON (UTC timestamps to the microsecond PostgreSQL keeps)."""
    plain = {name: _plain(values.get(name)) for name in SEALED}
    plain.update({name: values[name] for name in SEALED_WHEN_SET if values.get(name)})
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal(prev_hash: str, values: dict) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(values)).hexdigest()


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def lock_head() -> tuple[int, str]:
    """Inside a transaction: wait for the chain, then (seq, hash) of its head ((0, GENESIS) if empty)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        cursor.execute("SELECT seq, hash FROM audit_auditentry WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1")
        row = cursor.fetchone()
    return (row[0], row[1]) if row else (0, GENESIS)


def link(entries: list[dict], head: tuple[int, str]) -> tuple[int, str]:
    """Give each entry (column values) its seq, prev_hash and hash after `head`; returns the new head."""
    seq, prev_hash = head
    for values in entries:
        seq += 1
        values["seq"] = seq
        values["prev_hash"] = prev_hash
        values["hash"] = prev_hash = seal(prev_hash, values)
    return seq, prev_hash


@dataclass
class Verdict:
    checked: int
    head_seq: int
    head_hash: str
    broken_at: int | None = None
    reason: str = ""
    remembered: dict[int, str] = field(default_factory=dict)  # seq -> hash of the entries asked for

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def verify(batch: int = 10_000, remember: set[int] = frozenset()) -> Verdict:
    """Walk the whole chain in seq order, recomputing every hash; keeps the hashes of the entries
    in `remember` (to compare with published checkpoints)."""
    from audit.models import AuditEntry

    fields = [*SEALED, *SEALED_WHEN_SET, "prev_hash", "hash"]
    expected_seq, prev_hash, checked = 1, GENESIS, 0
    last = 0
    remembered: dict[int, str] = {}
    while True:
        rows = list(AuditEntry.objects.filter(seq__gt=last).order_by("seq").values(*fields)[:batch])
        if not rows:
            break
        for row in rows:
            if row["seq"] != expected_seq:
                return Verdict(checked, expected_seq - 1, prev_hash, expected_seq, f"entry {expected_seq} is missing")
            if row["prev_hash"] != prev_hash:
                return Verdict(checked, row["seq"] - 1, prev_hash, row["seq"], "it does not follow the entry before it")
            if seal(prev_hash, row) != row["hash"]:
                return Verdict(checked, row["seq"] - 1, prev_hash, row["seq"], "its content was changed after it was written")
            if row["seq"] in remember:
                remembered[row["seq"]] = row["hash"]
            prev_hash, expected_seq, checked = row["hash"], expected_seq + 1, checked + 1
        last = rows[-1]["seq"]
    return Verdict(checked, expected_seq - 1, prev_hash, remembered=remembered)
