"""Scenario 6: the compliance admin's lists at scale.

Seeds the audit trail and usage records up to the asked number of rows with the project's own
`seed_usage` command (seed rows are marked: users `seed-*`, request ids `seed-…`), then asks the
running portal for each page as a logged-in staff user and times the whole request on loopback.
"""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEntry
from gateway_portal.bench.sessions import session_keys
from gateway_portal.bench.stats import summarize

PAGES = [
    ("audit entries", "/admin/audit/auditentry/"),
    ("audit entries, errors in the last 7 days", "/admin/audit/auditentry/?status__exact=error&timestamp__gte={week}"),
    ("audit entries, one audit id", "/admin/audit/auditentry/?q={audit_id}"),
    ("usage records", "/admin/audit/usagerecord/"),
    ("usage records, one model", "/admin/audit/usagerecord/?model=gpt-4"),
]


def measure(portal_url: str, rows: int, repeats: int, say) -> dict:
    say(f"  seeding the audit trail up to {rows:,} rows (manage.py seed_usage) …")
    call_command("seed_usage", until=rows, verbosity=0, stdout=_Quiet())
    staff, _ = get_user_model().objects.get_or_create(
        username="bench-staff", defaults={"is_staff": True, "is_superuser": True}
    )
    (key,) = session_keys([staff])
    audit_id = AuditEntry.objects.order_by("-id").values_list("audit_id", flat=True).first()
    week = (timezone.now() - timedelta(days=7)).date().isoformat()
    results = []
    with httpx.Client(base_url=portal_url, cookies={"sessionid": key}, timeout=60) as client:
        for label, path in PAGES:
            path = path.format(audit_id=audit_id, week=week)
            client.get(path)  # warm-up
            times = []
            for _ in range(repeats):
                began = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - began) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"{path} answered {response.status_code}")
            results.append({"label": label, "path": path, **summarize(times)})
    return {"rows": AuditEntry.objects.count(), "repeats": repeats, "pages": results}


class _Quiet:
    def write(self, *_):
        pass

    def flush(self):
        pass
