"""The portal as a person uses it: `runportal` in its own process, headless Chromium in front.

Needs Debian's Chromium (/usr/bin/chromium). Without it the test is skipped with the reason,
except in CI (PORTAL_REQUIRE_BROWSER=1), where a missing browser is a failure.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import ARTIFACTS

pytestmark = pytest.mark.django_db(transaction=True)


def log_in(browser, portal, viewport=(1280, 800), who="alice"):
    portal = portal.url
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.page_errors = []
    page.on("pageerror", lambda exc: page.page_errors.append(str(exc)))
    page.goto(portal + "/")
    page.fill("input[name=username]", who)
    page.fill("input[name=password]", f"{who}-password-1")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(portal + "/")
    return page


def answer_words(page) -> int:
    return len(page.locator("[data-role=assistant] .md").last.inner_text().split())


def wait_for_words(page, at_least, answers=1, timeout=20_000):
    """Wait until the `answers`-th answer on the page shows at least `at_least` words."""
    page.wait_for_function(
        "([n, k]) => { const a = document.querySelectorAll('[data-role=assistant] .md'); "
        "return a.length >= k && a[k - 1].innerText.split(/\\s+/).filter(Boolean).length >= n; }",
        arg=[at_least, answers],
        timeout=timeout,
    )


def test_log_in_ask_watch_it_stream_reload_and_see_it_kept(portal, alice, browser):
    from playwright.sync_api import expect

    page = log_in(browser, portal)
    composer = page.locator("textarea")
    composer.fill("How do OAuth client credentials work?")
    composer.press("Enter")

    # Mid-stream: some words are there and more are still coming (the button is Stop).
    wait_for_words(page, 8)
    assert answer_words(page) < 120
    page.screenshot(path=str(ARTIFACTS / "chat-streaming.png"))
    expect(page.locator("[data-role=assistant] .meta").last).to_contain_text("120 tokens", timeout=30_000)
    streamed = page.locator("[data-role=assistant] .md").last.inner_text()
    assert answer_words(page) > 20
    page.screenshot(path=str(ARTIFACTS / "chat-done.png"))
    assert re.search(r"/c/\d+/$", page.url), page.url

    meta = page.locator("[data-role=assistant] .meta").last.inner_text()
    page.reload()
    expect(page.locator("[data-role=user]").first).to_contain_text("How do OAuth client credentials work?")
    expect(page.locator("[data-role=assistant] .md").last).to_have_text(streamed)
    # The stored answer reads back with the same facts as the live one (model, tokens, times).
    expect(page.locator("[data-role=assistant] .meta").last).to_contain_text("120 tokens")
    assert page.locator("[data-role=assistant] .meta").last.inner_text() == meta
    expect(page.locator("nav, aside").first).to_contain_text("How do OAuth client credentials work?")
    page.screenshot(path=str(ARTIFACTS / "chat-reloaded.png"))
    assert page.page_errors == []


def test_an_answer_carries_on_after_a_reload_mid_stream_and_stop_works(portal, alice, browser):
    from playwright.sync_api import expect

    page = log_in(browser, portal, viewport=(390, 844))
    composer = page.locator("textarea")
    composer.fill("Tell me a long story [[emulator tokens=150 rate=50]]")
    composer.press("Enter")
    wait_for_words(page, 10)
    page.reload()  # mid-answer
    wait_for_words(page, 30)
    assert answer_words(page) < 150
    page.screenshot(path=str(ARTIFACTS / "chat-phone-resumed.png"))
    expect(page.locator("[data-role=assistant] .meta").last).to_contain_text("150 tokens", timeout=30_000)
    assert answer_words(page) >= 140  # the whole answer, nothing lost across the reload

    composer = page.locator("textarea")
    composer.fill("Another long one [[emulator tokens=2000 rate=50]]")
    composer.press("Enter")
    wait_for_words(page, 5, answers=2)
    composer.press("Escape")
    expect(page.locator("[data-role=assistant] .meta").last).to_contain_text("Stopped", timeout=10_000)
    assert 5 <= answer_words(page) < 2000
    stopped = page.locator("[data-role=assistant] .md").last.inner_text()
    page.screenshot(path=str(ARTIFACTS / "chat-phone-stopped.png"))
    page.reload()
    expect(page.locator("[data-role=assistant] .meta").last).to_contain_text("Stopped")
    expect(page.locator("[data-role=assistant] .md").last).to_have_text(stopped)
    assert page.page_errors == []


# The page's test hook (static/chat/socket.js): keep each socket it opens, so the test can drop one.
KEEP_SOCKETS = """
window.openedSockets = [];
window.GatewayPortalSocket = function (url) {
  const ws = new WebSocket(url);
  window.openedSockets.push(ws);
  return ws;
};
"""


def test_an_answer_carries_on_after_the_connection_drops(portal, alice, browser):
    from playwright.sync_api import expect

    page = log_in(browser, portal)
    page.add_init_script(KEEP_SOCKETS)
    page.reload()
    composer = page.locator("textarea")
    composer.fill("Tell me a long story [[emulator tokens=150 rate=50]]")
    composer.press("Enter")
    wait_for_words(page, 10)
    page.evaluate("window.openedSockets[window.openedSockets.length - 1].close()")

    expect(page.locator("#conn-banner")).to_have_text("Reconnecting…")
    expect(page.locator("[data-role=assistant] .meta").last).to_contain_text("150 tokens", timeout=30_000)
    expect(page.locator("#conn-banner")).to_be_hidden()
    assert page.evaluate("window.openedSockets.length") == 2
    shown = page.locator("[data-role=assistant] .md").last.inner_text()
    page.screenshot(path=str(ARTIFACTS / "chat-reconnected.png"))

    page.reload()  # what was stored: nothing lost or doubled across the drop
    expect(page.locator("[data-role=assistant] .meta").last).to_contain_text("150 tokens")
    assert page.locator("[data-role=assistant] .md").last.inner_text() == shown
    assert page.page_errors == []


def test_a_failed_answer_offers_retry_live_and_after_a_reload(portal, alice, browser):
    from playwright.sync_api import expect

    page = log_in(browser, portal)
    composer = page.locator("textarea")
    composer.fill("This one fails [[emulator fault=503]]")
    composer.press("Enter")
    card = page.locator(".error-card").last
    expect(card).to_contain_text("unavailable", timeout=20_000)
    expect(card.get_by_role("button", name="Retry")).to_be_visible()
    page.reload()
    card = page.locator(".error-card").last
    expect(card).to_contain_text("unavailable")
    expect(card.get_by_role("button", name="Retry")).to_be_visible()  # stored as retryable
    page.screenshot(path=str(ARTIFACTS / "chat-error-reloaded.png"))
    assert page.page_errors == []


@pytest.fixture
def alice_also_in_green(alice):
    from gateway_portal.models import Membership
    from tests.helpers import team_named

    Membership.objects.create(user=alice, team=team_named("Green"))  # before Playwright's loop runs


def test_a_second_team_is_picked_under_the_sidebar_and_a_shared_chat_reads_for_a_teammate(portal, alice_also_in_green, bob, browser):
    from playwright.sync_api import expect

    page = log_in(browser, portal)
    page.select_option("#team-select", label="Red")
    page.get_by_role("button", name="Switch").click()
    expect(page.locator(".flash")).to_contain_text("New questions are asked for Red.")
    composer = page.locator("textarea")
    composer.fill("Our launch checklist")
    composer.press("Enter")
    expect(page.locator("[data-role=assistant] .meta").last).to_contain_text("120 tokens", timeout=30_000)
    page.reload()
    page.get_by_role("button", name="Share with Red").click()
    expect(page.locator(".flash")).to_contain_text("Shared with Red")
    page.screenshot(path=str(ARTIFACTS / "teams-owner-shared.png"))
    first_line = page.locator("[data-role=assistant] .md").last.inner_text().splitlines()[0]

    teammate = log_in(browser, portal, who="bob")
    teammate.get_by_role("link", name=re.compile("Our launch checklist")).click()
    expect(teammate.locator(".conversation-share")).to_contain_text("Shared by alice with Red · read only")
    expect(teammate.locator("[data-role=assistant] .md").last).to_contain_text(first_line)
    expect(teammate.locator("textarea")).to_be_hidden()
    teammate.screenshot(path=str(ARTIFACTS / "teams-teammate-reads.png"))
    assert page.page_errors == [] and teammate.page_errors == []
