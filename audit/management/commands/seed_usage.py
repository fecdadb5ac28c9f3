"""`python manage.py seed_usage`: fill the audit trail and usage records with realistic rows.

For trying the compliance admin and the analytics at scale (the benchmark seeds 1,000,000 rows):
rows spread over the last 90 days across 50 seed users and the configured models, written with
PostgreSQL's COPY (about 1 s per 100,000 rows here) so a million takes seconds, not an hour.
Seed users are `seed-0` … `seed-49` with unusable passwords, in teams `seed-0` … `seed-4` (the
first the busiest); their rows are marked by
request ids starting with `seed-`. About 2% are refusals by a limit. The days it wrote into are
rolled up at the end (`rollup_usage --all`), as the hourly job would have.
"""

from __future__ import annotations

import json
import random
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from audit import chain
from audit.actions import completion_rows
from audit.models import Action, AuditEntry, Status, UsageRecord
from gateway_portal.models import Membership, Team
from chat.completion import CANCELLED, COMMAND, COMPLETE, ERROR, UPSTREAM_COUNT, Exchange, Outcome

BATCH = 100_000
STATUSES = [COMPLETE] * 92 + [ERROR] * 5 + [CANCELLED] * 3
REFUSED = 0.02  # of requests, refused by a limit before they went upstream
AUDIT_COLUMNS = (
    "seq", "prev_hash", "hash", "action", "audit_id", "request_id", "user_id", "team_id", "model_id", "status",
    "error_code", "safety_filtered", "filters", "compliance_tag", "timestamp", "prompt_sha256", "answer_sha256", "details",
    "target",
)
USAGE_COLUMNS = (
    "request_id", "user_id", "team_id", "model_id", "status", "latency_ms", "ttft_ms", "input_tokens", "output_tokens",
    "input_chars", "output_chars", "token_source", "tokens_per_second", "timestamp",
)


class Command(BaseCommand):
    help = "Add seed audit entries and usage records (for the admin and analytics at scale)."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--rows", type=int, help="Add this many rows of each.")
        group.add_argument("--until", type=int, help="Add rows until there are at least this many audit entries.")
        parser.add_argument("--seed", type=int, default=1, help="Random seed, for repeatable data (default 1).")

    def handle(self, *args, rows, until, seed, **options):
        if rows is not None and rows < 1 or until is not None and until < 1:
            raise CommandError("Give a positive number of rows.")
        missing = rows if rows is not None else max(0, until - AuditEntry.objects.count())
        if not missing:
            self.stdout.write(f"Nothing to add: {AuditEntry.objects.count():,} audit entries already.")
            return
        users = self.seed_users()
        rng = random.Random(seed)
        ids = audit_ids(set(AuditEntry.objects.values_list("audit_id", flat=True)), rng.getrandbits(32))
        added = 0
        while added < missing:
            size = min(BATCH, missing - added)
            with transaction.atomic():
                self.copy_batch(rng, users, size, ids)
            added += size
            self.stdout.write(f"  {added:,} / {missing:,} rows")
        self.stdout.write(self.style.SUCCESS(f"Added {added:,} audit entries and usage records."))
        # The rows went into past days: roll them up, as the hourly job would have (audit/rollups.py).
        call_command("rollup_usage", "--all", stdout=self.stdout)

    def seed_users(self) -> list[tuple[int, int]]:
        """(person, team) pairs: 50 seed people in 5 seed teams of 10, the first team the busiest
        (it gets about 40% of the rows)."""
        User = get_user_model()
        names = [f"seed-{i}" for i in range(50)]
        existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
        new = [User(username=name) for name in names if name not in existing]
        for user in new:
            user.set_unusable_password()
        User.objects.bulk_create(new)
        teams = [Team.objects.get_or_create(slug=f"seed-{i}", defaults={"name": f"Seed team {i}"})[0] for i in range(5)]
        pairs = []
        for user_id, name in User.objects.filter(username__in=names).values_list("pk", "username"):
            team = teams[int(name.removeprefix("seed-")) // 10]
            Membership.objects.get_or_create(team=team, user_id=user_id)
            pairs.append((user_id, team.pk))
        busiest = [pair for pair in pairs if pair[1] == teams[0].pk]
        return pairs + busiest * 2

    def copy_batch(self, rng: random.Random, users: list[tuple[int, int]], size: int, ids) -> None:
        now = timezone.now()
        models = settings.PORTAL_MODELS
        audit_table, usage_table = AuditEntry._meta.db_table, UsageRecord._meta.db_table
        audit_rows, usage_rows = [], []
        for _ in range(size):
            (user, team), model, status = rng.choice(users), rng.choice(models), rng.choice(STATUSES)
            output_tokens = rng.randint(20, 1200)
            ttft = rng.randint(150, 900)
            exchange = Exchange(
                request_id="seed-" + secrets.token_hex(8), user_id=user, team_id=team, client=COMMAND,
                messages=[{"role": "user", "content": "x" * rng.randint(40, 12000)}],
                model_id=model, temperature=0.7, max_tokens=4096,
            )
            outcome = Outcome(
                status=status, text="x" * (output_tokens * 4), model_id=model,
                error_code="upstream_unavailable" if status == ERROR else "",
                filters=[{"filter": "think_blocks", "count": 1}] if rng.random() < 0.04 else [],
                input_tokens=rng.randint(10, 3000), output_tokens=output_tokens, token_source=UPSTREAM_COUNT,
                latency_ms=ttft + output_tokens * rng.randint(15, 30), ttft_ms=ttft,
            )
            when = now - timedelta(seconds=rng.uniform(0, 90 * 86400))
            entry, usage = completion_rows(exchange, outcome, audit_id=next(ids), when=when)
            if rng.random() < REFUSED:
                refuse(entry, usage)
            audit_rows.append(entry)
            usage_rows.append(tuple(usage[column] for column in USAGE_COLUMNS))
        # Chained like live entries (audit/chain.py), under the chain's lock for this transaction.
        chain.link(audit_rows, chain.lock_head())
        for entry in audit_rows:
            entry["filters"], entry["details"] = json.dumps(entry["filters"]), json.dumps(entry["details"])
        audit_rows = [tuple(entry[column] for column in AUDIT_COLUMNS) for entry in audit_rows]
        with connection.cursor() as cursor:
            raw = cursor.cursor  # psycopg's own cursor, for COPY
            with raw.copy(
                f"COPY {audit_table} ({', '.join(AUDIT_COLUMNS)}) FROM STDIN"
            ) as copy:
                for row in audit_rows:
                    copy.write_row(row)
            with raw.copy(
                f"COPY {usage_table} ({', '.join(USAGE_COLUMNS)}) FROM STDIN"
            ) as copy:
                for row in usage_rows:
                    copy.write_row(row)


def refuse(entry: dict, usage: dict) -> None:
    """Make a completion's rows a refusal by a limit, as audit.actions.do_record_refusal writes it."""
    entry.update(action=Action.COMPLETION_REFUSED, status=Status.REJECTED, error_code="quota_exceeded", message_id=None,
                 answer_sha256="", filters=[], safety_filtered=False)
    usage.update(status=Status.REJECTED, latency_ms=0, ttft_ms=None, input_tokens=0, output_tokens=0, input_chars=0,
                 output_chars=0, token_source=UsageRecord.TokenSource.ESTIMATE, tokens_per_second=0.0)


def audit_ids(taken: set[str], start: int):
    """Audit ids that look like real ones but never repeat: a counter through a bijection of
    32-bit numbers (an odd multiplier modulo 2**32), skipping ids already in the table."""
    counter = start
    while True:
        counter += 1
        candidate = f"AUD-{counter * 2654435761 % 2**32:08x}"
        if candidate not in taken:
            yield candidate
