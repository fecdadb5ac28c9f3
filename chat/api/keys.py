"""Personal API keys: made, checked on each request, revoked, and counted.

    do_create_key()   a new key for a person and one of their teams; returns the key (shown once)
    do_revoke_key()   revoke one; both write their audit entry in the same transaction
    authenticate()    the key of an `Authorization: Bearer` header, or KeyRefused with a sentence
    usage_by_key()    requests and tokens of a person's keys (from the audit trail's usage records)

A key is `gpk_` and 43 URL-safe characters (32 random bytes); its first 12 characters are its
prefix, shown beside its name. Only its SHA-256 is stored (models.py says why not a slow hash).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, OuterRef, Subquery, Sum
from django.utils import timezone

from audit.actions import do_record_event
from audit.models import Action, AuditEntry, UsageRecord
from chat.api.models import ApiKey
from chat.errors import PortalError
from gateway_portal.models import Membership, Team

KEY_START = "gpk_"
PREFIX_LENGTH = 12
# last_used_at is a write: at most one a minute per key, not one per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class KeyRefused(PortalError):
    code = "invalid_api_key"
    detail = "The API key is missing or not valid. Send it as “Authorization: Bearer <key>”; make one under Settings → API keys."
    http_status = 401


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def do_create_key(user, team: Team, name: str, *, expires_in_days: int | None = None) -> tuple[ApiKey, str]:
    """A new key for `user`, acting for `team` (one of theirs); returns the row and the key itself,
    which exists nowhere else afterwards."""
    if not Membership.objects.filter(user=user, team=team).exists():
        raise ValueError(f"{user} is not a member of the team {team}.")
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    for attempt in range(3):
        key = KEY_START + secrets.token_urlsafe(32)
        row = ApiKey(user=user, team=team, name=name.strip() or "API key", prefix=key[:PREFIX_LENGTH], hashed_key=hash_key(key), expires_at=expires_at)
        try:
            do_record_event(
                Action.APIKEY_CREATED, actor=user, team=team, target=f"apikey:{row.prefix}",
                details={"name": row.name, "expires_at": expires_at.isoformat() if expires_at else None},
                also=lambda now: row.save(),
            )
            return row, key
        except IntegrityError:  # the same prefix twice (48 random bits): draw again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def do_revoke_key(key: ApiKey, *, actor) -> bool:
    """Revoke `key` (already checked to be the actor's, or the actor is an administrator);
    False if it was revoked before."""
    revoked = []

    def revoke(now):
        revoked.append(ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now))
        if not revoked[0]:
            raise _AlreadyRevoked

    try:
        do_record_event(Action.APIKEY_REVOKED, actor=actor, team=key.team_id, target=f"apikey:{key.prefix}", details={"name": key.name}, also=revoke)
    except _AlreadyRevoked:
        return False
    return True


class _AlreadyRevoked(Exception):
    """Rolls back the revocation's audit entry when there was nothing to revoke."""


def authenticate(authorization: str) -> ApiKey:
    """The key of an `Authorization` header value, with its person and team loaded; KeyRefused
    (401) for a missing, unknown, revoked or expired key, or one whose person cannot act for its
    team any more. One query; a second, at most once a minute, notes when it was last used."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key.startswith(KEY_START):
        raise KeyRefused()
    found = (
        ApiKey.objects.select_related("user", "team")
        .annotate(member=Exists(Membership.objects.filter(user_id=OuterRef("user_id"), team_id=OuterRef("team_id"))))
        .filter(hashed_key=hash_key(key))
        .first()
    )
    if found is None:
        raise KeyRefused()
    now = timezone.now()
    if found.revoked_at is not None:
        raise KeyRefused(f"The API key {found.prefix}… was revoked on {found.revoked_at:%Y-%m-%d}. Make a new one under Settings → API keys.")
    if found.expires_at is not None and found.expires_at <= now:
        raise KeyRefused(f"The API key {found.prefix}… expired on {found.expires_at:%Y-%m-%d}. Make a new one under Settings → API keys.")
    if not found.user.is_active:
        raise KeyRefused(f"The account of the API key {found.prefix}… is deactivated.")
    if not found.member:
        raise KeyRefused(f"The API key {found.prefix}… acts for the team {found.team}, which its owner is no longer in. Make a new one for a team of theirs.")
    if found.last_used_at is None or now - found.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=found.pk).update(last_used_at=now)
        found.last_used_at = now
    return found


def usage_by_key(keys: list[ApiKey]) -> dict[str, dict]:
    """{prefix: {"requests", "input_tokens", "output_tokens"}} of these keys (of one person), from
    the usage records of the audit entries that name them."""
    if not keys:
        return {}
    user_ids = {key.user_id for key in keys}
    prefixes = [key.prefix for key in keys]
    entries = AuditEntry.objects.filter(user_id__in=user_ids, details__api_key__prefix__in=prefixes)
    rows = (
        UsageRecord.objects.filter(user_id__in=user_ids, request_id__in=entries.values("request_id"))
        .annotate(prefix=Subquery(entries.filter(request_id=OuterRef("request_id")).values("details__api_key__prefix")[:1]))
        .values("prefix")
        .annotate(requests=Count("id"), input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"))
    )
    return {row["prefix"]: row for row in rows}
