"""Settings checked at start (Django's system checks): a value outside its choices or range stops
`runportal` and every `manage.py` command with a sentence naming the setting, the value and what
is allowed, instead of a portal that starts and then fails every answer.

Choices are read from the code that uses them (the filters from chat/filters.py, the temperature
range from chat/validation.py), so a new filter or range needs no change here.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.checks import Error, Tags, register


def _error(setting: str, value, allowed: str, id: str) -> Error:
    return Error(f"{setting}={value} is not allowed: {allowed}.", hint=f"Fix {setting} in the environment or .env.", id=id)


def _number_from(setting, low, *, whole=True, high=None, id):
    value = getattr(settings, setting)
    if low <= value and (high is None or value <= high):
        return []
    kind = "a whole number" if whole else "a number"
    allowed = f"{kind} from {low} to {high}" if high is not None else f"{kind} of at least {low}"
    return [_error(setting, value, allowed, id)]


@register(Tags.compatibility)
def portal_settings(app_configs=None, **kwargs):
    from chat.filters import FILTERS
    from chat.validation import TEMPERATURE_MAX, TEMPERATURE_MIN
    from gateway_portal import db_pool
    from gateway_portal.accounts import LOCKOUT_BY

    errors = []
    unknown = [name for name in settings.PORTAL_SAFETY_FILTERS if name not in FILTERS]
    if unknown:
        errors.append(_error(
            "PORTAL_SAFETY_FILTERS", ",".join(settings.PORTAL_SAFETY_FILTERS),
            f"“{'”, “'.join(unknown)}” is no filter; the filters are {', '.join(FILTERS)} (comma-separated, in order)",
            "portal.E001",
        ))
    if not settings.PORTAL_MODELS:
        errors.append(_error("PORTAL_MODELS", "", "at least one model name (comma-separated)", "portal.E002"))
    elif settings.PORTAL_DEFAULT_MODEL not in settings.PORTAL_MODELS:
        errors.append(_error(
            "PORTAL_DEFAULT_MODEL", settings.PORTAL_DEFAULT_MODEL,
            f"one of PORTAL_MODELS ({', '.join(settings.PORTAL_MODELS)})", "portal.E003",
        ))
    errors += _number_from("PORTAL_DEFAULT_TEMPERATURE", TEMPERATURE_MIN, whole=False, high=TEMPERATURE_MAX, id="portal.E004")
    errors += _number_from("PORTAL_MAX_TOKENS_LIMIT", 1, id="portal.E005")
    errors += _number_from("PORTAL_DEFAULT_MAX_TOKENS", 1, high=max(1, settings.PORTAL_MAX_TOKENS_LIMIT), id="portal.E006")
    errors += _number_from("PORTAL_MAX_HISTORY_TOKENS", 1, id="portal.E007")
    errors += _number_from("PORTAL_MAX_MESSAGE_CHARS", 1, id="portal.E008")
    errors += _number_from("PORTAL_MAX_CONCURRENT_PER_USER", 0, id="portal.E009")  # 0: no limit
    for number, setting in enumerate(("PORTAL_MAX_CONCURRENT_PER_TEAM", "PORTAL_MAX_CONCURRENT_TOTAL",
                                      "PORTAL_REQUESTS_PER_MINUTE_PER_USER", "PORTAL_TOKENS_PER_MINUTE_PER_TEAM",
                                      "PORTAL_TOKENS_PER_MONTH_PER_TEAM")):
        errors += _number_from(setting, 0, id=f"portal.E05{number}")
    if not settings.PORTAL_LEASE_SECONDS >= 1:
        errors.append(_error("PORTAL_LEASE_SECONDS", settings.PORTAL_LEASE_SECONDS, "a number of seconds of at least 1", "portal.E055"))
    errors += _number_from("PORTAL_RELAY_INTERVAL_MS", 0, whole=False, id="portal.E010")
    errors += _number_from("PORTAL_WORKERS", 1, id="portal.E011")
    errors += _number_from("UPSTREAM_MAX_ATTEMPTS", 1, id="portal.E012")
    errors += _number_from("UPSTREAM_MAX_CONNECTIONS", 1, id="portal.E013")
    for setting, id in (("UPSTREAM_CONNECT_TIMEOUT", "portal.E014"), ("UPSTREAM_READ_TIMEOUT", "portal.E015"), ("UPSTREAM_DEADLINE", "portal.E016")):
        if not getattr(settings, setting) > 0:
            errors.append(_error(setting, getattr(settings, setting), "a number of seconds above 0", id))
    errors += _number_from("UPSTREAM_BACKOFF_BASE", 0, whole=False, id="portal.E017")
    errors += _number_from("UPSTREAM_BACKOFF_MAX", settings.UPSTREAM_BACKOFF_BASE, whole=False, id="portal.E018")
    errors += _number_from("DB_POOL_MAX_SIZE", db_pool.MIN_PER_PROCESS, id="portal.E020")
    if not settings.DB_POOL_TIMEOUT > 0:
        errors.append(_error("DB_POOL_TIMEOUT", settings.DB_POOL_TIMEOUT, "a number of seconds above 0", "portal.E021"))
    errors += _number_from("PORTAL_LOGIN_FAILURE_LIMIT", 1, id="portal.E022")
    if not settings.PORTAL_LOGIN_LOCKOUT_MINUTES > 0:
        errors.append(_error(
            "PORTAL_LOGIN_LOCKOUT_MINUTES", settings.PORTAL_LOGIN_LOCKOUT_MINUTES, "a number of minutes above 0", "portal.E023",
        ))
    lockout_by = settings.PORTAL_LOGIN_LOCKOUT_BY
    if not lockout_by or any(name not in LOCKOUT_BY for name in lockout_by):
        errors.append(_error(
            "PORTAL_LOGIN_LOCKOUT_BY", ",".join(lockout_by),
            f"{', '.join(LOCKOUT_BY)}, or both (comma-separated)", "portal.E024",
        ))
    verify = settings.UPSTREAM_TLS_VERIFY
    if isinstance(verify, str) and not os.path.isfile(verify):
        errors.append(_error(
            "UPSTREAM_TLS_VERIFY", verify, "true, false, or the path of a CA bundle file (no such file)", "portal.E019",
        ))
    return errors
