"""Scenario 6: the compliance admin's lists and the usage analytics at scale.

Seeds the audit trail and usage records up to the asked number of rows with the project's own
`seed_usage` command (seed rows are marked: users `seed-*`, request ids `seed-…`), then asks the
running portal for each page and times the whole request on loopback: the admin lists and the
everyone-view of the analytics as a logged-in superuser, a member's analytics as the seed user
with the most usage in the last 30 days (the heaviest page a member can ask for), a team's as
the admin of the team with the most usage.
"""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count
from django.utils import timezone

from audit.models import AuditEntry, UsageRecord
from gateway_portal.bench.sessions import session_keys
from gateway_portal.bench.stats import summarize

# (label, path, kind, who asks: "staff" or "busiest")
PAGES = [
    ("audit entries", "/admin/audit/auditentry/", "admin", "staff"),
    ("audit entries, errors in the last 7 days", "/admin/audit/auditentry/?status__exact=error&timestamp__gte={week}", "admin", "staff"),
    ("audit entries, one audit id", "/admin/audit/auditentry/?q={audit_id}", "admin", "staff"),
    ("usage records", "/admin/audit/usagerecord/", "admin", "staff"),
    ("usage records, one model", "/admin/audit/usagerecord/?model=gpt-4", "admin", "staff"),
    ("analytics, the busiest person's last 30 days", "/analytics/?range=30d", "analytics", "busiest"),
    ("analytics, the busiest person's last 24 hours by hour", "/analytics/?range=24h", "analytics", "busiest"),
    ("analytics CSV, the busiest person's 30 days by day", "/analytics/over-time.csv?range=30d", "analytics", "busiest"),
    ("analytics, the busiest team's last 30 days (its admin)", "/analytics/?range=30d", "analytics team", "team admin"),
    ("analytics CSV, the busiest team's people, 30 days", "/analytics/people.csv?range=30d", "analytics team", "team admin"),
    ("analytics, everyone's last 30 days (officer)", "/analytics/?range=30d", "analytics everyone", "staff"),
]


def measure(portal_url: str, rows: int, repeats: int, say) -> dict:
    say(f"  seeding the audit trail up to {rows:,} rows (manage.py seed_usage) …")
    call_command("seed_usage", until=rows, verbosity=0, stdout=_Quiet())
    staff, _ = get_user_model().objects.get_or_create(
        username="bench-staff", defaults={"is_staff": True, "is_superuser": True}
    )
    busiest, busiest_rows = busiest_person(timezone.now() - timedelta(days=30))
    team_admin, team, team_rows = busiest_team_admin(timezone.now() - timedelta(days=30))
    keys = dict(zip(("staff", "busiest", "team admin"), session_keys([staff, busiest, team_admin])))
    audit_id = AuditEntry.objects.order_by("-id").values_list("audit_id", flat=True).first()
    week = (timezone.now() - timedelta(days=7)).date().isoformat()
    results = []
    for label, path, kind, who in PAGES:
        path = path.format(audit_id=audit_id, week=week)
        with httpx.Client(base_url=portal_url, cookies={"sessionid": keys[who]}, timeout=60) as client:
            client.get(path)  # warm-up
            times = []
            for _ in range(repeats):
                began = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - began) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{path} answered {response.status_code}")
        results.append({"label": label, "path": path, "kind": kind, **summarize(times)})
    return {
        "rows": AuditEntry.objects.count(), "repeats": repeats, "pages": results,
        "busiest": {"username": busiest.username, "rows_30_days": busiest_rows},
        "busiest_team": {"name": team.name, "rows_30_days": team_rows},
    }


def busiest_team_admin(since):
    """A team admin (`bench-team-admin`, made here) of the team with the most usage records since
    `since`, the team and how many records."""
    from gateway_portal.models import Membership, Team

    top = (
        UsageRecord.objects.filter(timestamp__gte=since, team__isnull=False).values("team_id")
        .annotate(rows=Count("id")).order_by("-rows").first()
    )
    if top is None:
        raise RuntimeError("No team's usage records in the last 30 days to time the analytics with.")
    team = Team.objects.get(pk=top["team_id"])
    admin, _ = get_user_model().objects.get_or_create(username="bench-team-admin")
    Membership.objects.filter(user=admin).exclude(team=team).delete()
    Membership.objects.update_or_create(user=admin, team=team, defaults={"role": Membership.Role.ADMIN})
    return admin, team, top["rows"]


def busiest_person(since):
    """The person with the most usage records since `since`, and how many."""
    top = (
        UsageRecord.objects.filter(timestamp__gte=since).values("user_id")
        .annotate(rows=Count("id")).order_by("-rows").first()
    )
    if top is None:
        raise RuntimeError("No usage records in the last 30 days to time the analytics with.")
    return get_user_model().objects.get(pk=top["user_id"]), top["rows"]


class _Quiet:
    def write(self, *_):
        pass

    def flush(self):
        pass
