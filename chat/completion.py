"""What a completion is, for every caller: its request, the events it yields, how it ended.

A leaf: it imports nothing else of the portal, so the executor, the generations, the frames and
the answer bus can all import it without importing each other.

    CompletionRequest  the person, their team, the messages, the model and its parameters, the client
    Exchange           the request as stored: ids of the question and answer (None when the caller
                       keeps no transcript), everything sent upstream
    Started, Delta, Done, Failed   the events of ChatExecutor.stream()
    Outcome            how an answer ended: text, status, tokens, timings, filters, error
    final_event()      the last event of an answer from its outcome, live or as stored
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Who asked: shown in the audit trail and analytics.
BROWSER, API, COMMAND = "browser", "api", "command"

# The values of chat.models.Message.Status that end an answer.
COMPLETE, ERROR, CANCELLED = "complete", "error", "cancelled"

# Where the token counts come from (audit.models.UsageRecord.TokenSource).
UPSTREAM_COUNT, ESTIMATE = "upstream", "estimate"


@dataclass
class CompletionRequest:
    user: object  # an authenticated django User
    messages: list[dict]  # this request's messages, the new question last (the storage may add history)
    model_id: str
    temperature: float
    max_tokens: int
    team: object | None = None  # the gateway_portal.Team the person acts for
    client: str = BROWSER
    api_key: dict | None = None  # the API key a program used ({"name", "prefix"}): in the audit entry


@dataclass
class Exchange:
    request_id: str
    user_id: int
    team_id: int | None
    client: str
    messages: list[dict]  # what is sent upstream, the new question last
    model_id: str
    temperature: float
    max_tokens: int
    conversation_id: int | None = None
    title: str = ""
    left_out: int = 0  # earliest messages of a long conversation not sent (over the history limit)
    user_message_id: int | None = None
    message_id: int | None = None  # the answer's, when the caller stores one
    api_key: dict | None = None
    input_chars: int = field(init=False)

    def __post_init__(self):
        self.input_chars = sum(len(m["content"]) for m in self.messages)


@dataclass
class Started:
    conversation_id: int | None
    message_id: int | None
    user_message_id: int | None
    request_id: str
    title: str
    left_out: int = 0


@dataclass
class Delta:
    message_id: int | None
    seq: int
    text: str


@dataclass
class Outcome:
    status: str  # COMPLETE, ERROR or CANCELLED
    text: str
    model_id: str = ""
    finish_reason: str = ""
    error_code: str = ""
    error_detail: str = ""
    retryable: bool = False
    retry_after: float | None = None  # live only: not stored
    filters: list[dict] = field(default_factory=list)
    upstream_text: str = ""  # the text before the filters, when they changed it; stored, never sent
    input_tokens: int = 0
    output_tokens: int = 0
    token_source: str = ESTIMATE
    latency_ms: int = 0
    ttft_ms: int | None = None
    left_out: int = 0  # Exchange.left_out, kept with the answer

    @property
    def tokens_per_second(self) -> float:
        # Generation speed once the answer started, so a slow first token does not hide a fast stream.
        # When the whole answer arrived in one read, fall back to the whole latency (at least 1 ms).
        ms = self.latency_ms - (self.ttft_ms or 0)
        if ms <= 0:
            ms = max(self.latency_ms, 1)
        return round(self.output_tokens * 1000 / ms, 2) if self.output_tokens else 0.0

    def usage(self) -> dict:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "source": self.token_source}

    def stats(self) -> dict:
        """What Message.stats stores: the same names as the final frame."""
        stats = {"usage": self.usage(), "latency_ms": self.latency_ms, "ttft_ms": self.ttft_ms}
        if self.left_out:
            stats["left_out"] = self.left_out
        return stats

    def to_dict(self) -> dict:
        """The facts of a finished answer, named once for every wire: the `done` and `error` frames,
        the chat page's payload and a late reader's final frame."""
        facts = {
            "status": self.status,
            "model": self.model_id,
            "finish_reason": self.finish_reason,
            "usage": self.usage(),
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "filters": self.filters,
        }
        if self.left_out:
            facts["left_out"] = self.left_out
        if self.status == ERROR:
            facts.update(code=self.error_code, detail=self.error_detail, retryable=self.retryable)
        return facts


@dataclass
class Done:
    message_id: int | None
    outcome: Outcome


@dataclass
class Failed:
    message_id: int | None  # None: refused before anything was stored
    code: str
    detail: str
    retryable: bool
    retry_after: float | None = None
    outcome: Outcome | None = None  # set when an answer was stored with this error
    limit: dict | None = None  # a limit reached (chat/quotas.py): {"name", "value"}
    http_status: int | None = None  # the error's PortalError.http_status, for the HTTP API

    @classmethod
    def from_error(cls, error, message_id: int | None = None) -> Failed:
        """From a chat.errors.PortalError: its code, sentence and whether Retry can help."""
        name = getattr(error, "limit", "")
        limit = {"name": name, "value": error.value} if name else None
        return cls(message_id, error.code, error.detail, error.retryable, error.retry_after, limit=limit, http_status=error.http_status)


Event = Started | Delta | Done | Failed


def final_event(message_id: int | None, outcome: Outcome) -> Done | Failed:
    """The last event of an answer, from its outcome (live, or as stored for a late reader)."""
    if outcome.status == ERROR:
        return Failed(message_id, outcome.error_code, outcome.error_detail, outcome.retryable, outcome.retry_after, outcome)
    return Done(message_id, outcome)
