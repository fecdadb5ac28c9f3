"""Usage roll-ups: each day's usage records summed once, so the analytics of a month of everyone's
usage read a few hundred rows instead of a million.

Two tables (audit.models), one row per group of a day (a date in the portal's time zone):
- UsageDay: per team and model. The everyone-view (officers, superusers) reads its figures, its
  time series by day and its team and model breakdowns here.
- UsagePersonDay: per person, team and model. The people breakdown, and views narrowed to some
  teams (a team admin's: their teams' records and their own elsewhere) read here.
Each row holds the counts and sums of the raw figures exactly, and three histograms (latency and
time to first token of successful completions, tokens per second of those with output) in fixed
log-spaced buckets: bucket 0 is below LOW, bucket i >= 1 holds [LOW·R^(i-1), LOW·R^i), the last
one everything above. A percentile is read as the raw one is (percentile_cont: interpolated
between the two nearest ranks), each rank taken as its bucket's geometric middle, so it lies
within R^½ - 1 = PERCENTILE_ERROR (4.9 %) of the exact figure for values between LOW and the top
bucket (10 ms to 14 min; 0.1 to 8,400 tokens/s). Counts and sums are exact.

When they are read (`applies`): the window is grouped by day and not narrowed to one person (the
page of a person stays exact: their rows are few, and their covering index answers them). Whole
days of the window that are rolled (RolledDay) come from the roll-ups; the rest of the window
(the first day's part, today, any day not rolled yet) from the usage records, summed into the
same shape by the same SQL the roll-up uses, so both add up alike.

How they are kept: `roll_days()` recomputes whole days, each in one transaction (delete the
day's rows, insert the new ones, mark the day), so running it twice counts nothing twice. The
periodic job (audit/tasks.py) re-rolls the last REROLL_DAYS closed days every hour: a record's
timestamp is taken in the transaction that writes it, so a record arrives late by that
transaction's length at most (seconds), well inside the day re-rolled the next hour. Records
written into older days (`seed_usage`, an import) need `manage.py rollup_usage --days N` (or
`--all`); seed_usage runs it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from audit.models import RolledDay, UsageDay, UsagePersonDay, UsageRecord

RATIO = 1.1
BUCKETS = 120
# (column, LOW): where bucket 1 starts for each histogram.
HISTOGRAMS = {"latency_hist": ("latency_ms", 10.0), "ttft_hist": ("ttft_ms", 10.0), "tps_hist": ("tokens_per_second", 0.1)}
PERCENTILE_ERROR = math.sqrt(RATIO) - 1
REROLL_DAYS = 2
# What the sums read of a usage record: all in the covering index by time.
RECORD_COLUMNS = ("timestamp", "user_id", "team_id", "model_id", "status", "token_source", "latency_ms", "ttft_ms",
                  "input_tokens", "output_tokens", "tokens_per_second")
COUNTS = ("requests", "success", "error", "cancelled", "refused", "estimated", "input_tokens", "output_tokens")


def _bucket_sql(column: str, low: float) -> str:
    return (
        f"LEAST({BUCKETS - 1}, CASE WHEN {column} < {low!r} THEN 0 "
        f"ELSE 1 + floor(ln({column}::float8 / {low!r}) / ln({RATIO!r}))::int END)"
    )


# One query sums a set of usage records into roll-up rows: counts and sums per group, and per
# group each histogram's bucket counts, as a JSON object {bucket: count} (arrays built in Python).
_HIST_SQL = """
    SELECT jsonb_object_agg(b, n) FROM (
        SELECT {bucket} AS b, count(*) AS n FROM unnest(array_agg({value}) FILTER (WHERE {condition})) AS v({column})
        GROUP BY 1
    ) h
"""


def _summing_sql(keys: list[str], where: str, group_by: list[str] | None = None, source: str = "") -> str:
    """Counts, sums and histograms of the usage records `where` says, per `keys` (SELECT
    expressions; `group_by` when they are not plain columns)."""
    hists = []
    for name, (column, low) in HISTOGRAMS.items():
        condition = "tokens_per_second > 0" if column == "tokens_per_second" else f"status = 'success' AND {column} IS NOT NULL"
        inner = _HIST_SQL.format(bucket=_bucket_sql(column, low), value=column, condition=condition, column=column)
        hists.append(f"({inner}) AS {name}")
    return f"""
        SELECT {', '.join(keys)},
            count(*) AS requests,
            count(*) FILTER (WHERE status = 'success') AS success,
            count(*) FILTER (WHERE status = 'error') AS error,
            count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
            count(*) FILTER (WHERE status = 'rejected') AS refused,
            count(*) FILTER (WHERE token_source = 'estimate' AND status <> 'rejected') AS estimated,
            coalesce(sum(input_tokens), 0) AS input_tokens,
            coalesce(sum(output_tokens), 0) AS output_tokens,
            {', '.join(hists)}
        FROM {source or UsageRecord._meta.db_table}
        WHERE {where}
        GROUP BY {', '.join(group_by or keys)}
    """


def _dense(found: dict | str | None) -> list[int]:
    if isinstance(found, str):  # Django leaves jsonb as text for its JSONField to decode
        found = json.loads(found)
    histogram = [0] * BUCKETS
    for bucket, count in (found or {}).items():
        histogram[int(bucket)] = count
    return histogram


def _portal_tz():
    from audit.analytics import portal_time_zone

    return portal_time_zone()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    tz = _portal_tz()
    return datetime.combine(day, time(), tzinfo=tz), datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)


# --- Keeping them ---------------------------------------------------------------------------


def roll_day(day: date) -> int:
    """Recompute `day`'s roll-ups from its usage records; returns how many records it summed."""
    start, end = day_bounds(day)
    sql = _summing_sql(["team_id", "user_id", "model_id"], "timestamp >= %s AND timestamp < %s")
    with transaction.atomic():
        with connection.cursor() as cursor:
            # One roll of a day at a time (two workers, or the job and the command): the second
            # waits and then redoes it, never interleaving its rows with the first's.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('audit.rollups'), %s)", [day.toordinal()])
            cursor.execute(sql, [start, end])
            columns = [c.name for c in cursor.description]
            rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
        UsagePersonDay.objects.filter(day=day).delete()
        UsageDay.objects.filter(day=day).delete()
        people, totals = [], {}
        for row in rows:
            figures = {name: row[name] for name in COUNTS}
            hists = {name: _dense(row[name]) for name in HISTOGRAMS}
            people.append(UsagePersonDay(day=day, team_id=row["team_id"], user_id=row["user_id"], model_id=row["model_id"], **figures, **hists))
            total = totals.setdefault((row["team_id"], row["model_id"]), {**{n: 0 for n in COUNTS}, **{n: [0] * BUCKETS for n in HISTOGRAMS}})
            for name in COUNTS:
                total[name] += figures[name]
            for name in HISTOGRAMS:
                total[name] = [a + b for a, b in zip(total[name], hists[name])]
        UsagePersonDay.objects.bulk_create(people, batch_size=2000)
        UsageDay.objects.bulk_create(
            [UsageDay(day=day, team_id=team, model_id=model, **figures) for (team, model), figures in totals.items()], batch_size=2000
        )
        summed = sum(row["requests"] for row in rows)
        RolledDay.objects.update_or_create(day=day, defaults={"rolled_at": timezone.now(), "records": summed})
    return summed


def closed_days(now: datetime | None = None) -> date:
    """The last day that has ended, in the portal's time zone."""
    return (now or timezone.now()).astimezone(_portal_tz()).date() - timedelta(days=1)


def roll_recent(days: int = REROLL_DAYS, now: datetime | None = None) -> list[date]:
    """Re-roll the last `days` closed days (the periodic job)."""
    last = closed_days(now)
    rolled = [last - timedelta(days=n) for n in range(days)]
    for day in rolled:
        roll_day(day)
    return rolled


def first_record_day() -> date | None:
    first = UsageRecord.objects.order_by("timestamp").values_list("timestamp", flat=True).first()
    return first.astimezone(_portal_tz()).date() if first else None


# --- Reading them ---------------------------------------------------------------------------


@dataclass
class Plan:
    """The part of a window read from roll-ups: the rolled days first to last, both included
    (from `start` to `end`); the rest of the window is read from the usage records."""

    first: date
    last: date
    start: datetime  # day_bounds(first)[0]
    end: datetime  # day_bounds(last)[1]


def plan(window, *, person: str) -> Plan | None:
    """The rolled days the window can read from roll-ups, or None to read every record."""
    from audit.analytics import DAY

    if person or window.bucket != DAY:
        return None
    tz = _portal_tz()
    start_local, end_local = window.start.astimezone(tz), window.end.astimezone(tz)
    first = start_local.date() + timedelta(days=0 if start_local.time() == time() else 1)
    last = end_local.date() - timedelta(days=1)  # the last whole day before the window's end
    if first > last:
        return None
    rolled = list(RolledDay.objects.filter(day__gte=first, day__lte=last).order_by("day").values_list("day", flat=True))
    if not rolled:
        return None
    # The run of consecutive rolled days that ends with the last one rolled.
    run_last = run_first = rolled[-1]
    for day in reversed(rolled[:-1]):
        if day != run_first - timedelta(days=1):
            break
        run_first = day
    return Plan(run_first, run_last, day_bounds(run_first)[0], day_bounds(run_last)[1])


GROUPINGS = {"total": [], "bucket": ["day"], "person": ["user_id"], "team": ["team_id"], "model": ["model_id"]}


def summed(
    scope: Q | None, plan: Plan, window, *, team_id: int | None, model: str, groupings: list[str],
    histograms: tuple[str, ...] = tuple(HISTOGRAMS),
) -> dict:
    """{grouping: {key: figures}}: the roll-ups of the plan's days plus the usage records of the
    rest of the window (narrowed to `scope`, a team id and a model when given), summed per
    grouping (GROUPINGS). Percentiles are estimated per group, of the `histograms` asked for (the
    others' are None): summing a histogram costs a sum per bucket per roll-up row."""
    results: dict[str, dict] = {name: {} for name in groupings}
    rollup_groupings = [g for g in groupings if g != "person"]
    # The teams table can answer only whoever sees everyone: it has no person to narrow by.
    if scope is None and rollup_groupings:
        _add_rollups(results, UsageDay.objects.all(), plan, team_id, model, rollup_groupings, histograms)
    else:
        rollup_groupings = []
    people_groupings = [g for g in groupings if g not in rollup_groupings]
    if people_groupings:
        rows = UsagePersonDay.objects.all() if scope is None else UsagePersonDay.objects.filter(scope)
        _add_rollups(results, rows, plan, team_id, model, people_groupings, histograms)
    _add_records(results, scope, plan, window, team_id, model, groupings)
    for groups in results.values():
        for figures in groups.values():
            for name in HISTOGRAMS:
                if name not in histograms:
                    figures[name] = None
            _percentiles(figures)
    return results


def _narrow(rows, team_id, model):
    if team_id is not None:
        rows = rows.filter(team_id=team_id)
    if model:
        rows = rows.filter(model_id=model)
    return rows


def _add_rollups(results, rows, plan: Plan, team_id, model, groupings, histograms):
    rows = _narrow(rows.filter(day__gte=plan.first, day__lte=plan.last), team_id, model)
    where, params = _where(rows)
    table = rows.model._meta.db_table
    sums = [f"sum({name}) AS {name}" for name in COUNTS]
    for name in HISTOGRAMS:
        if name in histograms:
            sums.append(f"ARRAY[{', '.join(f'sum({name}[{i}])' for i in range(1, BUCKETS + 1))}]::bigint[] AS {name}")
        else:
            sums.append(f"NULL::bigint[] AS {name}")
    for grouping in groupings:
        keys = GROUPINGS[grouping]
        select_keys = "".join(f"{k}, " for k in keys)
        group_by = f"GROUP BY {', '.join(keys)}" if keys else ""
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {select_keys}{', '.join(sums)} FROM {table} WHERE {where} {group_by}", params)
            columns = [c.name for c in cursor.description]
            for row in cursor.fetchall():
                row = dict(zip(columns, row))
                if row["requests"] is None:
                    continue
                _merge(results[grouping], tuple(row[k] for k in keys), row)


def _add_records(results, scope, plan: Plan, window, team_id, model, groupings):
    # The two ranges apart, joined by UNION ALL: each is then read from the covering index by time
    # alone (audit.models), where one OR of both would read every record's table page.
    parts, params = [], []
    table = UsageRecord._meta.db_table
    for start, end in ((window.start, plan.start), (plan.end, window.end)):
        rows = UsageRecord.objects.filter(timestamp__gte=start, timestamp__lt=end)
        if scope is not None:
            rows = rows.filter(scope)
        where, part_params = _where(_narrow(rows, team_id, model))
        parts.append(f"SELECT {', '.join(RECORD_COLUMNS)} FROM {table} WHERE {where}")
        params += part_params
    source = f"({' UNION ALL '.join(parts)}) AS {table}"
    for grouping in groupings:
        keys = GROUPINGS[grouping]
        select = ["(timestamp AT TIME ZONE %s)::date AS day" if k == "day" else k for k in keys] or ["1 AS one"]
        sql = _summing_sql(select, "TRUE", group_by=[k if k != "day" else "1" for k in keys] or ["1"], source=source)
        with connection.cursor() as cursor:
            cursor.execute(sql, ([_portal_tz().key] if "day" in keys else []) + params)
            columns = [c.name for c in cursor.description]
            for row in cursor.fetchall():
                row = dict(zip(columns, row))
                for name in HISTOGRAMS:
                    row[name] = _dense(row[name])
                _merge(results[grouping], tuple(row[k] for k in keys), row)


def _where(rows) -> tuple[str, list]:
    """A queryset's filters as SQL (the columns named with their table), for the hand-written
    aggregates above: so the visibility rule and the filters are Django's, not copied."""
    compiler = rows.query.get_compiler(using=rows.db)
    try:
        where, params = rows.query.where.as_sql(compiler, compiler.connection)
    except EmptyResultSet:
        return "FALSE", []
    return where or "TRUE", list(params)


def _merge(groups: dict, key: tuple, row: dict) -> None:
    found = groups.get(key)
    if found is None:
        groups[key] = {name: int(row[name]) for name in COUNTS} | {
            name: None if row[name] is None else [int(n or 0) for n in row[name]] for name in HISTOGRAMS
        }
        return
    for name in COUNTS:
        found[name] += int(row[name])
    for name in HISTOGRAMS:  # one not asked for stays None
        if found[name] is not None and row[name] is not None:
            found[name] = [a + int(b or 0) for a, b in zip(found[name], row[name])]
        else:
            found[name] = None


def _percentiles(figures: dict) -> None:
    for name, fractions in (("latency_hist", {"latency_p50": 0.5, "latency_p95": 0.95}),
                            ("ttft_hist", {"ttft_p50": 0.5, "ttft_p95": 0.95}),
                            ("tps_hist", {"tokens_per_second": 0.5})):
        low = HISTOGRAMS[name][1]
        histogram = figures.pop(name)
        for figure, fraction in fractions.items():
            figures[figure] = None if histogram is None else percentile(histogram, fraction, low)


def percentile(histogram: list[int], fraction: float, low: float) -> float | None:
    """percentile_cont(fraction) read from a histogram: interpolated between the two nearest
    ranks, each rank's value its bucket's geometric middle."""
    total = sum(histogram)
    if not total:
        return None
    position = fraction * (total - 1)
    below = math.floor(position)
    lower, upper = _rank_value(histogram, below, low), _rank_value(histogram, min(below + 1, total - 1), low)
    return lower + (position - below) * (upper - lower)


def _rank_value(histogram: list[int], rank: int, low: float) -> float:
    seen = 0
    for bucket, count in enumerate(histogram):
        seen += count
        if rank < seen:
            if bucket == 0:
                return low / 2
            if bucket == BUCKETS - 1:
                return low * RATIO ** (bucket - 1)  # the open top bucket: its lower edge
            return low * RATIO ** (bucket - 0.5)
    raise AssertionError("rank beyond the histogram")
