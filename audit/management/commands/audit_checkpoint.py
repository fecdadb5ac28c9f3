"""`python manage.py audit_checkpoint`: publish the audit chain's head now (audit/checkpoints.py)
and print it, as one JSON line to keep: `verify_audit --checkpoints FILE` checks against it."""

from django.core.management.base import BaseCommand

from audit import checkpoints


class Command(BaseCommand):
    help = "Publish the audit chain's head (seq and hash) to the log and the checkpoint file, and print it."

    def handle(self, *args, **options):
        checkpoint = checkpoints.publish()
        if checkpoint is None:
            self.stderr.write("The audit trail is empty: nothing to checkpoint yet.")
            return
        self.stdout.write(checkpoint.to_json())
