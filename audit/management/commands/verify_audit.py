"""`python manage.py verify_audit`: check that the audit trail's hash chain is unbroken.

Walks every entry in order and recomputes its hash (audit/chain.py). Prints the head (seq and
hash: write it down, or publish it, to check later that nothing before it was rewritten) and
exits 0 when the chain is intact; names the first broken entry and exits 1 when it is not.
With `--checkpoints FILE` (checkpoints saved from the log, the checkpoint file or webhooks:
audit/checkpoints.py) it also checks that the chain still has each checkpoint's hash at its seq,
which a table rewritten whole, hashes and all, cannot.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from audit import chain
from audit import checkpoints as _checkpoints


class Command(BaseCommand):
    help = "Check the audit trail's hash chain, entry by entry; exit status 1 if it is broken."

    def add_arguments(self, parser):
        parser.add_argument(
            "--checkpoints", metavar="FILE", default="",
            help="A file of checkpoints (JSON lines {\"seq\": …, \"hash\": …}, as published; a log file will do).",
        )

    def handle(self, *args, checkpoints: str = "", **options):
        try:
            expected = dict(_checkpoints.read(checkpoints)) if checkpoints else {}
        except _checkpoints.BadCheckpointFile as exc:
            raise CommandError(str(exc)) from exc
        began = time.monotonic()
        verdict = chain.verify(remember=set(expected))
        seconds = time.monotonic() - began
        if not verdict.intact:
            raise CommandError(
                f"The audit trail is broken at entry {verdict.broken_at}: {verdict.reason}. "
                f"Entries 1 to {verdict.head_seq} are intact ({verdict.checked:,} checked in {seconds:.1f} s)."
            )
        for seq, wanted in sorted(expected.items()):
            found = verdict.remembered.get(seq)
            if found is None:
                raise CommandError(f"Checkpoint {seq} is past the end of the audit trail (entry {verdict.head_seq}): entries were removed.")
            if found != wanted:
                raise CommandError(
                    f"The audit trail does not match checkpoint {seq}: the chain has hash {found} there, the checkpoint "
                    f"{wanted}. Entries up to {seq} were rewritten since the checkpoint was published."
                )
        rate = f", {verdict.checked / seconds:,.0f} a second" if seconds > 0.5 else ""
        self.stdout.write(
            self.style.SUCCESS(f"The audit trail is intact: {verdict.checked:,} entries checked in {seconds:.1f} s{rate}.")
        )
        if expected:
            self.stdout.write(f"It matches all {len(expected)} checkpoint(s) in {checkpoints}.")
        self.stdout.write(f"Head: entry {verdict.head_seq}, hash {verdict.head_hash}")
