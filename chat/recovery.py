"""Answers whose server process died while they streamed (SIGKILL, a lost machine, a power cut).

A live answer saves its text every PORTAL_CHECKPOINT_SECONDS (chat/actions.py `checkpoint()`),
and that save is its heartbeat. One whose heartbeat is older than PORTAL_INTERRUPTED_AFTER_SECONDS
has no process left to finish it, so it would read "streaming" for ever. `interrupt_orphans()`
stores each such answer as ended with the error "interrupted" and the text of its last
checkpoint, and writes its one audit entry and usage record (the dead process never did), so the
person who reloads sees what was kept with Continue and Retry instead of a spinner.

Who calls it: the chat socket, when a page resumes an answer no process runs (at once, if the
answer's process cannot be asked); `runportal` at start; and a job every minute (chat/tasks.py).
The claim is one conditional UPDATE inside the audit entry's transaction: an answer that ended
meanwhile, or whose heartbeat came back, is left alone, so no answer is recorded twice.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from audit.actions import do_record_completion
from chat.completion import BROWSER, ERROR, Exchange, Outcome
from chat.models import Message
from chat.validation import estimate_tokens

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"
SENTENCE = (
    "The portal stopped while this answer was being written. The text up to that moment is kept: "
    "Continue asks the model to go on from it, Retry asks again."
)


class _EndedMeanwhile(Exception):
    """The answer is no longer an orphan: its process finished it, or its heartbeat came back."""


def orphans(*, stale_before: datetime | None = None):
    """Streaming answers with no heartbeat since `stale_before` (default: the setting's age ago);
    `stale_before=None` and settings give the usual cut-off."""
    if stale_before is None:
        stale_before = timezone.now() - timedelta(seconds=settings.PORTAL_INTERRUPTED_AFTER_SECONDS)
    return Message.objects.filter(
        Q(checkpoint_at__lt=stale_before) | Q(checkpoint_at__isnull=True, created_at__lt=stale_before),
        status=Message.Status.STREAMING, role=Message.Role.ASSISTANT,
    )


def interrupt_orphans(*, stale_before: datetime | None = None, only: int | None = None) -> int:
    """Store every orphaned answer (or the one with id `only`) as interrupted; returns how many."""
    found = orphans(stale_before=stale_before)
    if only is not None:
        found = found.filter(pk=only)
    interrupted, last = 0, 0
    while batch := list(found.filter(pk__gt=last).select_related("conversation").order_by("pk")[:500]):
        for message in batch:
            interrupted += _interrupt(message)
        last = batch[-1].pk
    if interrupted:
        log.warning("stored %d answer(s) of a stopped process as interrupted", interrupted)
    return interrupted


def _interrupt(message: Message) -> bool:
    question = Message.objects.filter(conversation_id=message.conversation_id, pk__lt=message.pk).exclude(content="")
    asked = [{"role": role, "content": text} for role, text in question.order_by("created_at", "id").values_list("role", "content")]
    exchange = Exchange(
        request_id=message.request_id, user_id=message.conversation.user_id, team_id=message.team_id, client=BROWSER,
        messages=asked, model_id=message.model_id, temperature=0.0, max_tokens=0,
        conversation_id=message.conversation_id, message_id=message.pk,
    )
    last_beat = message.checkpoint_at or message.created_at
    outcome = Outcome(
        status=ERROR, text=message.content, model_id=message.model_id, error_code=INTERRUPTED, error_detail=SENTENCE,
        retryable=True, latency_ms=max(0, int((last_beat - message.created_at).total_seconds() * 1000)),
        input_tokens=estimate_tokens(exchange.input_chars), output_tokens=estimate_tokens(len(message.content)),
    )

    def claim(now: datetime) -> None:
        claimed = Message.objects.filter(pk=message.pk, status=Message.Status.STREAMING, checkpoint_at=message.checkpoint_at)
        if not claimed.update(**Message.fields_for(outcome), completed_at=now):
            raise _EndedMeanwhile

    try:
        do_record_completion(exchange, outcome, also=claim)
    except _EndedMeanwhile:
        return False
    return True
