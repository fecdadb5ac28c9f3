"""The team page in headless Chromium: Green's team admin adds bob and makes him a team admin,
by the page's own forms (CSRF and all), light on a desktop and dark on a phone; screenshots in
test-artifacts/. The audit entries are read once the browser has closed (Playwright's sync API
runs an event loop, where the ORM refuses) from a thread of their own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.helpers import ARTIFACTS, make_person

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def greens_admin(bob):
    """tess, Green's team admin; bob (in Red) is not in Green yet. Made before Playwright's loop."""
    return make_person("tess", team="Green", role="admin")


def team_changes() -> list[tuple]:
    """The team entries as (action, actor, target, details), read outside Playwright's loop."""

    def read():
        from django.db import connections

        from audit.models import AuditEntry

        try:
            return [
                (e.action, e.user.username, e.target, e.details)
                for e in AuditEntry.objects.filter(action__startswith="team.").select_related("user").order_by("seq")
            ]
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(read).result()


def log_in(browser, portal, person, *, viewport=(1280, 800), scheme="light"):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]}, color_scheme=scheme)
    page.problems = []
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
    page.goto(portal.url + "/")
    page.fill("input[name=username]", person)
    page.fill("input[name=password]", f"{person}-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(portal.url + "/")
    return page


def test_a_team_admin_adds_bob_and_makes_him_a_team_admin(portal, greens_admin, browser):
    from playwright.sync_api import expect

    page = log_in(browser, portal, "tess")
    page.click("a.app-link:text('Teams')")
    page.wait_for_url(portal.url + "/teams/")
    page.click("a:text('Green')")
    page.wait_for_url(portal.url + "/teams/green/")

    page.fill("input[name=username]", "bobby")
    page.click("button:text('Add')")
    expect(page.locator(".form-error")).to_contain_text("Nobody has the user name “bobby”.")

    page.fill("input[name=username]", "bob")
    page.click("button:text('Add')")
    expect(page.locator(".flash")).to_have_text("bob joined Green as member.")
    bob_row = page.locator('tr[data-member="bob"]')
    bob_row.locator("select[name=role]").select_option("admin")
    bob_row.locator("button:text('Change role')").click()
    expect(page.locator(".flash")).to_have_text("bob is now team admin of Green.")
    expect(page.locator('tr[data-member="bob"] select[name=role]')).to_have_value("admin")
    page.screenshot(path=str(ARTIFACTS / "team-admin-adds-bob.png"), full_page=True)
    assert page.problems == []  # no script errors, nothing the CSP refused
    page.close()

    # bob, on a phone in the dark, sees Green and his role there.
    phone = log_in(browser, portal, "bob", viewport=(390, 844), scheme="dark")
    phone.goto(portal.url + "/teams/")
    expect(phone.locator("tr", has_text="Green")).to_contain_text("team admin")
    phone.goto(portal.url + "/teams/green/")
    expect(phone.locator('tr[data-member="tess"]')).to_be_visible()
    phone.screenshot(path=str(ARTIFACTS / "team-page-phone-dark.png"), full_page=True)
    assert phone.problems == []
    phone.close()

    assert team_changes() == [
        ("team.member_added", "tess", "user:bob", {"role": "member"}),
        ("team.role_changed", "tess", "user:bob", {"role": "admin", "previous_role": "member"}),
    ]
