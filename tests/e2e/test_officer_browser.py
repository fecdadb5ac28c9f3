"""The compliance officer in headless Chromium against a real `runportal`: log in to the admin,
filter the audit list, open a transcript, export the selection as CSV (with its progress line,
under the strict Content-Security-Policy). Screenshots in test-artifacts/.
"""

from __future__ import annotations

import csv
import io

import pytest
from django.core.management import call_command

from audit.models import AuditEntry
from tests.helpers import ARTIFACTS, nonce
from tests.test_officer_admin import converse

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def a_reviewed_conversation(alice, olivia):
    """alice's filtered answer among a few thousand seed entries (made before the browser starts:
    Playwright's sync API runs an event loop, where the ORM refuses)."""
    call_command("seed_usage", rows=3000, verbosity=0)
    conversation_id, answer = converse(alice, f"[[emulator think]] What does the audit keep? {nonce()}")
    successes = AuditEntry.objects.filter(status="success").count()
    return conversation_id, answer, AuditEntry.objects.get(message_id=answer.pk), successes


def test_an_officer_filters_the_audit_list_opens_a_transcript_and_exports_csv(portal, a_reviewed_conversation, browser):
    from playwright.sync_api import expect

    conversation_id, answer, entry, successes = a_reviewed_conversation
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    # A failed resource is named by the response (the admin asks for /favicon.ico, which the portal does not serve).
    page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource") and problems.append(m.text))
    page.on("response", lambda r: r.status >= 400 and not r.url.endswith("/favicon.ico") and problems.append(f"{r.status} {r.url}"))

    page.goto(portal.url + "/admin/")
    page.fill("input[name=username]", "olivia")
    page.fill("input[name=password]", "olivia-password-1")
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(portal.url + "/admin/")
    page.goto(portal.url + "/admin/audit/auditentry/")
    expect(page.locator("p.paginator")).to_contain_text("audit entries")

    # Filter: the person typed in, then the safety filter that fired, from the sidebar.
    page.fill("details[data-filter-title='person (user name)'] input[name=user]", "alice")
    page.press("details[data-filter-title='person (user name)'] input[name=user]", "Enter")
    page.wait_for_url("**user=alice**")
    page.click("details[data-filter-title='safety filters fired'] a:text('think_blocks')")
    page.wait_for_url("**fired=think_blocks**")
    expect(page.locator("p.paginator")).to_contain_text("1 audit entry")
    expect(page.locator("#result_list")).to_contain_text(entry.audit_id)
    page.screenshot(path=str(ARTIFACTS / "officer-audit-list-filtered.png"), full_page=True)

    # The transcript, one click from the entry.
    page.click("#result_list a:text('open transcript')")
    page.wait_for_url(f"**/transcript/{conversation_id}/")
    expect(page.locator(".transcript")).to_contain_text("think_blocks × 1")
    expect(page.locator(".transcript")).to_contain_text(entry.answer_sha256)
    page.screenshot(path=str(ARTIFACTS / "officer-transcript.png"), full_page=True)
    page.click("summary:text('Check a text against this answer')")
    page.fill(f"#check-{answer.pk}-text", answer.content)
    page.click("button:text('Check')")
    expect(page.locator(".transcript-check")).to_contain_text("The text matches this answer's hash")

    # Export the successes (some 2,800 rows): progress in the page, then the file.
    page.goto(portal.url + "/admin/audit/auditentry/?status__exact=success")
    with page.expect_download() as download:
        page.click("a.export-link")
    expect(page.locator("#export-status")).to_contain_text("Done:")
    page.screenshot(path=str(ARTIFACTS / "officer-export-done.png"), full_page=True)
    text = open(download.value.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == successes > 2000 and {row["status"] for row in rows} == {"success"}
    assert f"Done: {successes:,} rows" in page.locator("#export-status").inner_text()
    assert not problems, problems
