"""A setting outside its choices or range stops the portal at start with a sentence that names it,
instead of a portal that starts and then fails every answer."""

import os
import subprocess
import sys

import pytest

from gateway_portal.child_processes import free_port
from tests.helpers import PROJECT, _test_database_url

pytestmark = pytest.mark.django_db


def manage(*args, **env):
    env = {**os.environ, "DATABASE_URL": _test_database_url(), **env}
    env.pop("GENESYS_CLIENT_ID", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_typo_in_the_safety_filters_stops_runportal_with_a_sentence():
    result = manage("runportal", "--port", str(free_port()), PORTAL_SAFETY_FILTERS="think_blocks,typo")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "PORTAL_SAFETY_FILTERS=think_blocks,typo is not allowed" in output
    assert "“typo” is no filter; the filters are think_blocks, generation_error, list_markers" in output
    assert "is running at" not in output


@pytest.mark.parametrize(
    "setting, value, sentence",
    [
        ("PORTAL_DEFAULT_MODEL", "gpt-5", "PORTAL_DEFAULT_MODEL=gpt-5 is not allowed: one of PORTAL_MODELS (gpt-4, gpt-4o, gpt-4o-mini, claude-3-5-sonnet)"),
        ("PORTAL_DEFAULT_TEMPERATURE", "1.5", "PORTAL_DEFAULT_TEMPERATURE=1.5 is not allowed: a number from 0.0 to 1.0"),
        ("PORTAL_DEFAULT_MAX_TOKENS", "9000", "PORTAL_DEFAULT_MAX_TOKENS=9000 is not allowed: a whole number from 1 to 4096"),
        ("PORTAL_MAX_CONCURRENT_PER_USER", "-1", "PORTAL_MAX_CONCURRENT_PER_USER=-1 is not allowed: a whole number of at least 0"),
        ("PORTAL_TOKENS_PER_MONTH_PER_TEAM", "-5", "PORTAL_TOKENS_PER_MONTH_PER_TEAM=-5 is not allowed: a whole number of at least 0"),
        ("PORTAL_RELAY_INTERVAL_MS", "-5", "PORTAL_RELAY_INTERVAL_MS=-5.0 is not allowed: a number of at least 0"),
        ("UPSTREAM_MAX_ATTEMPTS", "0", "UPSTREAM_MAX_ATTEMPTS=0 is not allowed: a whole number of at least 1"),
        ("UPSTREAM_READ_TIMEOUT", "0", "UPSTREAM_READ_TIMEOUT=0.0 is not allowed: a number of seconds above 0"),
        ("DB_POOL_MAX_SIZE", "2", "DB_POOL_MAX_SIZE=2 is not allowed: a whole number of at least 4"),
        ("PORTAL_LOGIN_LOCKOUT_BY", "account,ip", "PORTAL_LOGIN_LOCKOUT_BY=account,ip is not allowed: account, address, or both"),
        ("UPSTREAM_TLS_VERIFY", "/nowhere/ca.pem", "UPSTREAM_TLS_VERIFY=/nowhere/ca.pem is not allowed: true, false, or the path of a CA bundle file"),
    ],
)
def test_a_value_out_of_range_fails_the_check_and_says_what_is_allowed(setting, value, sentence):
    result = manage("check", **{setting: value})
    assert result.returncode != 0
    assert sentence in result.stderr


def test_the_defaults_pass_the_check():
    result = manage("check")
    assert result.returncode == 0, result.stderr
