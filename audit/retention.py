"""Retention: message content older than its team's retention is blanked; the audit trail stays.

How long content is kept: the team's `retention_days` when set (0: for ever), else the
PORTAL_RETENTION_DAYS setting (0, the default: for ever, nothing is purged). A legal hold
(audit.models.LegalHold, not released) on the team, or on the person whose conversation it is,
keeps their content whatever its age.

A purge blanks each old message's content (and `upstream_text`, the raw upstream answer, where
the field exists), marks it `purged_at`, and renames the conversations with nothing newer than
the limit (their title is the first question). Audit entries are never touched: they hold no
content, only its SHA-256, so the chain still verifies and a brought text can still be checked
against an answer's hash (the transcript view's form). Per team, the purge and one
`retention.purged` entry with the count are one transaction; the chain's lock is taken only at
its end (the entry's insert), so completions are not held up while the rows are updated.

Run daily by the job worker (audit/tasks.py) and on demand: `manage.py purge_content [--dry-run]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.actions import do_record_event
from audit.models import Action, LegalHold
from chat.models import Conversation, Message
from gateway_portal.models import Team

PURGED_TITLE = "(content purged)"


@dataclass
class TeamPurge:
    team: Team
    retention_days: int
    before: datetime
    messages: int
    held_people: int


def retention_days(team: Team) -> int:
    """The days `team`'s content is kept; 0 for ever."""
    return settings.PORTAL_RETENTION_DAYS if team.retention_days is None else team.retention_days


def _held(team: Team) -> tuple[bool, list[int]]:
    """Whether the whole team is on hold, and the people on hold (their content is kept)."""
    holds = LegalHold.objects.filter(released_at__isnull=True)
    if holds.filter(team=team).exists():
        return True, []
    return False, list(holds.filter(user__isnull=False).values_list("user_id", flat=True))


def _old_messages(team: Team, before: datetime, held_people: list[int]) -> QuerySet[Message]:
    messages = Message.objects.filter(team=team, created_at__lt=before, purged_at__isnull=True)
    return messages.exclude(conversation__user_id__in=held_people) if held_people else messages


def purge(*, now: datetime | None = None, dry_run: bool = False) -> list[TeamPurge]:
    """Purge every team's content older than its retention; what was (or, dry, would be) purged."""
    now = now or timezone.now()
    done = []
    for team in Team.objects.order_by("pk"):
        days = retention_days(team)
        if not days:
            continue
        team_held, held_people = _held(team)
        if team_held:
            continue
        before = now - timedelta(days=days)
        if dry_run:
            count = _old_messages(team, before, held_people).count()
        else:
            count = _purge_team(team, days, before, held_people, now)
        if count:
            done.append(TeamPurge(team, days, before, count, len(held_people)))
    return done


def _purge_team(team: Team, days: int, before: datetime, held_people: list[int], now: datetime) -> int:
    blank = {"content": "", "purged_at": now}
    if any(field.name == "upstream_text" for field in Message._meta.get_fields()):
        blank["upstream_text"] = ""
    with transaction.atomic():
        count = _old_messages(team, before, held_people).update(**blank)
        if not count:
            return 0
        conversations = Conversation.objects.filter(team=team, updated_at__lt=before).exclude(title=PURGED_TITLE)
        if held_people:
            conversations = conversations.exclude(user_id__in=held_people)
        conversations.update(title=PURGED_TITLE)
        do_record_event(
            Action.RETENTION_PURGED, team=team, target=f"team:{team.slug}",
            details={"messages": count, "retention_days": days, "before": before.isoformat()},
        )
    return count
