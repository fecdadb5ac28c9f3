"""`python manage.py verify_audit`: check that the audit trail's hash chain is unbroken.

Walks every entry in order and recomputes its hash (audit/chain.py). Prints the head (seq and
hash: write it down, or publish it, to check later that nothing before it was rewritten) and
exits 0 when the chain is intact; names the first broken entry and exits 1 when it is not.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from audit import chain


class Command(BaseCommand):
    help = "Check the audit trail's hash chain, entry by entry; exit status 1 if it is broken."

    def handle(self, *args, **options):
        began = time.monotonic()
        verdict = chain.verify()
        seconds = time.monotonic() - began
        if not verdict.intact:
            raise CommandError(
                f"The audit trail is broken at entry {verdict.broken_at}: {verdict.reason}. "
                f"Entries 1 to {verdict.head_seq} are intact ({verdict.checked:,} checked in {seconds:.1f} s)."
            )
        self.stdout.write(
            self.style.SUCCESS(f"The audit trail is intact: {verdict.checked:,} entries checked in {seconds:.1f} s.")
        )
        self.stdout.write(f"Head: entry {verdict.head_seq}, hash {verdict.head_hash}")
