"""`python manage.py rollup_usage`: (re)compute the usage roll-ups of whole days (audit/rollups.py).

The periodic job keeps the last days rolled; this is for the rest: a first roll of the history
(`--all`), or days whose records were written late (an import, `seed_usage`). Re-rolling a day
replaces its roll-ups, so it can be run any time, as often as wanted.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

from django.core.management.base import BaseCommand, CommandError

from audit import rollups


class Command(BaseCommand):
    help = "Recompute the usage roll-ups of whole days (the analytics read them for long ranges)."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--days", type=int, help=f"The last N closed days (default {rollups.REROLL_DAYS}, as the hourly job).")
        which.add_argument("--all", action="store_true", help="Every closed day since the first usage record.")
        which.add_argument("--day", type=date.fromisoformat, action="append", help="This day (YYYY-MM-DD); may be repeated.")

    def handle(self, *args, days, all, day, **options):
        last = rollups.closed_days()
        if day:
            chosen = sorted(set(day))
            if chosen[-1] > last:
                raise CommandError(f"{chosen[-1]} has not ended yet: the last closed day is {last}.")
        elif all:
            first = rollups.first_record_day()
            chosen = [] if first is None or first > last else [first + timedelta(days=n) for n in range((last - first).days + 1)]
        else:
            count = rollups.REROLL_DAYS if days is None else days
            if count < 1:
                raise CommandError("Give a positive number of days.")
            chosen = [last - timedelta(days=n) for n in reversed(range(count))]
        began, total = time.monotonic(), 0
        for one in chosen:
            total += rollups.roll_day(one)
            if options["verbosity"] > 1:
                self.stdout.write(f"  {one}: rolled")
        self.stdout.write(
            f"Rolled up {len(chosen)} day(s), {total:,} usage records, in {time.monotonic() - began:.1f} s."
        )
