"""The compliance admin over seeded data: the seed command, exact search and the filters."""

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEntry, UsageRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def officer(client, olivia):
    client.force_login(olivia)
    return client


def test_a_member_who_is_not_an_officer_cannot_open_the_compliance_admin(client, alice):
    client.force_login(alice)
    response = client.get("/admin/audit/auditentry/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/admin/login/")


def test_seed_usage_adds_matching_audit_entries_and_usage_records():
    call_command("seed_usage", rows=300)
    assert AuditEntry.objects.count() == 300 and UsageRecord.objects.count() == 300
    assert len(set(AuditEntry.objects.values_list("audit_id", flat=True))) == 300
    assert set(AuditEntry.objects.values_list("request_id", flat=True)) == set(UsageRecord.objects.values_list("request_id", flat=True))
    call_command("seed_usage", until=250)  # already enough: adds nothing
    assert AuditEntry.objects.count() == 300
    with pytest.raises(CommandError):
        call_command("seed_usage", rows=0)


def test_an_officer_finds_one_entry_by_its_audit_id_or_request_id(officer):
    call_command("seed_usage", rows=200)
    entry = AuditEntry.objects.order_by("?").first()
    for term in (entry.audit_id, entry.request_id):
        page = officer.get("/admin/audit/auditentry/", {"q": term}).content.decode()
        assert entry.audit_id in page and "1 audit entry" in page


def test_the_model_and_status_filters_narrow_the_list_and_nothing_can_be_edited(officer):
    call_command("seed_usage", rows=200)
    errors = AuditEntry.objects.filter(status="error", model_id="gpt-4").count()
    page = officer.get("/admin/audit/auditentry/", {"status__exact": "error", "model": "gpt-4"}).content.decode()
    assert f"{errors} audit entr" in page
    entry = AuditEntry.objects.first()
    assert officer.post(f"/admin/audit/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
