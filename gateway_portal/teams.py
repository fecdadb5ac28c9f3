"""A team's members and their roles, changed by its team admins (or a superuser): each change and
its audit entry in one transaction (audit/actions.py `do_record_event`, `also`).

The rules, checked inside that transaction (the audit chain's lock serialises every audited
change, and the team's row is locked too, so two admins demoting each other cannot both win):

- A team keeps at least one team admin: the last one cannot be removed or made a member.
- Everyone stays in at least one team (nobody meets a portal they cannot use): a person removed
  from their only team joins the default team, Everyone, rather than the removal being refused,
  so that a team admin can always take someone out of their team. Removing someone from
  Everyone when it is their only team is refused: deactivating the account is what ends access.
- Removing a member ends their access to the team, and nothing else: their conversations stay
  theirs (read-only in a team they left; chat/access.py), their audit entries stay as written.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model

from audit.actions import do_record_event
from audit.models import Action
from gateway_portal.models import DEFAULT_TEAM_SLUG, Membership, Team

Role = Membership.Role


class TeamRuleError(Exception):
    """A change the rules above refuse; str() is the sentence the team admin reads."""


def _locked_membership(team: Team, user) -> Membership | None:
    Team.objects.select_for_update().filter(pk=team.pk).first()
    return Membership.objects.select_for_update().filter(team=team, user=user).first()


def _admins_of(team: Team) -> int:
    return Membership.objects.filter(team=team, role=Role.ADMIN).count()


def find_person(username: str):
    """The active or inactive person of that user name, or TeamRuleError with a sentence."""
    User = get_user_model()
    person = User._default_manager.filter(**{User.USERNAME_FIELD: username.strip()}).first()
    if person is None:
        raise TeamRuleError(f"Nobody has the user name “{username.strip()}”. Check the spelling, or ask an administrator to create the account.")
    return person


def do_add_member(team: Team, person, role: str, *, actor) -> Membership:
    """Add `person` to `team` with `role`, audited as team.member_added."""
    added = {}

    def add(now):
        if _locked_membership(team, person) is not None:
            raise TeamRuleError(f"{person.get_username()} is already a member of {team.name}.")
        added["membership"] = Membership.objects.create(team=team, user=person, role=role)

    do_record_event(
        Action.MEMBER_ADDED, actor=actor, team=team, target=f"user:{person.get_username()}",
        details={"role": role}, also=add,
    )
    return added["membership"]


def do_remove_member(team: Team, person, *, actor) -> Team | None:
    """Take `person` out of `team`, audited as team.member_removed (details: the role they had,
    and moved_to_team if this was their only team); returns the default team if they were moved."""
    details: dict = {}

    def remove(now):
        membership = _locked_membership(team, person)
        if membership is None:
            raise TeamRuleError(f"{person.get_username()} is not a member of {team.name}.")
        if membership.role == Role.ADMIN and _admins_of(team) == 1:
            raise TeamRuleError(
                f"{person.get_username()} is the last team admin of {team.name}. Make someone else a team admin first."
            )
        details["role"] = membership.role
        if not Membership.objects.filter(user=person).exclude(team=team).exists():
            if team.slug == DEFAULT_TEAM_SLUG:
                raise TeamRuleError(
                    f"{team.name} is the only team of {person.get_username()}. Add them to another team first, "
                    "or ask an administrator to deactivate their account."
                )
            Membership.objects.create(team=Team.default(), user=person)
            details["moved_to_team"] = DEFAULT_TEAM_SLUG
        membership.delete()

    # The entry is built after `also` ran, so its details can say what happened inside.
    do_record_event(
        Action.MEMBER_REMOVED, actor=actor, team=team, target=f"user:{person.get_username()}",
        details=details, also=remove,
    )
    return Team.default() if "moved_to_team" in details else None


def do_change_role(team: Team, person, role: str, *, actor) -> bool:
    """Give `person` `role` in `team`, audited as team.role_changed (details: role, previous_role);
    False (and no entry) if they already have it."""
    if role not in Role.values:
        raise TeamRuleError("Choose a role: member or team admin.")
    details = {"role": role}

    def change(now):
        membership = _locked_membership(team, person)
        if membership is None:
            raise TeamRuleError(f"{person.get_username()} is not a member of {team.name}.")
        if membership.role == role:
            raise _Unchanged
        if membership.role == Role.ADMIN and _admins_of(team) == 1:
            raise TeamRuleError(
                f"{person.get_username()} is the last team admin of {team.name}. Make someone else a team admin first."
            )
        details["previous_role"] = membership.role
        membership.role = role
        membership.save(update_fields=["role"])

    try:
        do_record_event(
            Action.ROLE_CHANGED, actor=actor, team=team, target=f"user:{person.get_username()}",
            details=details, also=change,
        )
    except _Unchanged:
        return False
    return True


class _Unchanged(Exception):
    """Nothing to change: the transaction is rolled back and no entry written."""


__all__ = ["TeamRuleError", "do_add_member", "do_change_role", "do_remove_member", "find_person"]
