"""`python manage.py purge_content [--dry-run]`: purge message content older than the retention now.

The job worker does the same daily (audit/tasks.py); audit/retention.py says what is purged,
what is kept and how a legal hold stops it.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from audit import retention
from gateway_portal.models import Team


class Command(BaseCommand):
    help = "Blank message content older than the retention (PORTAL_RETENTION_DAYS, or the team's); audit entries stay."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Say what would be purged, change nothing.")

    def handle(self, *args, dry_run, **options):
        if not settings.PORTAL_RETENTION_DAYS and not Team.objects.filter(retention_days__gt=0).exists():
            self.stdout.write("Retention is off: PORTAL_RETENTION_DAYS is 0 and no team sets its own. Nothing to purge.")
            return
        done = retention.purge(dry_run=dry_run)
        verb = "would purge" if dry_run else "purged"
        for team in done:
            self.stdout.write(
                f"Team {team.team.slug}: {verb} {team.messages:,} messages older than {team.retention_days} days "
                f"(before {team.before:%Y-%m-%d %H:%M} UTC)."
            )
        total = sum(team.messages for team in done)
        summary = f"{'Would purge' if dry_run else 'Purged'} {total:,} messages in {len(done)} teams."
        self.stdout.write(self.style.SUCCESS(summary) if not dry_run else summary)
