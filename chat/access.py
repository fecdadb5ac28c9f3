"""Who may see and do what with conversations, answers and usage records: the one gate.

Every page, socket action and the answer bus ask here; none filters by owner or team itself.
What is not visible to someone does not exist for them: callers answer 404 or "not found", never
"forbidden", so an id reveals nothing.

    a person            reads and writes their own conversations (while in the conversation's
                        team), and reads the conversations teammates share with a team of theirs
    a compliance officer, a superuser   read everything, in the admin (audit/admin.py, chat/admin.py)
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from audit.models import AuditEntry, UsageRecord
from chat.models import Conversation, Message
from gateway_portal.models import Membership

# The compliance officer's role, until roles exist: staff who may view usage records in the admin.
USAGE_OFFICER_PERMISSION = "audit.view_usagerecord"
# ... and who may read the audit trail, its transcripts and exports (audit/admin.py, audit/exports.py).
AUDIT_OFFICER_PERMISSION = "audit.view_auditentry"


def is_audit_officer(user) -> bool:
    """A compliance officer (staff with the audit trail's view permission) or a superuser."""
    return user.is_active and (user.is_superuser or user.is_staff and user.has_perm(AUDIT_OFFICER_PERMISSION))


def transcripts_visible_to(user) -> QuerySet[Conversation]:
    """The conversations whose full transcript (every message, what the upstream sent, the hashes)
    this person may open in the admin: all of them for an officer, none for anyone else."""
    return Conversation.objects.all() if is_audit_officer(user) else Conversation.objects.none()


def audit_entries_visible_to(user) -> QuerySet[AuditEntry]:
    """The audit entries this person may read and export: all for an officer, none otherwise."""
    return AuditEntry.objects.all() if is_audit_officer(user) else AuditEntry.objects.none()


def own_conversations(user) -> QuerySet[Conversation]:
    """The person's own conversations: their sidebar."""
    return Conversation.objects.filter(user=user)


def shared_with(user) -> QuerySet[Conversation]:
    """Teammates' conversations shared with a team the person belongs to (not their own)."""
    return Conversation.objects.filter(shared=True, team__memberships__user=user).exclude(user=user)


def conversations_visible_to(user) -> QuerySet[Conversation]:
    """The conversations this person may open and read."""
    return Conversation.objects.filter(Q(user=user) | Q(shared=True, team__memberships__user=user))


def conversations_writable_by(user) -> QuerySet[Conversation]:
    """The conversations this person may send into: their own, in a team they still belong to."""
    return Conversation.objects.filter(user=user, team__memberships__user=user)


def answers_visible_to(user) -> QuerySet[Message]:
    """The answers this person may read and see the end of."""
    return Message.objects.filter(role=Message.Role.ASSISTANT, conversation__in=conversations_visible_to(user))


def answers_of(user) -> QuerySet[Message]:
    """The answers of the person's own questions: the ones they may Stop."""
    return Message.objects.filter(role=Message.Role.ASSISTANT, conversation__in=own_conversations(user))


def may_steer_answer(user_id: int, owner_id: int) -> bool:
    """Whether a person may Stop, or follow live, an answer that `owner_id` started."""
    return user_id == owner_id


def usage_visible_to(user) -> QuerySet[UsageRecord]:
    """The usage records this person may count on the analytics pages and export: their own, and
    all of the teams they are a team admin of; a compliance officer's (staff with the view
    permission) and a superuser's, everyone's."""
    if user.is_active and (user.is_superuser or user.is_staff and user.has_perm(USAGE_OFFICER_PERMISSION)):
        return UsageRecord.objects.all()
    administered = list(Membership.objects.filter(user=user, role=Membership.Role.ADMIN).values_list("team_id", flat=True))
    if not administered:  # the common case keeps the plain filter, which the analytics index answers alone
        return UsageRecord.objects.filter(user=user)
    return UsageRecord.objects.filter(Q(user=user) | Q(team_id__in=administered))
