"""The executor: the one place a completion runs, whoever asks for it.

Read `ChatExecutor.stream()` top to bottom for the whole governed path:

    reserve quota -> validate (with the history the transcript adds) -> send upstream, and store
    the question while the model thinks -> stream -> safety filters -> relay deltas -> store the
    answer + audit entry + usage record (one transaction) -> release quota

Callers differ only in what they pass in: a `CompletionRequest` (chat/completion.py: the person,
the team, the messages, the model and its parameters, the client kind) and a transcript
(chat/actions.py: where the history comes from and where the exchange is kept). The websocket
consumer runs it through a `Generation` (chat/generations.py) so that an answer outlives its
socket; a program's request can iterate `stream()` directly. None of them repeats a step.
Database writes happen twice per completion whatever its length, never in the chunk loop.

Cancelling the task that iterates `stream()` (Stop, a shutdown) is a normal "cancelled" outcome:
the partial answer is stored and audited, and a final Done is yielded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator

from django.conf import settings

from audit.actions import do_record_completion, do_record_refusal
from chat import quotas
from chat.actions import ConversationTranscript, NoTranscript, run_in_thread
from chat.completion import (
    CANCELLED,
    COMPLETE,
    ERROR,
    UPSTREAM_COUNT,
    CompletionRequest,
    Delta,
    Event,
    Exchange,
    Failed,
    Outcome,
    Started,
    final_event,
)
from chat.errors import InternalError, NotFound, PortalError, PortalUnavailable
from chat.filters import SafetyPipeline
from chat.upstream import errors
from chat.upstream.genesys import Finish, GenesysClient, TextBatch, get_client
from chat.validation import estimate_tokens, validate

log = logging.getLogger(__name__)

Transcript = ConversationTranscript | NoTranscript


class ChatExecutor:
    def __init__(self, client: GenesysClient | None = None):
        self.client = client

    async def stream(self, request: CompletionRequest, transcript: Transcript | None = None) -> AsyncIterator[Event]:
        """Run one completion; `transcript` defaults to keeping none (only the audit trail)."""
        transcript = transcript if transcript is not None else NoTranscript()
        request_id = "req-" + uuid.uuid4().hex[:20]
        try:
            lease = await quotas.concurrency.reserve(request.user, request.team)
        except PortalError as exc:
            log.info("refused %s for user %s: %s", request_id, request.user.pk, exc.code)
            await _refused(request, request_id, exc)
            yield Failed.from_error(exc)
            return
        except Exception:
            log.exception("could not reserve a quota lease for %s (Redis down?)", request_id)
            yield Failed.from_error(PortalUnavailable())
            return
        try:
            try:
                title, messages = await transcript.history(request)
                validate(messages, model_id=request.model_id, temperature=request.temperature, max_tokens=request.max_tokens)
            except PortalError as exc:
                if not isinstance(exc, NotFound):  # someone else's conversation: nothing of theirs to audit
                    await _refused(request, request_id, exc, getattr(transcript, "conversation_id", None))
                yield Failed.from_error(exc)
                return
            exchange = Exchange(
                request_id=request_id,
                user_id=request.user.pk,
                team_id=request.team.pk if request.team is not None else None,
                client=request.client,
                messages=messages,
                model_id=request.model_id,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                title=title,
                api_key=request.api_key,
            )
            # The question goes upstream first and is stored while the model thinks, so the
            # database write is not part of the time to first token.
            began = time.monotonic()
            upstream = (self.client or get_client()).stream_chat(
                messages=messages,
                model_id=request.model_id,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                request_id=request_id,
            )
            first = asyncio.ensure_future(anext(upstream, None))
            try:
                await transcript.start(request, exchange)
            except BaseException as exc:
                first.cancel()
                await asyncio.wait([first])
                await upstream.aclose()
                if isinstance(exc, PortalError):
                    yield Failed.from_error(exc)
                    return
                if not isinstance(exc, Exception):
                    raise
                log.exception("could not store the question of %s", request_id)
                yield Failed.from_error(InternalError("The portal could not save your message. Please try again."))
                return
            yield Started(exchange.conversation_id, exchange.message_id, exchange.user_message_id, request_id, exchange.title)
            async for event in self._generate(exchange, transcript, upstream, first, began):
                yield event
        finally:
            try:
                await _uninterruptible(lease.release())
            except Exception:  # the lease then expires on its own (quotas.py)
                log.exception("could not release the quota lease of %s", request_id)

    async def _generate(self, exchange: Exchange, transcript: Transcript, upstream, first, started: float) -> AsyncIterator[Event]:
        safety = SafetyPipeline(settings.PORTAL_SAFETY_FILTERS)
        relayed: list[str] = []
        raw_chars = 0
        seq = 0
        finish: Finish | None = None
        failure: errors.UpstreamError | None = None
        cancelled = False
        first_token_at = None
        this_task = asyncio.current_task()
        try:
            async for event in _chain(first, upstream):
                if this_task is not None and this_task.cancelling():
                    # A Stop that arrived while the upstream call sat in a sync_to_async call (the
                    # token cache) was swallowed there: asgiref waits for the thread and returns
                    # its result instead of raising. The request to cancel is still counted.
                    raise asyncio.CancelledError
                if isinstance(event, TextBatch):
                    if first_token_at is None:
                        first_token_at = time.monotonic()
                    raw_chars += len(event.text)
                    text = safety.feed(event.text)
                    if text:
                        relayed.append(text)
                        seq += 1
                        yield Delta(exchange.message_id, seq, text)
                else:
                    finish = event
            tail = safety.finish()
            if tail:
                relayed.append(tail)
                seq += 1
                yield Delta(exchange.message_id, seq, tail)
        except errors.UpstreamError as exc:
            failure = exc
            log.warning("completion %s failed: %s (HTTP %s)", exchange.request_id, exc.code, exc.status)
        except asyncio.CancelledError:
            # Stop: keep what the person has already read. Uncancel so the stored outcome and the
            # final Done below are not themselves interrupted.
            cancelled = True
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        finally:
            await upstream.aclose()

        latency_ms = int((time.monotonic() - started) * 1000)
        outcome = Outcome(
            status=COMPLETE,
            text="".join(relayed),
            model_id=exchange.model_id,
            filters=safety.report(),
            latency_ms=latency_ms,
            ttft_ms=int((first_token_at - started) * 1000) if first_token_at else None,
        )
        usage = finish.usage if finish and isinstance(finish.usage, dict) else None
        if usage and "completion_tokens" in usage:
            outcome.input_tokens = int(usage.get("prompt_tokens") or 0)
            outcome.output_tokens = int(usage.get("completion_tokens") or 0)
            outcome.token_source = UPSTREAM_COUNT
        else:
            outcome.input_tokens = estimate_tokens(exchange.input_chars)
            outcome.output_tokens = estimate_tokens(raw_chars)
        if cancelled:
            outcome.status, outcome.finish_reason = CANCELLED, "cancelled"
        elif failure is not None:
            outcome.status, outcome.error_code, outcome.error_detail = ERROR, failure.code, failure.detail
            outcome.retryable, outcome.retry_after = failure.retryable, failure.retry_after
        else:
            outcome.finish_reason = finish.finish_reason if finish else "stop"

        keep_answer = functools.partial(transcript.finish, exchange, outcome)
        await _uninterruptible(run_in_thread(do_record_completion)(exchange, outcome, also=keep_answer))
        yield final_event(exchange.message_id, outcome)


async def _refused(request: CompletionRequest, request_id: str, error: PortalError, conversation_id: int | None = None) -> None:
    """Audit a completion refused before it went upstream (a limit, an invalid request). The
    person's error frame does not wait on a failure to write it: that is logged."""
    try:
        await run_in_thread(do_record_refusal)(
            request_id=request_id, user_id=request.user.pk, team_id=request.team.pk if request.team is not None else None,
            model_id=request.model_id, client=request.client, code=error.code, sentence=str(error),
            retry_after=error.retry_after, conversation_id=conversation_id, messages=request.messages,
            api_key=request.api_key,
        )
    except Exception:
        log.exception("could not audit the refusal of %s", request_id)


async def _chain(first: asyncio.Future, rest: AsyncIterator):
    """The upstream's events: the first one (already requested) and then the rest."""
    event = await first
    if event is None:
        return
    yield event
    async for event in rest:
        yield event


async def _uninterruptible(awaitable):
    """Await to the end even if Stop arrives meanwhile: the final write is what makes Stop safe."""
    future = asyncio.ensure_future(awaitable)
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if future.done():
                return future.result()
