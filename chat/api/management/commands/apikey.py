"""`manage.py apikey create|list|revoke`: API keys for service accounts, from the shell.

    apikey create --user NAME [--team SLUG] [--name LABEL] [--expires DAYS]   the key is the last line
    apikey list [--user NAME]
    apikey revoke PREFIX

Made and revoked with the same audit entries as on the settings page (the person acting is the
key's owner for create, and none, i.e. the command line, for revoke).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from chat.api import keys
from chat.api.models import ApiKey
from gateway_portal.models import Team, current_team


class Command(BaseCommand):
    help = "Create, list or revoke personal API keys (for service accounts)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Make a key; prints it as the last line (shown only this once).")
        create.add_argument("--user", required=True, help="The person (username) the key acts as.")
        create.add_argument("--team", help="The slug of the team it acts for (default: the person's current team).")
        create.add_argument("--name", default="", help="What the key is for.")
        create.add_argument("--expires", type=int, metavar="DAYS", help="Expire after this many days (default: never).")
        listing = sub.add_parser("list", help="List keys (never the keys themselves).")
        listing.add_argument("--user", help="Only this person's keys.")
        revoke = sub.add_parser("revoke", help="Revoke a key by its prefix.")
        revoke.add_argument("prefix", help="The key's prefix, as `apikey list` shows it (gpk_…).")

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")(**options)

    def _create(self, *, user, team, name, expires, **_):
        person = get_user_model().objects.filter(username=user).first()
        if person is None:
            raise CommandError(f"There is no user named “{user}”.")
        if team:
            chosen = Team.objects.filter(slug=team, memberships__user=person).first()
            if chosen is None:
                raise CommandError(f"“{user}” is not in a team with the slug “{team}”.")
        else:
            chosen = current_team(person)
            if chosen is None:
                raise CommandError(f"“{user}” is in no team; add them to one first.")
        if expires is not None and expires < 1:
            raise CommandError("--expires must be at least 1 day.")
        row, key = keys.do_create_key(person, chosen, name or f"{user} (command line)", expires_in_days=expires)
        expiry = f", expires {row.expires_at:%Y-%m-%d}" if row.expires_at else ""
        self.stdout.write(f"Made the API key “{row.name}” ({row.prefix}…) for {person} in team {chosen}{expiry}.")
        self.stdout.write("It is shown only this once; the portal keeps only its hash:")
        self.stdout.write(key)

    def _list(self, *, user, **_):
        rows = ApiKey.objects.select_related("user", "team").order_by("user__username", "-created_at")
        if user:
            rows = rows.filter(user__username=user)
        now = timezone.now()
        for row in rows:
            used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
            expires = f"{row.expires_at:%Y-%m-%d}" if row.expires_at else "never"
            self.stdout.write(f"{row.prefix}  {row.state(now):8}  {row.user}  {row.team.slug}  “{row.name}”  last used {used}  expires {expires}")
        if not rows:
            self.stdout.write("No API keys.")

    def _revoke(self, *, prefix, **_):
        row = ApiKey.objects.filter(prefix=prefix.rstrip("…")).select_related("user").first()
        if row is None:
            raise CommandError(f"There is no API key with the prefix “{prefix}”.")
        if not keys.do_revoke_key(row, actor=None):
            raise CommandError(f"The API key {row.prefix}… was already revoked.")
        self.stdout.write(f"Revoked the API key “{row.name}” ({row.prefix}…) of {row.user}.")
