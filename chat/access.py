"""Who may see and do what with conversations, answers and usage records: the one gate.

Every page, socket action and the answer bus ask here; none filters by owner or team itself.
What is not visible to someone does not exist for them: callers answer 404 or "not found", never
"forbidden", so an id reveals nothing.

    a person            reads and writes their own conversations (while in the conversation's
                        team), and reads the conversations teammates share with a team of theirs
    a compliance officer, a superuser   read everything, in the admin (audit/admin.py, chat/admin.py)

Teams (the team page, gateway_portal/team_pages.py): every member sees their team's members and
roles; its team admins change them; an officer sees every team and changes nothing; a superuser
sees and manages every team.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from audit.models import AuditEntry, UsageRecord
from chat.api.models import ApiKey
from chat.models import Conversation, Message
from gateway_portal.models import COMPLIANCE_OFFICERS, Membership, Team


def is_officer(user) -> bool:
    """A compliance officer (reads everything in every team, changes nothing): a superuser, or
    active staff in the "Compliance officers" group. Asked once per request object."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    if not user.is_staff:
        return False
    if not hasattr(user, "_is_compliance_officer"):
        user._is_compliance_officer = user.groups.filter(name=COMPLIANCE_OFFICERS).exists()
    return user._is_compliance_officer


def teams_visible_to(user) -> QuerySet[Team]:
    """The teams whose page (members and roles) this person may see: their own; every team for an
    officer or a superuser."""
    if is_officer(user):
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user)


def teams_managed_by(user) -> QuerySet[Team]:
    """The teams whose members and roles this person may change: those they are a team admin of;
    every team for a superuser. An officer manages none (unless they are its team admin)."""
    if user.is_active and user.is_superuser:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user, memberships__role=Membership.Role.ADMIN)


def transcripts_visible_to(user) -> QuerySet[Conversation]:
    """The conversations whose full transcript (every message, what the upstream sent, the hashes)
    this person may open in the admin: all of them for an officer, none for anyone else."""
    return Conversation.objects.all() if is_officer(user) else Conversation.objects.none()


def audit_entries_visible_to(user) -> QuerySet[AuditEntry]:
    """The audit entries this person may read and export: all for an officer, none otherwise."""
    return AuditEntry.objects.all() if is_officer(user) else AuditEntry.objects.none()


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


def api_keys_of(user) -> QuerySet[ApiKey]:
    """The API keys a person may see, count and revoke: their own (an administrator uses the
    admin or `manage.py apikey`)."""
    return ApiKey.objects.filter(user=user)


def usage_visible_to(user) -> QuerySet[UsageRecord]:
    """The usage records this person may count on the analytics pages and export: their own, and
    all of the teams they are a team admin of; a compliance officer's and a superuser's, everyone's."""
    scope = usage_scope(user)
    return UsageRecord.objects.all() if scope is None else UsageRecord.objects.filter(scope)


def usage_scope(user) -> Q | None:
    """usage_visible_to's rule as a filter on `user` and `team` (None: everyone), so the usage
    roll-ups (audit/rollups.py), which have both columns, are narrowed by the same rule."""
    if is_officer(user):
        return None
    administered = list(Membership.objects.filter(user=user, role=Membership.Role.ADMIN).values_list("team_id", flat=True))
    if not administered:  # the common case keeps the plain filter, which the analytics index answers alone
        return Q(user=user)
    return Q(user=user) | Q(team_id__in=administered)


def team_membership(user, slug: str) -> Membership:
    """The person's membership of the team with this slug (its `role` says whether they are its
    admin), or Http404: a team they are not in does not exist for them."""
    from django.http import Http404

    membership = Membership.objects.filter(user=user, team__slug=slug).select_related("team").first()
    if membership is None:
        raise Http404("No such team.")
    return membership
