"""`manage.py chat "prompt"`: one completion from the shell, streamed to stdout.

The same governed path as the chat page and the API (ChatExecutor, client "command"): limits,
validation, filters, audit entry and usage record. The prompt comes from the argument, else from
standard input. Exit status 0 when the answer completed; 1 with the error sentence on stderr when
it was refused or failed; 130 when interrupted (Ctrl-C), which stores the answer as cancelled.
Without Genesys credentials the upstream is the emulator at EMULATOR_URL.
"""

from __future__ import annotations

import asyncio
import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from chat.completion import COMMAND, CANCELLED, CompletionRequest, Delta, Done, Failed
from chat.executor import ChatExecutor
from gateway_portal.models import Team, current_team


class Command(BaseCommand):
    help = "Ask the AI service one question as a person, through the portal's governed path; the answer streams to stdout."

    def add_arguments(self, parser):
        parser.add_argument("prompt", nargs="?", help="The question (default: read from standard input).")
        parser.add_argument("--user", required=True, help="The person (username) who asks.")
        parser.add_argument("--team", help="The slug of the team they ask for (default: their current team).")
        parser.add_argument("--model", default=settings.PORTAL_DEFAULT_MODEL)
        parser.add_argument("--system", help="A system message before the prompt.")
        parser.add_argument("--temperature", type=float, default=settings.PORTAL_DEFAULT_TEMPERATURE)
        parser.add_argument("--max-tokens", type=int, default=settings.PORTAL_DEFAULT_MAX_TOKENS)

    def handle(self, *args, **options):
        person = get_user_model().objects.filter(username=options["user"], is_active=True).first()
        if person is None:
            raise CommandError(f"There is no active user named “{options['user']}”.")
        if options["team"]:
            team = Team.objects.filter(slug=options["team"], memberships__user=person).first()
            if team is None:
                raise CommandError(f"“{person}” is not in a team with the slug “{options['team']}”.")
        else:
            team = current_team(person)
        prompt = options["prompt"] if options["prompt"] is not None else sys.stdin.read()
        messages = [{"role": "system", "content": options["system"]}] if options["system"] else []
        messages.append({"role": "user", "content": prompt})
        request = CompletionRequest(
            user=person, team=team, messages=messages, model_id=options["model"],
            temperature=options["temperature"], max_tokens=options["max_tokens"], client=COMMAND,
        )
        try:
            ended = asyncio.run(self._stream(request))
        except KeyboardInterrupt:
            ended = None
        if isinstance(ended, Failed):
            self.stderr.write(ended.detail)
            sys.exit(1)
        if ended is None or ended.outcome.status == CANCELLED:
            self.stderr.write("Interrupted: the answer so far is kept as cancelled.")
            sys.exit(130)

    async def _stream(self, request: CompletionRequest) -> Done | Failed | None:
        ended = None
        wrote = False
        async for event in ChatExecutor().stream(request):
            if isinstance(event, Delta):
                self.stdout.write(event.text, ending="")
                self.stdout.flush()
                wrote = True
            elif isinstance(event, (Done, Failed)):
                ended = event
        if wrote:
            self.stdout.write("")  # the answer's last line ends
        return ended
