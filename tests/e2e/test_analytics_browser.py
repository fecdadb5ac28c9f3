"""The analytics page in headless Chromium: the charts are drawn (under the portal's strict
Content-Security-Policy), light and dark, desktop and phone; screenshots in test-artifacts/.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import UsageRecord

from tests.helpers import ARTIFACTS

pytestmark = pytest.mark.django_db(transaction=True)

CHARTS = ("chart-completions", "chart-tokens", "chart-latency", "chart-models")

# Counts the canvas's painted pixels: a drawn chart has thousands, an empty canvas none.
PAINTED = """(id) => {
  const canvas = document.getElementById(id);
  if (!canvas || !canvas.width || !canvas.height) return 0;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
  return painted;
}"""


@pytest.fixture
def a_week_of_usage(alice):
    """Four completions a day for a week for alice, a few errors and cancellations, two models.
    (Before the browser fixture: Playwright's sync API runs an event loop, where the ORM refuses.)"""
    user = alice
    now = timezone.now()
    rows = []
    for n in range(28):
        status = "error" if n % 9 == 4 else "cancelled" if n % 11 == 6 else "success"
        output = 0 if status == "error" else 80 + 37 * (n % 7)
        rows.append(UsageRecord(
            request_id=f"e2e-{n}", user=user, model_id="gpt-4o" if n % 3 else "gpt-4", status=status,
            latency_ms=900 + 160 * (n % 8), ttft_ms=None if status == "error" else 180 + 25 * (n % 5),
            input_tokens=120 + 10 * n, output_tokens=output, token_source="upstream" if n % 4 else "estimate",
            tokens_per_second=0.0 if not output else 30.0 + n, timestamp=now - timedelta(hours=6 * n + 1),
        ))
    UsageRecord.objects.bulk_create(rows)


def open_analytics(browser, portal, *, viewport=(1280, 800), scheme="light", person="alice"):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]}, color_scheme=scheme)
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
    page.goto(portal.url + "/")
    page.fill("input[name=username]", person)
    page.fill("input[name=password]", f"{person}-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(portal.url + "/")
    page.click("a.app-link:text('Analytics')")
    page.wait_for_url(portal.url + "/analytics/")
    return page


def wait_for_charts(page):
    page.wait_for_function(
        f"() => {list(CHARTS)}.every(id => ({PAINTED})(id) > 2000)", timeout=15_000
    )


def test_the_analytics_page_draws_its_charts_beside_their_tables(portal, a_week_of_usage, browser):
    from playwright.sync_api import expect

    page = open_analytics(browser, portal)
    wait_for_charts(page)
    page.wait_for_timeout(400)  # the charts' short entry animation, for the screenshot
    page.screenshot(path=str(ARTIFACTS / "analytics-desktop.png"), full_page=True)

    expect(page.locator('[data-figure="requests"]')).to_have_text("28")
    expect(page.locator("#panel-models")).to_be_visible()
    expect(page.locator(".panel").filter(has=page.locator("#chart-models")).locator("tbody tr")).to_have_count(2)
    assert not page.locator("#chart-people").count()  # a member sees no one else
    assert page.problems == []  # no script error, no Content-Security-Policy refusal

    # A custom range: the dates appear only for it; an empty range says so instead of charts.
    assert page.locator("#custom-dates").is_hidden()
    page.select_option("#id_range", "custom")
    expect(page.locator("#custom-dates")).to_be_visible()
    page.fill("#id_start", "2020-01-01")
    page.fill("#id_end", "2020-01-31")
    page.click("button:text('Apply')")
    expect(page.locator(".analytics-empty")).to_have_text("No completions in this range.")
    assert not page.locator("canvas").count()
    page.close()


def test_the_analytics_page_in_dark_mode_on_a_phone(portal, a_week_of_usage, browser):
    page = open_analytics(browser, portal, viewport=(390, 844), scheme="dark")
    wait_for_charts(page)
    page.wait_for_timeout(400)
    page.screenshot(path=str(ARTIFACTS / "analytics-phone-dark.png"), full_page=True)
    # The page fits the phone's width: nothing scrolls sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(33, 33, 33)"  # chat.css's dark --bg
    assert page.problems == []
    page.close()


@pytest.fixture
def bobs_completion(bob):
    UsageRecord.objects.create(
        request_id="e2e-bob", user=bob, model_id="gpt-4", status="success", latency_ms=1500, ttft_ms=300,
        input_tokens=50, output_tokens=60, tokens_per_second=40.0, timestamp=timezone.now() - timedelta(hours=2),
    )


def test_a_compliance_officer_sees_the_top_people_and_narrows_to_one(portal, a_week_of_usage, bobs_completion, olivia, browser):
    from playwright.sync_api import expect

    page = open_analytics(browser, portal, person="olivia")
    page.wait_for_function(f"() => ({PAINTED})('chart-people') > 1000", timeout=15_000)
    expect(page.locator('[data-figure="requests"]')).to_have_text("29")
    people = page.locator(".panel").filter(has=page.locator("#chart-people")).locator("tbody th a")
    expect(people).to_have_text(["alice", "bob"])
    page.wait_for_timeout(400)
    page.screenshot(path=str(ARTIFACTS / "analytics-officer.png"), full_page=True)

    people.nth(1).click()  # a name narrows the page to that person
    expect(page.locator('[data-figure="requests"]')).to_have_text("1")
    expect(page.locator("#id_person")).to_have_value("bob")
    assert page.problems == []
    page.close()
