"""The errors a person is told about, whichever door they came in by (page, API, command).

    PortalError                   .code, .detail (the sentence shown), .retryable, .retry_after,
    │                             .http_status (what the HTTP API answers with)
    ├── Unauthenticated           401 not logged in, or the session ended (log-out, password change)
    ├── BadFrame                  400 a websocket frame of the wrong shape
    ├── InvalidRequest            400 the request breaks a rule of chat/validation.py
    │   └── ModelNotAllowed       403 a model the person may not use (the same code for the page)
    ├── NotFound                  404 a conversation or answer that does not exist or is not yours
    ├── NotRunning                409 Stop or follow for an answer no process is generating any more
    ├── QuotaExceeded             429 a limit of chat/quotas.py is reached; retryable; .limit, .value
    │                             name it (code budget_exhausted for the monthly budget)
    ├── PortalUnavailable         503 a part of the portal (Redis, the database) cannot be reached
    ├── InternalError             500 a bug or an unexpected failure: "Something went wrong…"
    └── UpstreamError             502 the AI service failed (chat/upstream/errors.py draws its tree)

Every sentence a person reads lives on its class (or is passed in with the numbers that make it
precise); nothing else in the portal writes one. `retryable` says whether pressing Retry later can
help: the page shows a Retry button for it, and the answer stores it (Message.error_retryable) so
a reloaded page shows the same button.
"""

from __future__ import annotations


class PortalError(Exception):
    code = "portal_error"
    detail = "The request failed."
    retryable = False
    http_status = 500

    def __init__(self, detail: str | None = None, *, retry_after: float | None = None):
        super().__init__(detail or self.detail)
        if detail:
            self.detail = detail
        self.retry_after = retry_after


class Unauthenticated(PortalError):
    code = "unauthenticated"
    detail = "Your session has ended. Log in again to chat."
    http_status = 401


class BadFrame(PortalError):
    code = "bad_frame"
    detail = "That frame could not be read."
    http_status = 400


class InvalidRequest(PortalError):
    code = "invalid_request"
    detail = "The request is not valid."
    http_status = 400


class ModelNotAllowed(InvalidRequest):
    # The page shows it as any invalid request; the HTTP API answers 403, as OpenAI's clients expect.
    http_status = 403


class NotFound(PortalError):
    code = "not_found"
    detail = "That conversation does not exist or is not yours. Start a new chat."
    http_status = 404


class NotRunning(PortalError):
    code = "not_running"
    detail = "This answer is not being generated any more. Reload the page in a moment to see what was kept."
    http_status = 409


class QuotaExceeded(PortalError):
    code = "quota_exceeded"
    detail = "You have reached a limit. Please wait a little, then send again."
    retryable = True
    http_status = 429

    def __init__(self, detail: str | None = None, *, limit: str = "", value: int | None = None, retry_after: float | None = None):
        super().__init__(detail, retry_after=retry_after)
        self.limit, self.value = limit, value


class PortalUnavailable(PortalError):
    code = "internal_error"
    detail = "The portal cannot start answers right now. Please try again in a minute."
    retryable = True
    http_status = 503


class InternalError(PortalError):
    code = "internal_error"
    detail = "Something went wrong in the portal. Please try again."
    retryable = True
    http_status = 500
