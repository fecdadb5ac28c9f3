"""One API completion: the executor in a task of its own, and its events as OpenAI's SSE stream.

The executor runs in its own task, as the chat page's Generation runs it, so a client that goes
away cancels exactly that task: the executor then stores and audits the answer as "cancelled",
as Stop does (chat/executor.py). Django's ASGI handler notices the disconnect (an
`http.disconnect` message while the response is being sent) and cancels the task that sends the
response: that lands either in `ChunkStream` waiting for the next event (its `finally` cancels the
completion) or in the send itself, after which Django calls the stream's `close()` (from a thread)
— which cancels it too.
"""

from __future__ import annotations

import asyncio
import logging

from chat.actions import NoTranscript
from chat.completion import CompletionRequest, Delta, Done, Event, Failed, Started
from chat.errors import InternalError
from chat.executor import ChatExecutor

from . import shapes

log = logging.getLogger(__name__)

# Completions whose client has gone: kept referenced until the executor has stored them.
_finishing: set[asyncio.Task] = set()


class Completion:
    """`ChatExecutor().stream(request, NoTranscript())` in its own task, its events in a queue."""

    def __init__(self, request: CompletionRequest):
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[Event | None] = asyncio.Queue()
        self.cancelled = False
        self.task = asyncio.create_task(self._run(request))
        _finishing.add(self.task)
        self.task.add_done_callback(_finishing.discard)

    async def _run(self, request: CompletionRequest) -> None:
        try:
            async for event in ChatExecutor().stream(request, NoTranscript()):
                self.events.put_nowait(event)
        except asyncio.CancelledError:
            pass  # cancelled before anything went upstream: there is nothing to store
        except Exception:
            log.exception("an API completion failed")
            self.events.put_nowait(Failed.from_error(InternalError()))
        finally:
            self.events.put_nowait(None)

    async def next(self) -> Event | None:
        """The next event; None after the last."""
        return await self.events.get()

    def cancel(self) -> None:
        # Once: the executor turns one cancellation into a stored "cancelled" answer and takes it
        # back (uncancel); a second request would stay pending on its task.
        if not self.task.done() and not self.cancelled:
            self.cancelled = True
            self.task.cancel()

    def cancel_from_thread(self) -> None:
        self.loop.call_soon_threadsafe(self.cancel)


class ChunkStream:
    """The body of a streamed answer: the events already read (up to the first text) and then the
    rest, as SSE chunks. Its `close()` is what Django calls when the response ends, however."""

    def __init__(self, completion: Completion, chunks: shapes.Chunks, read: list[Event]):
        self.completion = completion
        self.chunks = chunks
        self.read = read

    def __aiter__(self):
        return self._body()

    async def _body(self):
        try:
            yield self.chunks.role()
            pending = list(self.read)
            while True:
                event = pending.pop(0) if pending else await self.completion.next()
                if event is None:
                    return
                if isinstance(event, Delta):
                    yield self.chunks.text(event.text)
                elif isinstance(event, Done):
                    yield self.chunks.finish(event.outcome)
                elif isinstance(event, Failed):
                    yield self.chunks.error(event.detail, status_of(event), event.code)
        finally:
            self.completion.cancel()

    def close(self) -> None:
        self.completion.cancel_from_thread()


def status_of(failed: Failed) -> int:
    """The HTTP status of a failure: the error's own, or (for an answer stored with an upstream
    error) the one its code has in the error tree."""
    return failed.http_status or _STATUS_BY_CODE.get(failed.code, 502)


def _statuses() -> dict[str, int]:
    from chat.errors import PortalError
    from chat.upstream import errors  # noqa: F401  (its classes join the tree walked below)

    found, todo = {}, [PortalError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls.http_status)
        todo.extend(cls.__subclasses__())
    return found


_STATUS_BY_CODE = _statuses()


async def read_until_text(completion: Completion) -> tuple[list[Event], Failed | None]:
    """The events up to the first text or the end; the failure if it came first (so the HTTP
    status can still say it)."""
    read: list[Event] = []
    while True:
        event = await completion.next()
        if event is None:
            return read, None
        if isinstance(event, Failed):
            return read, event
        read.append(event)
        if not isinstance(event, Started):
            return read, None
