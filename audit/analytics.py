"""The usage analytics' queries: figures, usage over time and breakdowns, computed in Postgres.

Every function takes a queryset of usage records that the caller has already narrowed to what the
person may see (`chat.access.usage_visible_to`) and to the chosen window, person and model
(`records_in`), and answers with one aggregate query: rows are never loaded into Python, only the
aggregated groups (at most one per hour or day of the window, or per person or model shown).

What the figures mean (the README's "Usage analytics" section says the same to people):
- requests: every usage record, refusals included; by status: success, error, cancelled (the
  completions that went upstream) and refused (status "rejected": stopped before it went
  upstream, by a limit or as an invalid request; no tokens, no latency).
- error rate: errors / completions that went upstream (success + error + cancelled), so a person
  refused by their quota does not make the AI service look broken.
- input and output tokens: sums; `estimated`: how many completions counted tokens from characters
  (UsageRecord.token_source) because the upstream reported none (refusals never count).
- latency and time to first token: the 50th and 95th percentiles (`percentile_cont`, interpolated)
  of successful completions, so quick failures do not flatter them.
- tokens per second: the median of completions that produced output.
Budget used arrives with the limits issue; the page keeps a marked place for it.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db.models import Aggregate, Count, FloatField, Q, QuerySet, Sum
from django.db.models.functions import Trunc

from audit.models import Status, UsageRecord

HOUR, DAY = "hour", "day"
BREAKDOWN_LIMIT = 20  # people, teams or models shown, those with the most requests first
NO_TEAM = "(no team)"  # the label of records made for no team (before teams existed)

# The dimensions usage can be broken down by, as the `values()` that group it; the last names it.
BREAKDOWNS = {
    "person": ("user_id", "user__username"),
    "team": ("team_id", "team__slug", "team__name"),
    "model": ("model_id",),
}


class Percentile(Aggregate):
    """PostgreSQL's `percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)`: the
    interpolated percentile, computed where the rows are. Null values are ignored."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)r) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra):
        if not 0 <= fraction <= 1:
            raise ValueError("A percentile's fraction lies between 0 and 1.")
        super().__init__(expression, fraction=float(fraction), **extra)


SUCCESS = Q(status=Status.SUCCESS)
COUNTS = ("requests", "success", "error", "cancelled", "refused", "input_tokens", "output_tokens", "estimated")


def measures() -> dict:
    """The aggregates of every group: the figures, per window, bucket, person or model."""
    return {
        # Not COUNT(id): every column read here is in the covering index (audit.models), so
        # Postgres answers from the index alone. (status is never null; Django refuses "*" with a filter.)
        "requests": Count("*"),
        "success": Count("status", filter=SUCCESS),
        "error": Count("status", filter=Q(status=Status.ERROR)),
        "cancelled": Count("status", filter=Q(status=Status.CANCELLED)),
        "refused": Count("status", filter=Q(status=Status.REJECTED)),
        "input_tokens": Sum("input_tokens", default=0),
        "output_tokens": Sum("output_tokens", default=0),
        "estimated": Count(
            "status", filter=Q(token_source=UsageRecord.TokenSource.ESTIMATE) & ~Q(status=Status.REJECTED)
        ),
        "latency_p50": Percentile("latency_ms", 0.5, filter=SUCCESS),
        "latency_p95": Percentile("latency_ms", 0.95, filter=SUCCESS),
        "ttft_p50": Percentile("ttft_ms", 0.5, filter=SUCCESS),
        "ttft_p95": Percentile("ttft_ms", 0.95, filter=SUCCESS),
        # Of completions that produced output. (Not `output_tokens__gt`: that name is the Sum above.)
        "tokens_per_second": Percentile("tokens_per_second", 0.5, filter=Q(tokens_per_second__gt=0)),
    }


# An empty bucket: nothing counted, no percentile.
EMPTY = {name: None for name in measures()} | {name: 0 for name in COUNTS}


def _finish(group: dict) -> dict:
    upstream = group["requests"] - group["refused"]
    group["upstream"] = upstream
    group["error_rate"] = group["error"] / upstream if upstream else None
    return group


@dataclass(frozen=True)
class Window:
    """A half-open time range [start, end) and the size of its buckets, in the portal's time zone."""

    start: datetime
    end: datetime
    bucket: str = DAY

    @classmethod
    def last(cls, span: timedelta, bucket: str, now: datetime) -> Window:
        return cls(now - span, now, bucket)

    @classmethod
    def days(cls, first: date, last: date, bucket: str) -> Window:
        """Whole days, `first` to `last` included."""
        tz = portal_time_zone()
        return cls(
            datetime.combine(first, time(), tzinfo=tz),
            datetime.combine(last + timedelta(days=1), time(), tzinfo=tz),
            bucket,
        )

    def buckets(self) -> list[datetime]:
        """Every bucket's start in the window, as naive local times (the keys of `over_time`)."""
        tz = portal_time_zone()
        start, end = self.start.astimezone(tz), self.end.astimezone(tz)
        if self.bucket == DAY:
            day, stop = start.date(), (end - timedelta(microseconds=1)).date()
            return [datetime.combine(day + timedelta(days=n), time()) for n in range((stop - day).days + 1)]
        # Hours step in absolute time, so a day that changes the clock has its 23 or 25 hours.
        moment = start.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        keys = []
        while moment < end:
            keys.append(moment.astimezone(tz).replace(tzinfo=None))
            moment += timedelta(hours=1)
        return list(dict.fromkeys(keys))


def portal_time_zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def records_in(
    records: QuerySet[UsageRecord], window: Window, *, person: str = "", team: str = "", model: str = ""
) -> QuerySet[UsageRecord]:
    """The records of the window, of one person (user name), team (slug) and model when given."""
    records = records.filter(timestamp__gte=window.start, timestamp__lt=window.end)
    if person:
        records = records.filter(user__username=person)
    if team:
        records = records.filter(team__slug=team)
    if model:
        records = records.filter(model_id=model)
    return records


def figures(records: QuerySet[UsageRecord]) -> dict:
    """The window's figures in one group."""
    return _finish(records.aggregate(**measures()))


def over_time(records: QuerySet[UsageRecord], window: Window) -> list[dict]:
    """The figures per hour or day of the window, empty buckets included (with zero requests),
    oldest first; each group's `bucket` is its naive local start time."""
    rows = (
        records.annotate(bucket=Trunc("timestamp", window.bucket, tzinfo=portal_time_zone()))
        .values("bucket")
        .annotate(**measures())
        .order_by("bucket")
    )
    tz = portal_time_zone()
    found = {row["bucket"].astimezone(tz).replace(tzinfo=None): row for row in rows}
    return [_finish({**EMPTY, **found.get(key, {}), "bucket": key}) for key in window.buckets()]


def breakdown(records: QuerySet[UsageRecord], by: str, limit: int = BREAKDOWN_LIMIT) -> list[dict]:
    """The figures per person, team or model (BREAKDOWNS), those with the most requests first;
    each group's `label` names it."""
    fields = BREAKDOWNS[by]
    rows = records.values(*fields).annotate(**measures()).order_by("-requests", *fields)[:limit]
    return [_finish({**row, "label": row[fields[-1]] or NO_TEAM}) for row in rows]


# --- The page's source of figures: the usage records, or the roll-ups where they are too many ---


class FromRecords:
    """Every figure from the usage records (exact)."""

    approximate = False

    def __init__(self, records: QuerySet[UsageRecord], window: Window):
        self.records, self.window = records, window

    def figures(self) -> dict:
        return figures(self.records)

    def over_time(self) -> list[dict]:
        return over_time(self.records, self.window)

    def breakdown(self, by: str, limit: int = BREAKDOWN_LIMIT, *, latency_only: bool = False) -> list[dict]:
        return breakdown(self.records, by, limit)


class FromRollups:
    """The same figures from the roll-ups of the window's whole rolled days and the usage records
    of the rest (audit/rollups.py): counts and sums exact, percentiles within
    rollups.PERCENTILE_ERROR."""

    approximate = True

    def __init__(self, scope, plan, window: Window, *, team: str = "", model: str = ""):
        from gateway_portal.models import Team

        self.scope, self.plan, self.window, self.model = scope, plan, window, model
        self.team_id = None
        if team:  # a slug nobody has: id 0, which no team has either
            self.team_id = Team.objects.filter(slug=team).values_list("pk", flat=True).first() or 0

    def _summed(self, grouping: str, histograms: tuple[str, ...] | None = None) -> dict:
        from audit import rollups

        return rollups.summed(
            self.scope, self.plan, self.window, team_id=self.team_id, model=self.model, groupings=[grouping],
            histograms=histograms or tuple(rollups.HISTOGRAMS),
        )[grouping]

    def figures(self) -> dict:
        return _finish({**EMPTY, **self._summed("total").get((), {})})

    def over_time(self) -> list[dict]:
        found = {datetime.combine(key[0], time()): row for key, row in self._summed("bucket").items()}
        return [_finish({**EMPTY, **found.get(key, {}), "bucket": key}) for key in self.window.buckets()]

    def breakdown(self, by: str, limit: int = BREAKDOWN_LIMIT, *, latency_only: bool = False) -> list[dict]:
        """`latency_only`: leave the time to first token and tokens per second out (the page's
        tables do not show them), a third of the work on the people's roll-ups."""
        from django.contrib.auth import get_user_model

        from gateway_portal.models import Team

        groups = sorted(self._summed(by, ("latency_hist",) if latency_only else None).items(), key=lambda item: (-item[1]["requests"], str(item[0][0])))[:limit]
        keys = [key for key, _ in groups]
        fields = BREAKDOWNS[by]
        if by == "person":
            names = dict(get_user_model().objects.filter(pk__in=keys and [k[0] for k in keys]).values_list("pk", "username"))
            named = [{"user_id": k[0], "user__username": names.get(k[0])} for k in keys]
        elif by == "team":
            teams = {pk: (slug, name) for pk, slug, name in Team.objects.filter(pk__in=[k[0] for k in keys if k[0]]).values_list("pk", "slug", "name")}
            named = [{"team_id": k[0], "team__slug": teams.get(k[0], (None, None))[0], "team__name": teams.get(k[0], (None, None))[1]} for k in keys]
        else:
            named = [{"model_id": k[0]} for k in keys]
        return [_finish({**EMPTY, **row, **name, "label": name[fields[-1]] or NO_TEAM}) for (_, row), name in zip(groups, named)]


def source(user, records: QuerySet[UsageRecord], window: Window, *, person: str = "", team: str = "", model: str = ""):
    """Where the page's figures come from: the roll-ups when the window is grouped by day and not
    narrowed to one person (audit/rollups.py says why), else the records."""
    from audit import rollups
    from chat import access

    plan = None if person else rollups.plan(window, person=person)
    if plan is None:
        return FromRecords(records, window)
    return FromRollups(access.usage_scope(user), plan, window, team=team, model=model)
