"""The usage roll-ups (audit/rollups.py): the analytics read from them give the same counts and
sums as the usage records and percentiles within the stated error; rolling is idempotent and
takes in records that arrive late; the page says when its percentiles come from them.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from audit import rollups
from audit.models import RolledDay, UsageDay, UsagePersonDay
from gateway_portal.models import Membership, current_team
from tests.helpers import team_named
from tests.test_analytics import at, csv_rows, record, refusal

pytestmark = pytest.mark.django_db

WEEK = {"range": "custom", "start": "2025-03-10", "end": "2025-03-14", "group": "day"}
EXACT = ("requests", "success", "error", "cancelled", "refused", "error_rate", "input_tokens", "output_tokens", "estimated_token_counts")
PERCENTILES = ("latency_p50_ms", "latency_p95_ms", "ttft_p50_ms", "ttft_p95_ms", "tokens_per_second_p50")


@pytest.fixture
def busy_week(alice, bob, charlie):
    """300 records over 10-14 March: three people, two teams, two models, latencies spread from
    80 ms to a minute (log-uniform), a few errors, cancellations, refusals and estimates."""
    rng = random.Random(7)
    people = [alice, bob, charlie]
    for n in range(300):
        when = datetime(2025, 3, 10, tzinfo=UTC) + timedelta(seconds=rng.uniform(0, 5 * 86400 - 1))
        who = people[n % 3]
        if n % 29 == 0:
            refusal(who, when)
            continue
        status = "error" if n % 13 == 0 else "cancelled" if n % 17 == 0 else "success"
        latency = round(80 * 750 ** rng.random())
        record(
            who, when, status=status, model=rng.choice(["gpt-4", "gpt-4o"]), latency=latency,
            ttft=round(latency * rng.uniform(0.05, 0.5)), tokens=(rng.randint(10, 2000), rng.randint(0, 900)),
            tps=round(rng.uniform(5, 120), 2), source=rng.choice(["upstream", "estimate"]),
        )


def figures_of(client, table, **params):
    return {tuple(row[k] for k in row if k not in EXACT + PERCENTILES): row for row in csv_rows(client, table, **params)}


def assert_close(from_rollups: dict, exact: dict):
    for key, row in exact.items():
        rolled = from_rollups[key]
        assert {k: rolled[k] for k in EXACT} == {k: row[k] for k in EXACT}, key
        for name in PERCENTILES:
            if row[name] == "":
                assert rolled[name] == ""
            else:
                # Rounded to whole ms in the CSV: the bound plus the rounding.
                assert abs(float(rolled[name]) - float(row[name])) <= float(row[name]) * rollups.PERCENTILE_ERROR + 0.01, (key, name)


def test_figures_from_rollups_match_the_records_counts_exactly_and_percentiles_within_the_error(client, olivia, busy_week):
    client.force_login(olivia)
    exact = {table: figures_of(client, table, **WEEK) for table in ("summary", "over-time", "people", "teams", "models")}
    page = client.get("/analytics/", WEEK).content.decode()
    assert "data-rollups" not in page

    # The first three days rolled, the last two still read from the records: both parts add up.
    call_command("rollup_usage", "--day", "2025-03-10", "--day", "2025-03-11", "--day", "2025-03-12")
    assert sorted(RolledDay.objects.values_list("day", flat=True)) == [datetime(2025, 3, d).date() for d in (10, 11, 12)]
    for table, rows in exact.items():
        assert_close(figures_of(client, table, **WEEK), rows)
    page = client.get("/analytics/", WEEK).content.decode()
    assert "Percentiles from daily roll-ups, within 5%" in page

    call_command("rollup_usage", "--all")
    for table, rows in exact.items():
        assert_close(figures_of(client, table, **WEEK), rows)
    # Narrowed to a team and a model: the same filters apply to the roll-ups.
    red = team_named("Red")
    for params in ({"team": red.slug}, {"model": "gpt-4o"}):
        (rolled,) = csv_rows(client, "summary", **WEEK, **params)
        assert rolled["requests"] != "0"


def test_narrowed_views_stay_exact(client, olivia, busy_week):
    client.force_login(olivia)
    exact_person = csv_rows(client, "summary", **WEEK, person="bob")
    exact_hourly = csv_rows(client, "summary", range="custom", start="2025-03-11", end="2025-03-12", group="hour")
    call_command("rollup_usage", "--all")
    # One person's view, and any view by hour, read the records: identical to the last digit.
    assert csv_rows(client, "summary", **WEEK, person="bob") == exact_person
    assert csv_rows(client, "summary", range="custom", start="2025-03-11", end="2025-03-12", group="hour") == exact_hourly
    assert "data-rollups" not in client.get("/analytics/", {**WEEK, "person": "bob"}).content.decode()


def test_a_team_admin_reads_rollups_of_their_teams_and_their_own_usage_elsewhere(client, alice, bob, charlie):
    blue = current_team(charlie)
    Membership.objects.filter(user=alice).update(role=Membership.Role.ADMIN)  # alice runs Red
    record(alice, at(10, 9), latency=1000)
    record(bob, at(11, 9), latency=2000)
    record(charlie, at(11, 10), latency=4000)  # Blue: not alice's to see
    own_elsewhere = record(alice, at(12, 9), latency=3000)
    own_elsewhere.team = blue
    own_elsewhere.save()
    client.force_login(alice)
    params = {"range": "custom", "start": "2025-03-10", "end": "2025-03-12", "group": "day"}
    exact = csv_rows(client, "summary", **params)
    call_command("rollup_usage", "--all")
    assert csv_rows(client, "summary", **params)[0]["requests"] == exact[0]["requests"] == "3"
    assert sorted(p["person"] for p in csv_rows(client, "people", **params)) == ["alice", "bob"]


def test_rolling_again_counts_nothing_twice_and_takes_in_late_records(client, olivia, alice):
    record(alice, at(13, 9), tokens=(100, 10))
    record(alice, at(14, 22), tokens=(200, 20))
    after_14th = datetime(2025, 3, 15, 0, 30, tzinfo=UTC)
    assert rollups.roll_recent(now=after_14th) == [datetime(2025, 3, 14).date(), datetime(2025, 3, 13).date()]
    rollups.roll_recent(now=after_14th)
    assert UsageDay.objects.count() == 2 and UsagePersonDay.objects.count() == 2
    assert sum(UsageDay.objects.values_list("input_tokens", flat=True)) == 300

    # A record committed just after its day was rolled (its transaction began before midnight):
    # the next hourly run re-rolls that day, and it counts.
    record(alice, at(14, 23, 59), tokens=(1000, 0))
    rollups.roll_recent(now=after_14th + timedelta(hours=1))
    assert sum(UsageDay.objects.values_list("input_tokens", flat=True)) == 1300
    assert RolledDay.objects.get(day=datetime(2025, 3, 14).date()).records == 2
    client.force_login(olivia)
    (summary,) = csv_rows(client, "summary", range="custom", start="2025-03-13", end="2025-03-14", group="day")
    assert (summary["requests"], summary["input_tokens"]) == ("3", "1300")


def test_the_percentile_of_a_histogram_is_read_like_percentile_cont():
    values = [100, 200, 400, 800]
    histogram = [0] * rollups.BUCKETS
    for value in values:
        histogram[1 + int(math.log(value / 10) / math.log(rollups.RATIO))] += 1
    # p50 of 4 values interpolates halfway between the 2nd and 3rd: 300.
    assert abs(rollups.percentile(histogram, 0.5, 10.0) - 300) <= 300 * rollups.PERCENTILE_ERROR
    assert rollups.percentile([0] * rollups.BUCKETS, 0.5, 10.0) is None
