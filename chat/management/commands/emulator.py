"""`python manage.py emulator`: the bundled upstream emulator on its own (same as `python -m chat.emulator`)."""

import sys

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the Genesys AI Gateway emulator. Options: see `python -m chat.emulator --help`."

    def run_from_argv(self, argv):
        # The emulator owns its options (it also runs without Django); hand them over untouched.
        from chat.emulator.__main__ import main

        sys.exit(main(argv[2:]))
