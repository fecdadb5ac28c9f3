"""The executor: the one place a completion runs.

Read `ChatExecutor.stream()` top to bottom for the whole governed path:

    reserve quota -> validate (with the conversation so far) -> send upstream, and store the
    question while the model thinks -> stream -> safety filters -> relay deltas -> store answer +
    audit entry + usage record (one transaction) -> release quota

The websocket consumer, the HTTP API and the management command iterate `stream()` and turn its
events into their own wire format; none of them repeats a step. Database writes happen twice per
completion whatever its length (actions.py), never per chunk, and never inside the chunk loop.

A generation belongs to the server process, not to the socket that asked for it: `Generation`
runs `stream()` in its own task, so an answer goes on (and is stored) when its browser goes away,
and Stop cancels that task from any socket of the owner. The executor turns the cancellation into
a normal "cancelled" outcome: the partial answer is stored, audited, and a final Done is yielded.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings

from audit.models import UsageRecord
from chat import actions, answer_bus, quotas
from chat.actions import Exchange, Outcome
from chat.filters import SafetyPipeline
from chat.models import Message
from chat.upstream import errors
from chat.upstream.genesys import Finish, GenesysClient, TextBatch, get_client
from chat.validation import InvalidRequest, estimate_tokens, validate

log = logging.getLogger(__name__)


@dataclass
class ChatRequest:
    user: object  # an authenticated django User
    content: str
    model_id: str
    temperature: float
    max_tokens: int
    conversation_id: int | None = None


# --- events -------------------------------------------------------------------------------------


@dataclass
class Started:
    conversation_id: int
    message_id: int
    user_message_id: int
    request_id: str
    title: str


@dataclass
class Delta:
    message_id: int
    seq: int
    text: str


@dataclass
class Done:
    message_id: int
    status: str  # complete | cancelled
    finish_reason: str
    model_id: str
    usage: dict
    latency_ms: int
    ttft_ms: int | None
    filters: list[dict] = field(default_factory=list)


@dataclass
class Failed:
    message_id: int | None  # None: rejected before anything was stored
    code: str
    detail: str
    retryable: bool
    retry_after: float | None = None


Event = Started | Delta | Done | Failed


class ChatExecutor:
    def __init__(self, client: GenesysClient | None = None):
        self.client = client

    async def stream(self, request: ChatRequest, *, worker: str = "") -> AsyncIterator[Event]:
        """`worker`: the answer bus channel of the process that serves Stop and follow for this
        answer (`Generation` passes it; "" when nothing outside this call can reach it)."""
        request_id = "req-" + uuid.uuid4().hex[:20]
        user_id = request.user.pk
        try:
            lease = await quotas.concurrency.reserve(user_id)
        except quotas.QuotaExceeded as exc:
            log.info("rejected %s for user %s: %s", request_id, user_id, exc.code)
            yield Failed(None, exc.code, exc.detail, retryable=True)
            return
        except Exception:
            log.exception("could not reserve a quota lease for %s (Redis down?)", request_id)
            yield Failed(None, "internal_error", "The portal cannot start answers right now. Please try again in a minute.", True)
            return
        try:
            try:
                title, history = await self._history(request)
                history.append({"role": "user", "content": request.content})
                validate(history, model_id=request.model_id, temperature=request.temperature, max_tokens=request.max_tokens)
            except (InvalidRequest, actions.ConversationNotFound) as exc:
                yield Failed(None, exc.code, exc.detail, retryable=False)
                return
            # The question goes upstream first and is stored while the model thinks, so the
            # database write is not part of the time to first token.
            began = time.monotonic()
            upstream = (self.client or get_client()).stream_chat(
                messages=history,
                model_id=request.model_id,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                request_id=request_id,
            )
            first = asyncio.ensure_future(anext(upstream, None))
            try:
                exchange = await _db(actions.do_start_exchange)(
                    user=request.user,
                    conversation_id=request.conversation_id,
                    title=title,
                    history=history,
                    model_id=request.model_id,
                    temperature=request.temperature,
                    max_tokens=request.max_tokens,
                    request_id=request_id,
                    worker=worker,
                )
            except BaseException as exc:
                first.cancel()
                await asyncio.wait([first])
                await upstream.aclose()
                if isinstance(exc, actions.ConversationNotFound):
                    yield Failed(None, exc.code, exc.detail, retryable=False)
                    return
                if not isinstance(exc, Exception):
                    raise
                log.exception("could not store the question of %s", request_id)
                yield Failed(None, "internal_error", "The portal could not save your message. Please try again.", True)
                return
            yield Started(exchange.conversation_id, exchange.message_id, exchange.user_message_id, request_id, exchange.title)
            async for event in self._generate(exchange, request_id, upstream, first, began):
                yield event
        finally:
            try:
                await _uninterruptible(lease.release())
            except Exception:  # the lease then expires on its own (quotas.py)
                log.exception("could not release the quota lease of %s", request_id)

    async def _history(self, request: ChatRequest) -> tuple[str, list[dict]]:
        if request.conversation_id is None:
            return "", []  # a new conversation: nothing to read
        return await _db(actions.load_history)(user=request.user, conversation_id=request.conversation_id)

    async def _generate(self, exchange: Exchange, request_id: str, upstream, first, started: float) -> AsyncIterator[Event]:
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
            log.warning("completion %s failed: %s (HTTP %s)", request_id, exc.code, exc.status)
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
        ttft_ms = int((first_token_at - started) * 1000) if first_token_at else None
        text = "".join(relayed)
        usage = finish.usage if finish and isinstance(finish.usage, dict) else None
        outcome = Outcome(
            status=Message.Status.COMPLETE,
            text=text,
            filters=safety.report(),
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
        )
        if usage and "completion_tokens" in usage:
            outcome.input_tokens = int(usage.get("prompt_tokens") or 0)
            outcome.output_tokens = int(usage.get("completion_tokens") or 0)
            outcome.token_source = UsageRecord.TokenSource.UPSTREAM
        else:
            outcome.input_tokens = estimate_tokens(exchange.input_chars)
            outcome.output_tokens = estimate_tokens(raw_chars)
        if cancelled:
            outcome.status, outcome.finish_reason = Message.Status.CANCELLED, "cancelled"
        elif failure is not None:
            outcome.status, outcome.error_code, outcome.error_detail = Message.Status.ERROR, failure.code, failure.detail
        else:
            outcome.finish_reason = finish.finish_reason if finish else "stop"

        await _uninterruptible(_db(actions.do_finish_exchange)(exchange, outcome, request_id=request_id))

        retryable = failure.retryable if failure is not None else None
        retry_after = failure.retry_after if failure is not None else None
        yield final_event(exchange.message_id, exchange.model_id, outcome, retryable=retryable, retry_after=retry_after)


def _db(function):
    """Run an ORM call in the thread pool. Not thread-sensitive: the default would funnel every
    database call of the process through one thread, so one slow write would queue all others."""
    return database_sync_to_async(function, thread_sensitive=False)


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


_END = object()


class Generation:
    """One completion running in its own task, with any number of readers.

    The socket that asked for it subscribes first (and sees Started); a socket that reconnects
    later subscribes and takes a snapshot in the same step, with no await in between, so it gets
    the text up to `seq` and then exactly the deltas after it: nothing lost, nothing twice.

    Deltas are coalesced: the first is published at once (time to first token is untouched),
    later ones at most every PORTAL_RELAY_INTERVAL_MS (50 ms: 20 updates a second, still smooth
    to the eye), merged. Each websocket frame costs the process a send (a third of its CPU at 50
    tokens/s, docs/PERFORMANCE.md): at that rate an answer needs 2-3 tokens per frame instead of
    one, and a fast upstream one frame per 50 ms instead of one per chunk.
    `seq` numbers the published deltas.
    """

    def __init__(self, request: ChatRequest, executor: ChatExecutor | None = None):
        self.user_id = request.user.pk
        self.message_id: int | None = None
        self.seq = 0
        self._text: list[str] = []
        self._pending: list[str] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._last_flush = float("-inf")
        self._interval = settings.PORTAL_RELAY_INTERVAL_MS / 1000
        self._readers: set[asyncio.Queue] = set()
        self._executor = executor or ChatExecutor()
        self._stopping = False
        self.first_reader = self.subscribe()
        self.task = asyncio.create_task(self._run(request))

    async def _run(self, request: ChatRequest) -> None:
        loop = asyncio.get_running_loop()
        try:
            worker = await answer_bus.process_channel()
            async for event in self._executor.stream(request, worker=worker):
                if isinstance(event, Delta):
                    self._pending.append(event.text)
                    if self._flush_timer is None:
                        due = max(self._last_flush + self._interval, loop.time())
                        self._flush_timer = loop.call_at(due, self._flush)
                    continue
                self._flush()
                if isinstance(event, Started):
                    self.message_id = event.message_id
                    running[event.message_id] = self
                self._publish(event)
        except Exception:
            log.exception("generation failed unexpectedly")
            self._flush()
            self._publish(Failed(self.message_id, "internal_error", "Something went wrong in the portal. Please try again.", True))
        finally:
            running.pop(self.message_id, None)
            self._flush()
            self._publish(_END)

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._pending:
            return
        self._last_flush = asyncio.get_running_loop().time()
        text = "".join(self._pending)
        self._pending.clear()
        self.seq += 1
        self._text.append(text)
        self._publish(Delta(self.message_id, self.seq, text))

    def _publish(self, event) -> None:
        for reader in self._readers:
            reader.put_nowait(event)

    def subscribe(self) -> asyncio.Queue:
        reader: asyncio.Queue = asyncio.Queue()
        self._readers.add(reader)
        return reader

    def unsubscribe(self, reader: asyncio.Queue) -> None:
        self._readers.discard(reader)

    def snapshot(self) -> tuple[int, str]:
        """The answer so far and the seq of its last delta (call right after subscribe())."""
        return self.seq, "".join(self._text)

    async def events(self, reader: asyncio.Queue) -> AsyncIterator[Event]:
        try:
            while (event := await reader.get()) is not _END:
                yield event
        finally:
            self.unsubscribe(reader)

    def stop(self) -> None:
        # Once only: a second cancellation could interrupt the storing of the first one's outcome.
        if not self._stopping:
            self._stopping = True
            self.task.cancel()


# The generations this process is running, by answer id, so Stop can reach one from any socket.
running: dict[int, Generation] = {}


def final_event(message_id, model_id, outcome: Outcome, *, retryable=None, retry_after=None) -> Done | Failed:
    """The last event of an answer, from its outcome (live, or as stored for a late reader)."""
    if outcome.status == Message.Status.ERROR:
        if retryable is None:
            retryable = outcome.error_code in errors.RETRYABLE_CODES or outcome.error_code == "internal_error"
        return Failed(message_id, outcome.error_code, outcome.error_detail, retryable, retry_after)
    return Done(
        message_id=message_id,
        status=outcome.status,
        finish_reason=outcome.finish_reason,
        model_id=model_id,
        usage={"input_tokens": outcome.input_tokens, "output_tokens": outcome.output_tokens, "source": outcome.token_source},
        latency_ms=outcome.latency_ms,
        ttft_ms=outcome.ttft_ms,
        filters=outcome.filters,
    )


def outcome_event(message: Message) -> Done | Failed:
    """The final event of an answer that has already ended, rebuilt from what was stored."""
    return final_event(message.pk, message.model_id, Outcome.from_message(message))



async def stop_all(timeout: float = 10.0) -> None:
    """On shutdown: stop every running answer so each is stored as cancelled, not left streaming."""
    generations = list(running.values())
    for generation in generations:
        generation.stop()
    if generations:
        await asyncio.wait([g.task for g in generations], timeout=timeout)
