"""`manage.py apikey`: keys for service accounts from the shell, audited like the settings page's."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditEntry
from chat.api import keys
from chat.api.models import ApiKey

pytestmark = pytest.mark.django_db


def apikey(*args) -> list[str]:
    out = StringIO()
    call_command("apikey", *args, stdout=out)
    return out.getvalue().splitlines()


def test_create_prints_the_key_last_and_it_opens_the_api_for_that_team(alice):
    lines = apikey("create", "--user", "alice", "--team", "red", "--name", "nightly", "--expires", "7")

    key = lines[-1]
    found = keys.authenticate(f"Bearer {key}")
    assert (found.user, found.team.slug, found.name) == (alice, "red", "nightly")
    assert found.expires_at is not None and "expires" in lines[0]
    assert AuditEntry.objects.get(action="apikey.created").target == f"apikey:{found.prefix}"


def test_list_shows_prefixes_and_states_never_keys(alice):
    key = apikey("create", "--user", "alice")[-1]
    listing = "\n".join(apikey("list"))
    assert key[: keys.PREFIX_LENGTH] in listing and key not in listing and "active" in listing and "alice" in listing


def test_revoke_by_prefix_closes_the_key_and_is_audited(alice):
    key = apikey("create", "--user", "alice")[-1]
    prefix = key[: keys.PREFIX_LENGTH]

    assert "Revoked" in apikey("revoke", prefix)[0]
    with pytest.raises(keys.KeyRefused, match="revoked"):
        keys.authenticate(f"Bearer {key}")
    assert AuditEntry.objects.get(action="apikey.revoked").target == f"apikey:{prefix}"
    with pytest.raises(CommandError, match="already revoked"):
        apikey("revoke", prefix)


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (("create", "--user", "nobody"), "no user named “nobody”"),
        (("create", "--user", "alice", "--team", "blue"), "not in a team with the slug “blue”"),
        (("revoke", "gpk_missing00"), "no API key with the prefix"),
    ],
)
def test_mistakes_are_told_in_a_sentence(alice, charlie, args, sentence):
    with pytest.raises(CommandError, match=sentence):
        apikey(*args)
    assert not ApiKey.objects.exists()


def test_last_use_is_noted_at_most_once_a_minute(alice):
    key = apikey("create", "--user", "alice")[-1]
    first = keys.authenticate(f"Bearer {key}").last_used_at
    assert first is not None
    keys.authenticate(f"Bearer {key}")
    assert ApiKey.objects.get().last_used_at == first  # no write for a request within the minute
    ApiKey.objects.update(last_used_at=first - keys.LAST_USED_RESOLUTION)
    assert keys.authenticate(f"Bearer {key}").last_used_at > first


def test_a_key_stops_working_when_its_person_leaves_its_team(alice):
    from gateway_portal.models import Membership

    key = apikey("create", "--user", "alice", "--team", "red")[-1]
    Membership.objects.filter(user=alice, team__slug="red").delete()
    with pytest.raises(keys.KeyRefused, match="no longer in"):
        keys.authenticate(f"Bearer {key}")
