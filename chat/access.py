"""Who may see and do what with conversations, answers and usage records: the one gate.

Every page, socket action and the answer bus ask here; none filters by owner itself. What is not
visible to someone does not exist for them: callers answer 404 or "not found", never "forbidden",
so an id reveals nothing. Teams, sharing and the compliance officer's read-everything role change
these functions only.
"""

from __future__ import annotations

from django.db.models import QuerySet

from audit.models import UsageRecord
from chat.models import Conversation, Message

# The compliance officer's role, until roles exist: staff who may view usage records in the admin.
USAGE_OFFICER_PERMISSION = "audit.view_usagerecord"


def conversations_visible_to(user) -> QuerySet[Conversation]:
    """The conversations this person may open and read."""
    return Conversation.objects.filter(user=user)


def conversations_writable_by(user) -> QuerySet[Conversation]:
    """The conversations this person may send into (their own)."""
    return Conversation.objects.filter(user=user)


def answers_visible_to(user) -> QuerySet[Message]:
    """The answers this person may read, follow after a reload, and see the end of."""
    return Message.objects.filter(role=Message.Role.ASSISTANT, conversation__in=conversations_visible_to(user))


def may_steer_answer(user_id: int, owner_id: int) -> bool:
    """Whether a person may Stop, or follow live, an answer that `owner_id` started."""
    return user_id == owner_id


def usage_visible_to(user) -> QuerySet[UsageRecord]:
    """The usage records this person may count on the analytics pages and export: their own; a
    compliance officer's (staff with the view permission) and a superuser's, everyone's. Teams
    add their members' records for a team admin here, and nowhere else."""
    if user.is_active and (user.is_superuser or user.is_staff and user.has_perm(USAGE_OFFICER_PERMISSION)):
        return UsageRecord.objects.all()
    return UsageRecord.objects.filter(user=user)
