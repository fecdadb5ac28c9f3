"""The usage analytics pages: the figures, who sees whose usage, the CSV of each table.

A small fixture of usage records with known values (alice's five in the range, one just past it,
one of bob's), and the figures worked out by hand from them.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from audit.models import UsageRecord
from gateway_portal.models import Membership, current_team

pytestmark = pytest.mark.django_db

RANGE = {"range": "custom", "start": "2025-03-10", "end": "2025-03-12"}


def record(user, when, status="success", model="gpt-4", latency=1000, ttft=200, tokens=(100, 50), tps=10.0, source="upstream"):
    return UsageRecord.objects.create(
        request_id=f"req-{when:%d%H%M%S}-{user.pk}", user=user, team=current_team(user), model_id=model, status=status,
        latency_ms=latency, ttft_ms=ttft, input_tokens=tokens[0], output_tokens=tokens[1],
        token_source=source, tokens_per_second=tps, timestamp=when,
    )


def at(day, hour, minute=0):
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def usage(alice, bob):
    record(alice, at(10, 9, 15), latency=1000, ttft=200, tokens=(100, 50), tps=10)
    record(alice, at(10, 9, 45), latency=2000, ttft=400, tokens=(200, 100), tps=20, source="estimate")
    record(alice, at(10, 14, 5), status="error", latency=500, ttft=None, tokens=(50, 0), tps=0, source="estimate")
    record(alice, at(12, 8), model="gpt-4o", latency=3000, ttft=600, tokens=(300, 150), tps=30)
    record(alice, at(12, 23, 59), status="cancelled", model="gpt-4o", latency=4000, ttft=800, tokens=(10, 40), tps=40)
    record(alice, at(13, 0), latency=7000, tokens=(5000, 5000))  # the first moment after the range
    record(bob, at(11, 12), model="gpt-4o", latency=9000, ttft=900, tokens=(1000, 1000), tps=50)


def csv_rows(client, table, **params):
    response = client.get(f"/analytics/{table}.csv", params)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment; filename=")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def figure(page: str, name: str) -> str:
    return re.search(rf'data-figure="{name}">([^<]*)<', page).group(1)


def test_the_figures_match_the_ones_worked_out_by_hand(client, alice, usage):
    client.force_login(alice)
    (summary,) = csv_rows(client, "summary", **RANGE)
    assert summary == {
        "from": "2025-03-10T00:00:00+00:00", "to": "2025-03-13T00:00:00+00:00",
        "requests": "5", "success": "3", "error": "1", "cancelled": "1", "refused": "0", "error_rate": "0.2",
        "input_tokens": "660", "output_tokens": "340", "estimated_token_counts": "2",
        # Successful completions' latencies 1000, 2000, 3000: p95 interpolates 2000 + 0.9 × 1000.
        "latency_p50_ms": "2000", "latency_p95_ms": "2900",
        "ttft_p50_ms": "400", "ttft_p95_ms": "580",
        "tokens_per_second_p50": "25",  # of 10, 20, 30, 40: the error produced no output
    }

    page = client.get("/analytics/", RANGE).content.decode()
    assert figure(page, "requests") == "5"
    assert figure(page, "error_rate") == "20.0 %"
    assert figure(page, "tokens") == "660 / 340"
    assert figure(page, "estimated") == "2 of 5 counts estimated from characters"
    assert figure(page, "latency") == "2.0 s · 2.9 s"
    assert figure(page, "ttft") == "400 ms · 580 ms"
    assert figure(page, "tokens_per_second") == "25 /s"


def test_usage_over_time_has_every_day_of_the_range_with_its_own_figures(client, alice, usage):
    client.force_login(alice)
    rows = csv_rows(client, "over-time", **RANGE, group="day")
    assert [row["day_start"] for row in rows] == ["2025-03-10T00:00:00", "2025-03-11T00:00:00", "2025-03-12T00:00:00"]
    first, empty, last = rows
    assert (first["requests"], first["success"], first["error"], first["input_tokens"], first["output_tokens"]) == ("3", "2", "1", "350", "150")
    assert (first["latency_p50_ms"], first["latency_p95_ms"], first["ttft_p95_ms"], first["tokens_per_second_p50"]) == ("1500", "1950", "390", "15")
    assert (empty["requests"], empty["latency_p50_ms"]) == ("0", "")  # bob's day: none of alice's
    assert (last["requests"], last["success"], last["cancelled"], last["latency_p95_ms"], last["tokens_per_second_p50"]) == ("2", "1", "1", "3000", "35")


def test_hourly_buckets_split_a_day(client, alice, usage):
    client.force_login(alice)
    rows = csv_rows(client, "over-time", range="custom", start="2025-03-10", end="2025-03-10", group="hour")
    assert len(rows) == 24
    busy = {row["hour_start"][11:16]: row["requests"] for row in rows if row["requests"] != "0"}
    assert busy == {"09:00": "2", "14:00": "1"}


def test_the_breakdowns_by_model_and_person(client, alice, olivia, usage):
    client.force_login(olivia)
    models = csv_rows(client, "models", **RANGE)
    assert [(m["model"], m["requests"], m["error"], m["input_tokens"]) for m in models] == [
        ("gpt-4", "3", "1", "350"), ("gpt-4o", "3", "0", "1310"),  # as many requests: by name
    ]
    people = csv_rows(client, "people", **RANGE)
    assert [(p["person"], p["requests"], p["output_tokens"]) for p in people] == [("alice", "5", "340"), ("bob", "1", "1000")]


def test_filters_by_model_and_person_narrow_every_figure(client, alice, olivia, usage):
    client.force_login(olivia)
    (summary,) = csv_rows(client, "summary", **RANGE, model="gpt-4")
    assert (summary["requests"], summary["error"], summary["latency_p50_ms"]) == ("3", "1", "1500")
    (summary,) = csv_rows(client, "summary", **RANGE, person="bob")
    assert (summary["requests"], summary["input_tokens"]) == ("1", "1000")


def test_a_member_sees_only_their_own_usage(client, alice, bob, usage):
    client.force_login(alice)
    page = client.get("/analytics/", RANGE).content.decode()
    assert "Your own completions" in page and "Top people" not in page and 'name="person"' not in page
    assert [p["person"] for p in csv_rows(client, "people", **RANGE)] == ["alice"]

    client.force_login(bob)
    (summary,) = csv_rows(client, "summary", **RANGE)
    assert (summary["requests"], summary["input_tokens"]) == ("1", "1000")
    # Asking for alice by name finds nothing of hers.
    (summary,) = csv_rows(client, "summary", **RANGE, person="alice")
    assert summary["requests"] == "0"
    assert "No completions in this range." in client.get("/analytics/", {**RANGE, "person": "alice"}).content.decode()
    assert [p["person"] for p in csv_rows(client, "people", **RANGE)] == ["bob"]


def test_a_team_admin_sees_their_teams_usage_and_no_other_teams(client, alice, bob, charlie, usage):
    Membership.objects.filter(user=bob).update(role=Membership.Role.ADMIN)  # bob runs Red, alice's team
    Membership.objects.filter(user=charlie).update(role=Membership.Role.ADMIN)  # charlie runs Blue
    client.force_login(bob)
    assert sorted(p["person"] for p in csv_rows(client, "people", **RANGE)) == ["alice", "bob"]
    client.force_login(charlie)
    (summary,) = csv_rows(client, "summary", **RANGE)
    assert summary["requests"] == "0"


def test_staff_without_the_usage_permission_see_only_their_own(client, django_user_model, usage):
    staff = django_user_model.objects.create_user("stan", is_staff=True)
    client.force_login(staff)
    (summary,) = csv_rows(client, "summary", **RANGE)
    assert summary["requests"] == "0"


def test_a_compliance_officer_and_a_superuser_see_everyone(client, olivia, django_user_model, usage):
    root = django_user_model.objects.create_superuser("root", password="root-password-1")
    for viewer in (olivia, root):
        client.force_login(viewer)
        (summary,) = csv_rows(client, "summary", **RANGE)
        # alice's five and bob's one: successes 1000, 2000, 3000, 9000 ms.
        assert (summary["requests"], summary["success"], summary["latency_p50_ms"], summary["latency_p95_ms"]) == ("6", "4", "2500", "8100")
        page = client.get("/analytics/", RANGE).content.decode()
        assert "Everyone whose usage you may review" in page and "Top people" in page
        assert 'href="?range=custom&amp;start=2025-03-10&amp;end=2025-03-12&amp;person=bob"' in page


def refusal(user, when, model="gpt-4"):
    """As audit.actions.do_record_refusal writes it: no tokens, no latency."""
    return UsageRecord.objects.create(
        request_id=f"ref-{when:%d%H%M%S}-{user.pk}", user=user, team=current_team(user), model_id=model,
        status="rejected", latency_ms=0, ttft_ms=None, timestamp=when,
    )


def test_refusals_count_as_requests_but_not_in_the_error_rate_or_the_latencies(client, alice, usage):
    refusal(alice, at(11, 10))
    refusal(alice, at(12, 9), model="gpt-4o")
    client.force_login(alice)
    (summary,) = csv_rows(client, "summary", **RANGE)
    # 5 completions went upstream, 1 of them an error: 20 %, as without the refusals; the
    # refusals' zero latency and default token source change nothing either.
    assert (summary["requests"], summary["refused"], summary["error"], summary["error_rate"]) == ("7", "2", "1", "0.2")
    assert (summary["estimated_token_counts"], summary["latency_p50_ms"], summary["input_tokens"]) == ("2", "2000", "660")
    days = csv_rows(client, "over-time", **RANGE, group="day")
    assert [(d["requests"], d["refused"], d["error_rate"]) for d in days] == [("3", "0", "0.3333"), ("1", "1", ""), ("3", "1", "0")]
    page = client.get("/analytics/", RANGE).content.decode()
    assert figure(page, "refused") == "2" and figure(page, "error_rate") == "20.0 %"
    assert "1 of 5 completions that went upstream" in page
    models = csv_rows(client, "models", **RANGE)
    assert [(m["model"], m["requests"], m["refused"], m["error_rate"]) for m in models] == [
        ("gpt-4", "4", "1", "0.3333"), ("gpt-4o", "3", "1", "0"),
    ]


def test_the_breakdown_and_filter_by_team_for_whoever_sees_several_teams(client, alice, bob, charlie, olivia, usage):
    record(charlie, at(11, 8), tokens=(7, 3))
    refusal(charlie, at(11, 9))
    client.force_login(olivia)
    teams = csv_rows(client, "teams", **RANGE)
    # Red: alice's five and bob's one; Blue: charlie's completion and refusal.
    assert [(t["team"], t["requests"], t["refused"], t["input_tokens"], t["error_rate"]) for t in teams] == [
        ("Red", "6", "0", "1660", "0.1667"), ("Blue", "2", "1", "7", "0"),
    ]
    page = client.get("/analytics/", RANGE).content.decode()
    assert "panel-teams" in page and 'name="team"' in page
    blue = current_team(charlie)
    assert f'href="?range=custom&amp;start=2025-03-10&amp;end=2025-03-12&amp;team={blue.slug}"' in page
    (summary,) = csv_rows(client, "summary", **RANGE, team=blue.slug)
    assert (summary["requests"], summary["refused"], summary["input_tokens"]) == ("2", "1", "7")
    assert [p["person"] for p in csv_rows(client, "people", **RANGE, team=blue.slug)] == ["charlie"]

    # The admin of one team sees its people, but no team breakdown: there is one team to see.
    Membership.objects.filter(user=bob).update(role=Membership.Role.ADMIN)
    client.force_login(bob)
    page = client.get("/analytics/", RANGE).content.decode()
    assert "Top people" in page and "panel-teams" not in page and 'name="team"' not in page
    # The admin of both sees both.
    Membership.objects.create(user=bob, team=blue, role=Membership.Role.ADMIN)
    page = client.get("/analytics/", RANGE).content.decode()
    assert "panel-teams" in page
    assert [t["team"] for t in csv_rows(client, "teams", **RANGE)] == ["Red", "Blue"]


def test_someone_logged_out_is_sent_to_log_in(client):
    for path in ("/analytics/", "/analytics/summary.csv"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"] == f"/accounts/login/?next={path}"


def test_a_name_a_spreadsheet_would_run_as_a_formula_stays_text_in_the_csv(client, olivia, django_user_model):
    sneaky = django_user_model.objects.create_user("=1+1")
    record(sneaky, at(10, 9))
    client.force_login(olivia)
    assert [p["person"] for p in csv_rows(client, "people", **RANGE)] == ["'=1+1"]


def test_the_csv_links_carry_the_page_filters(client, alice, usage):
    client.force_login(alice)
    page = client.get("/analytics/", {**RANGE, "model": "gpt-4o"}).content.decode()
    link = re.search(r'href="(/analytics/models\.csv\?[^"]*)"', page).group(1).replace("&amp;", "&")
    response = client.get(link)
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(row["model"], row["requests"]) for row in rows] == [("gpt-4o", "2")]
    assert 'filename="usage-models-202503100000-202503130000.csv"' in response["Content-Disposition"]


def test_presets_count_back_from_now(client, alice):
    now = timezone.now()
    record(alice, now - timedelta(hours=3))
    record(alice, now - timedelta(days=20))
    record(alice, now - timedelta(days=60))
    client.force_login(alice)
    counts = {preset: csv_rows(client, "summary", range=preset)[0]["requests"] for preset in ("24h", "7d", "30d", "90d")}
    assert counts == {"24h": "1", "7d": "1", "30d": "2", "90d": "3"}
    assert len(csv_rows(client, "over-time", range="24h")) in (24, 25)  # hours, the current one partly
    page = client.get("/analytics/").content.decode()  # the default: the last 7 days, by day
    assert figure(page, "requests") == "1" and ", by day" in page


def test_an_empty_range_says_so_instead_of_drawing_empty_charts(client, alice):
    client.force_login(alice)
    page = client.get("/analytics/", RANGE).content.decode()
    assert "No completions in this range." in page and "<canvas" not in page


def test_impossible_filters_are_explained(client, alice):
    client.force_login(alice)
    cases = [
        ({"range": "custom", "start": "2025-03-10"}, "A custom range needs both a From and a To date."),
        ({"range": "custom", "start": "2025-03-12", "end": "2025-03-10"}, "The From date comes after the To date."),
        ({"range": "90d", "group": "hour"}, "Group by hour covers at most 31 days"),
    ]
    for params, sentence in cases:
        response = client.get("/analytics/", params)
        assert response.status_code == 400 and sentence in response.content.decode()
        response = client.get("/analytics/summary.csv", params)
        assert response.status_code == 400 and sentence in response.content.decode()
    assert client.get("/analytics/nothing.csv").status_code == 404


def test_the_chat_page_header_links_to_the_analytics(client, alice):
    client.force_login(alice)
    assert 'href="/analytics/">Analytics</a>' in client.get("/").content.decode()


def test_the_page_asks_the_database_the_same_few_questions_however_many_records(client, alice, olivia, usage, django_assert_max_num_queries):
    client.force_login(olivia)
    # Session, user and permissions, which days are rolled up, then the figures, the visibility checks,
    # over time, people, teams, models.
    with django_assert_max_num_queries(12):
        assert client.get("/analytics/", RANGE).status_code == 200
