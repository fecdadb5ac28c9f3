"""The executor: the one place a completion runs, whoever asks for it.

Read `ChatExecutor.stream()` top to bottom for the whole governed path:

    read the history the transcript adds (trimmed to the newest messages that fit) -> validate ->
    reserve every limit (one step: chat/quotas.py) -> send upstream, and store the question while
    the model thinks -> stream -> safety filters -> relay deltas -> store the answer + audit entry
    + usage record (one transaction) -> settle the limits to the tokens used

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
from chat.actions import AnswerAlreadyStored, ConversationTranscript, NoTranscript, run_in_thread
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
from chat.errors import InternalError, NotFound, PortalError, PortalUnavailable, QuotaExceeded
from chat.filters import SafetyPipeline, filter_names, screen_prompt
from chat.upstream import errors
from chat.upstream.genesys import Finish, GenesysClient, TextBatch, get_client
from chat.validation import estimate_tokens, trim_history, validate
from gateway_portal import logs, metrics

log = logging.getLogger(__name__)

Transcript = ConversationTranscript | NoTranscript


class ChatExecutor:
    def __init__(self, client: GenesysClient | None = None):
        self.client = client

    @metrics.observed
    async def stream(self, request: CompletionRequest, transcript: Transcript | None = None) -> AsyncIterator[Event]:
        """Run one completion; `transcript` defaults to keeping none (only the audit trail)."""
        transcript = transcript if transcript is not None else NoTranscript()
        request_id = "req-" + uuid.uuid4().hex[:20]
        logs.request_id.set(request_id)  # on every log line of this completion (PORTAL_LOG_FORMAT=json)
        lease = None
        try:
            try:
                title, messages = await transcript.history(request)
                left_out = 0
                if isinstance(transcript, ConversationTranscript):  # the page's long chats keep working
                    messages, left_out = trim_history(messages)
                safety_filters = filter_names(request.team)
                messages = screen_prompt(messages, safety_filters)
                validate(messages, model_id=request.model_id, temperature=request.temperature, max_tokens=request.max_tokens)
                team_id = getattr(transcript, "team_id", None) or (request.team.pk if request.team is not None else None)
                need = request.max_tokens + estimate_tokens(sum(len(m["content"]) for m in messages))
                lease = await quotas.limits.reserve(request.user.pk, team_id, need)
            except PortalError as exc:
                if not isinstance(exc, (NotFound, PortalUnavailable)):  # nothing of theirs to audit
                    # A limit is worth a line in the log; an invalid request is the person's to fix.
                    log.log(logging.INFO if isinstance(exc, QuotaExceeded) else logging.DEBUG,
                            "refused %s for user %s: %s", request_id, request.user.pk, exc.code)
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
                left_out=left_out,
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
            yield Started(exchange.conversation_id, exchange.message_id, exchange.user_message_id, request_id, exchange.title, left_out)
            async for event in self._generate(exchange, transcript, upstream, first, began, lease, safety_filters):
                yield event
        finally:
            try:
                if lease is not None:
                    await _uninterruptible(lease.settle())
            except Exception:  # the lease then expires on its own (quotas.py)
                log.exception("could not settle the limits of %s", request_id)

    async def _generate(
        self, exchange: Exchange, transcript: Transcript, upstream, first, started: float, lease, safety_filters: list[str]
    ) -> AsyncIterator[Event]:
        safety = SafetyPipeline(safety_filters)
        relayed: list[str] = []
        raw: list[str] = []  # the upstream's own text, kept when the filters change it
        seq = 0
        finish: Finish | None = None
        failure: errors.UpstreamError | None = None
        cancelled = False
        first_token_at = None
        this_task = asyncio.current_task()
        heartbeat = asyncio.create_task(_keep_checkpointing(transcript, exchange, relayed)) if exchange.message_id else None
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
                    raw.append(event.text)
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
            if heartbeat is not None:
                heartbeat.cancel()
            await upstream.aclose()
            if heartbeat is not None:
                await asyncio.wait([heartbeat])

        latency_ms = int((time.monotonic() - started) * 1000)
        outcome = Outcome(
            status=COMPLETE,
            text="".join(relayed),
            model_id=exchange.model_id,
            filters=safety.report(),
            upstream_text="".join(raw) if safety.changed() else "",
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
            outcome.output_tokens = estimate_tokens(sum(map(len, raw)))
        outcome.left_out = exchange.left_out
        lease.used = outcome.input_tokens + outcome.output_tokens  # the budgets settle to this
        if cancelled:
            outcome.status, outcome.finish_reason = CANCELLED, "cancelled"
        elif failure is not None:
            outcome.status, outcome.error_code, outcome.error_detail = ERROR, failure.code, failure.detail
            outcome.retryable, outcome.retry_after = failure.retryable, failure.retry_after
        else:
            outcome.finish_reason = finish.finish_reason if finish else "stop"

        keep_answer = functools.partial(transcript.finish, exchange, outcome)
        try:
            await _uninterruptible(run_in_thread(do_record_completion)(exchange, outcome, also=keep_answer))
        except AnswerAlreadyStored:
            log.warning("answer %s was stored as interrupted while it streamed (no heartbeat for %s s)",
                        exchange.message_id, settings.PORTAL_INTERRUPTED_AFTER_SECONDS)
        yield final_event(exchange.message_id, outcome)


async def _refused(request: CompletionRequest, request_id: str, error: PortalError, conversation_id: int | None = None) -> None:
    """Audit a completion refused before it went upstream (a limit, an invalid request). The
    person's error frame does not wait on a failure to write it: that is logged."""
    try:
        await run_in_thread(do_record_refusal)(
            request_id=request_id, user_id=request.user.pk, team_id=request.team.pk if request.team is not None else None,
            model_id=request.model_id, client=request.client, code=error.code, sentence=str(error),
            retry_after=error.retry_after, conversation_id=conversation_id, messages=request.messages,
            limit=Failed.from_error(error).limit,
            api_key=request.api_key,
        )
    except Exception:
        log.exception("could not audit the refusal of %s", request_id)


async def _keep_checkpointing(transcript: Transcript, exchange: Exchange, relayed: list[str]) -> None:
    """Save the answer's text so far every PORTAL_CHECKPOINT_SECONDS, whether or not text arrives
    (a model that thinks for a minute is alive): a crash then loses at most that much, and the
    save is the heartbeat chat/recovery.py reads. A failed save is logged and tried next time."""
    this_task = asyncio.current_task()
    while True:
        await asyncio.sleep(settings.PORTAL_CHECKPOINT_SECONDS)
        try:
            await transcript.checkpoint(exchange, "".join(relayed))
        except Exception:
            log.warning("could not checkpoint answer %s", exchange.message_id, exc_info=True)
        if this_task.cancelling():  # a cancel absorbed by the thread hop (asgiref waits for the thread)
            return


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
