"""The usage analytics pages: `/analytics/` (figures, charts with their tables) and the CSV of each
table (`/analytics/<table>.csv`, with the same filters).

Whose usage counts is asked of `chat.access.usage_visible_to` only; the figures come from
`audit.analytics` (aggregates in Postgres). The page draws its charts with Chart.js from the
"analytics-data" json_script payload (static/analytics/analytics.js); each chart's table is in the
HTML beside it, so the numbers read without the script too.
"""

from __future__ import annotations

import csv

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from audit import analytics, rollups
from audit.forms import UsageFilters
from chat import access
from gateway_portal.models import Membership, Team

TABLES = ("summary", "over-time", "people", "teams", "models")
BREAKDOWN_OF = {"people": "person", "teams": "team", "models": "model"}

# The CSV columns after the group's own (bucket, person or model), in the page's order.
FIGURE_COLUMNS = [
    ("requests", "requests"), ("success", "success"), ("error", "error"), ("cancelled", "cancelled"),
    ("refused", "refused"), ("error_rate", "error_rate"), ("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
    ("estimated", "estimated_token_counts"), ("latency_p50", "latency_p50_ms"), ("latency_p95", "latency_p95_ms"),
    ("ttft_p50", "ttft_p50_ms"), ("ttft_p95", "ttft_p95_ms"), ("tokens_per_second", "tokens_per_second_p50"),
]


def _source(user, filters: UsageFilters):
    data = filters.cleaned_data
    narrowed = {"person": data["person"], "team": data["team"], "model": data["model"]}
    records = analytics.records_in(access.usage_visible_to(user), filters.window, **narrowed)
    return analytics.source(user, records, filters.window, **narrowed)


def sees_others(user) -> bool:
    """Whether the person may see anyone else's usage: then the page offers the person filter and
    breakdown. Asked of the same gate, so a team admin's view gains them with no change here.
    (A semi-join on the people, not a scan of the person's own records.)"""
    return (
        get_user_model().objects.filter(pk__in=access.usage_visible_to(user).values("user_id")).exclude(pk=user.pk).exists()
    )


def sees_teams(user) -> bool:
    """Whether the person may see more than one team's usage (an officer, a superuser, the admin
    of several teams, or of one with records of their own elsewhere): then the page offers the
    team filter and breakdown. Asked of the teams, not of a semi-join on a team's records, which
    reads all of them when there is no second team."""
    if access.usage_scope(user) is None:
        return Team.objects.count() > 1
    administered = list(Membership.objects.filter(user=user, role=Membership.Role.ADMIN).values_list("team_id", flat=True)[:2])
    if len(administered) != 1:
        return len(administered) > 1
    return access.usage_visible_to(user).filter(user=user).exclude(team_id=administered[0]).exists()


def _bucket_label(moment, bucket: str) -> str:
    return f"{moment:%-d %b %H:%M}" if bucket == analytics.HOUR else f"{moment:%a %-d %b}"


@require_GET
@login_required
def usage(request):
    filters = UsageFilters(request.GET)
    context = {"filters": filters}
    if not filters.is_valid():
        return render(request, "analytics/usage.html", context, status=400)

    user, window = request.user, filters.window
    usage = _source(user, filters)
    figures = usage.figures()
    others = sees_others(user)
    several_teams = others and sees_teams(user)
    over_time, people, teams, models = [], [], [], []
    if figures["requests"]:
        over_time = usage.over_time()
        # The tables show latency only; their CSVs have every figure.
        people = usage.breakdown("person", latency_only=True) if others else []
        teams = usage.breakdown("team", latency_only=True) if several_teams else []
        models = usage.breakdown("model", latency_only=True)
    for row in over_time:
        row["label"] = _bucket_label(row["bucket"], window.bucket)
    for by, rows in (("person", people), ("model", models)):
        for row in rows:  # a name narrows the page to it
            row["link"] = "?" + filters.query(**{by: row["label"]})
    for row in teams:
        row["link"] = "?" + filters.query(team=row["team__slug"]) if row["team__slug"] else ""
    csv_query = filters.query()
    context.update(
        window=window,
        figures=figures,
        over_time=over_time,
        people=people,
        teams=teams,
        models=models,
        sees_others=others,
        sees_teams=several_teams,
        approximate=usage.approximate,
        percentile_error=f"{rollups.PERCENTILE_ERROR:.0%}",
        csv_links={
            table.replace("-", "_"): f"{reverse('analytics:csv', args=[table])}?{csv_query}".rstrip("?") for table in TABLES
        },
        chart_data={
            "bucket": window.bucket,
            "over_time": _series(over_time, ["label", "success", "error", "cancelled", "refused", "input_tokens",
                                             "output_tokens", "latency_p50", "latency_p95", "ttft_p50", "ttft_p95"]),
            "people": _series(people, ["label", "requests", "error", "refused", "input_tokens", "output_tokens"]),
            "teams": _series(teams, ["label", "requests", "error", "refused", "input_tokens", "output_tokens"]),
            "models": _series(models, ["label", "requests", "error", "refused", "input_tokens", "output_tokens"]),
        },
    )
    return render(request, "analytics/usage.html", context)


def _series(rows: list[dict], names: list[str]) -> dict:
    """Columns for the charts: one list per figure, percentiles rounded to whole milliseconds."""
    return {name: [round(row[name]) if isinstance(row[name], float) else row[name] for row in rows] for name in names}


@require_GET
@login_required
def usage_csv(request, table: str):
    if table not in TABLES:
        raise Http404("No such table.")
    filters = UsageFilters(request.GET)
    if not filters.is_valid():
        return HttpResponseBadRequest(" ".join(e for errors in filters.errors.values() for e in errors), content_type="text/plain")
    window = filters.window
    usage = _source(request.user, filters)
    if table == "summary":
        head, rows = ["from", "to"], [{**usage.figures(), "key": [window.start.isoformat(), window.end.isoformat()]}]
    elif table == "over-time":
        head, rows = [f"{window.bucket}_start"], [{**row, "key": [row["bucket"].isoformat()]} for row in usage.over_time()]
    else:
        by = BREAKDOWN_OF[table]
        head, rows = [by], [{**row, "key": [row["label"]]} for row in usage.breakdown(by)]

    name = f"usage-{table}-{window.start:%Y%m%d%H%M}-{window.end:%Y%m%d%H%M}.csv"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow(head + [title for _, title in FIGURE_COLUMNS])
    for row in rows:
        writer.writerow([_csv_value(key) for key in row["key"]] + [_csv_value(row[field]) for field, _ in FIGURE_COLUMNS])
    return response


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        # A spreadsheet would run a name like "=HYPERLINK(…)" as a formula: keep it text.
        return "'" + value
    return value
