"""Teams, their members and the roles that decide who may see and do what.

A person belongs to one or more teams and chats on behalf of one; every conversation, message,
audit entry and usage record carries the team it was made for. Within a team a person is a member
or the team's admin (who manages its members and, later, its limits). Two roles are global, not
per team: the compliance officer (staff in the "Compliance officers" group, which holds the view
permissions of the compliance records: reads everything, changes nothing) and the superuser.
chat/access.py turns these into querysets.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from chat.filters import validate_filter_names

DEFAULT_TEAM_SLUG = "everyone"

# The compliance officers' group (made by migration 0003) and what its members may view in the
# admin. Nothing to add, change or delete: an officer reads the record, never alters it.
COMPLIANCE_OFFICERS = "Compliance officers"
OFFICER_PERMISSIONS = (
    "audit.view_auditentry", "audit.view_usagerecord", "chat.view_conversation", "chat.view_message",
)


def compliance_officers():
    """The officers' group with its view permissions (the migration makes it; this brings it back
    after a test's flush, as Team.default() does for the default team)."""
    from django.contrib.auth.models import Group, Permission

    group, created = Group.objects.get_or_create(name=COMPLIANCE_OFFICERS)
    if created:
        for label in OFFICER_PERMISSIONS:
            app_label, codename = label.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return group


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    # The safety filters of this team's answers, in order (chat/filters.py); empty: PORTAL_SAFETY_FILTERS.
    safety_filters = ArrayField(
        models.CharField(max_length=32),
        null=True,
        blank=True,
        validators=[validate_filter_names],
        help_text="Comma-separated, in order, e.g. think_blocks,generation_error,iban,card,email,phone. "
        "Leave empty for the portal's PORTAL_SAFETY_FILTERS.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Days message content is kept (audit/retention.py): empty follows PORTAL_RETENTION_DAYS, 0 keeps it for ever.
    retention_days = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Days message content is kept before it is purged. Empty: the portal's PORTAL_RETENTION_DAYS; 0: for ever.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @classmethod
    def default(cls) -> Team:
        """The team everyone joins who was created without one (made by the migration)."""
        team, _ = cls.objects.get_or_create(slug=DEFAULT_TEAM_SLUG, defaults={"name": "Everyone"})
        return team


class Membership(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member", "member"
        ADMIN = "admin", "team admin"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the person last chose to chat for this team: the chat page opens on the newest.
    chosen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")]
        ordering = ["team__name"]

    def __str__(self):
        return f"{self.user} in {self.team} ({self.role})"


def teams_of(user) -> models.QuerySet[Team]:
    return Team.objects.filter(memberships__user=user)


def current_team(user) -> Team | None:
    """The team the person chats for: the one they chose last, else their first."""
    membership = (
        Membership.objects.filter(user=user)
        .select_related("team")
        .order_by(models.F("chosen_at").desc(nulls_last=True), "team__name")
        .first()
    )
    return membership.team if membership else None


def choose_team(user, team_id: int) -> Team | None:
    """Remember the team the person picked; None if they are not its member."""
    if not Membership.objects.filter(user=user, team_id=team_id).update(chosen_at=timezone.now()):
        return None
    return Team.objects.get(pk=team_id)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="join-the-default-team")
def _join_the_default_team(sender, instance, created, raw=False, **kwargs):
    """Nobody meets a portal they cannot use: a person created without a team (createsuperuser,
    the admin, runportal's first admin) joins the default team. Adding them to another team later
    is the team admin's business."""
    if created and not raw and not Membership.objects.filter(user=instance).exists():
        Membership.objects.create(team=Team.default(), user=instance)


class TeamLimits(models.Model):
    """A team's own limits (chat/quotas.py), set by its admin on the team's limits page. Blank
    follows the portal's default (PORTAL_... settings); 0 is no limit."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, primary_key=True, related_name="limits")
    concurrent_per_person = models.PositiveIntegerField(null=True, blank=True)
    concurrent_per_team = models.PositiveIntegerField(null=True, blank=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"limits of {self.team}"
