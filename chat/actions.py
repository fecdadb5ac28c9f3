"""Where a completion's exchange is kept: the caller's choice, handed to the executor.

    ConversationTranscript  the chat page: the history comes from the person's conversation, the
                            question and the answer are stored as its messages
    NoTranscript            programs (the API, the command): they send the whole message list and
                            keep it themselves; only the audit entry and usage record are written

A transcript has three steps, which the executor calls in order:
`history()` (what to send upstream), `start()` (store the question while the model thinks; the
executor does this concurrently with the upstream request) and `finish()` (store the answer,
called by the executor inside the transaction that writes the audit entry and usage record, so an
answer never exists without them). Database writes are twice per completion whatever its length,
plus `checkpoint()` every PORTAL_CHECKPOINT_SECONDS of a long answer (its text so far, and the
heartbeat that tells a live answer from one whose process died: chat/recovery.py).
"""

from __future__ import annotations

from datetime import datetime

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from chat import access
from chat.completion import CompletionRequest, Exchange, Outcome
from chat.errors import NotFound
from chat.models import Conversation, Message


class AnswerAlreadyStored(Exception):
    """The answer was ended by someone else (chat/recovery.py) before its own process finished it."""


def run_in_thread(function):
    """Run an ORM call in the thread pool. Not thread-sensitive: the default would funnel every
    database call of the process through one thread, so one slow write would queue all others."""
    return database_sync_to_async(function, thread_sensitive=False)


class NoTranscript:
    """Nothing kept but the audit trail: the request's messages are the whole history."""

    async def history(self, request: CompletionRequest) -> tuple[str, list[dict]]:
        return "", list(request.messages)

    async def start(self, request: CompletionRequest, exchange: Exchange) -> None:
        return None

    async def checkpoint(self, exchange: Exchange, text: str) -> None:
        return None

    def finish(self, exchange: Exchange, outcome: Outcome, now: datetime) -> None:
        return None


class ConversationTranscript:
    """The chat page's conversation (a new one when `conversation_id` is None)."""

    def __init__(self, conversation_id: int | None = None, *, process_channel: str = ""):
        self.conversation_id = conversation_id
        self.team_id: int | None = None  # an existing conversation's: it stays in its team
        # Where Stop and follow requests for the answer reach the process generating it.
        self.process_channel = process_channel

    async def history(self, request: CompletionRequest) -> tuple[str, list[dict]]:
        if self.conversation_id is None:
            return "", list(request.messages)  # a new conversation: nothing to read
        title, earlier = await run_in_thread(self._read)(request.user)
        return title, earlier + list(request.messages)

    def _read(self, user) -> tuple[str, list[dict]]:
        found = access.conversations_writable_by(user).filter(pk=self.conversation_id).values_list("title", "team_id").first()
        if found is None:
            raise NotFound()
        title, self.team_id = found
        earlier = [
            {"role": role, "content": text}
            for role, text in Message.objects.filter(conversation_id=self.conversation_id)
            .exclude(content="")
            .order_by("created_at", "id")
            .values_list("role", "content")
        ]
        return title, earlier

    async def start(self, request: CompletionRequest, exchange: Exchange) -> None:
        await run_in_thread(self._start)(request.user, exchange)

    def _start(self, user, exchange: Exchange) -> None:
        """Store the question (the last message, already validated) and an empty answer."""
        content = exchange.messages[-1]["content"]
        conversation_id = self.conversation_id
        if self.team_id is not None:
            exchange.team_id = self.team_id
        with transaction.atomic():
            if conversation_id is None:
                exchange.title = Conversation.title_from(content)
                conversation_id = Conversation.objects.create(user=user, team_id=exchange.team_id, title=exchange.title).pk
            elif not access.conversations_writable_by(user).filter(pk=conversation_id).update(updated_at=timezone.now()):
                raise NotFound()  # deleted since its history was read
            question, answer = Message.objects.bulk_create(
                [
                    Message(
                        conversation_id=conversation_id,
                        team_id=exchange.team_id,
                        role=Message.Role.USER,
                        content=content,
                        request_id=exchange.request_id,
                    ),
                    Message(
                        conversation_id=conversation_id,
                        team_id=exchange.team_id,
                        role=Message.Role.ASSISTANT,
                        status=Message.Status.STREAMING,
                        model_id=exchange.model_id,
                        request_id=exchange.request_id,
                        process_channel=self.process_channel,
                        checkpoint_at=timezone.now(),
                    ),
                ]
            )
        exchange.conversation_id = conversation_id
        exchange.user_message_id, exchange.message_id = question.pk, answer.pk

    async def checkpoint(self, exchange: Exchange, text: str) -> None:
        await run_in_thread(self._checkpoint)(exchange.message_id, text)

    @staticmethod
    def _checkpoint(message_id: int, text: str) -> None:
        # Only while it streams: a checkpoint that arrives after the answer's end changes nothing.
        Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(content=text, checkpoint_at=timezone.now())

    def finish(self, exchange: Exchange, outcome: Outcome, now: datetime) -> None:
        answer = Message.objects.filter(pk=exchange.message_id)
        stored = answer.filter(status=Message.Status.STREAMING).update(**Message.fields_for(outcome), completed_at=now)
        if not stored and answer.exists():
            # Stored as "interrupted" already (chat/recovery.py: its heartbeat stopped for longer
            # than the cut-off while this process lived on): that record, and its audit entry, stand.
            raise AnswerAlreadyStored(exchange.message_id)
        if not stored:
            # The conversation was deleted while the answer streamed: the completion still
            # happened, so its audit entry is written, pointing at nothing.
            exchange.conversation_id = exchange.message_id = None
