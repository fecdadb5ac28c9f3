"""The errors an upstream completion can end with, and what each means for the person waiting.

    UpstreamError                 every failure of the upstream path; .code, .detail, .retryable
    ├── UpstreamRejected          400: the request itself is wrong (schema, token limit, model id); no retry
    ├── UpstreamForbidden         403: missing scope or AI Gateway not enabled; no retry, an admin must act
    ├── UpstreamAuthFailed        401 after one token refresh, or the token endpoint refused our credentials
    ├── UpstreamRateLimited       429 beyond our attempts or deadline; .retry_after when the upstream said
    ├── UpstreamUnavailable       5xx, refused or dropped connections, beyond our attempts or deadline
    │   └── UpstreamTimeout       no answer within the connect/read timeout or the total deadline
    └── UpstreamInterrupted       the stream broke after text had reached the user: never retried, since
                                  a second answer would repeat or contradict what they already read

`retryable` says whether pressing Retry later can help; it is what the browser shows a Retry button for.
httpx's own exceptions are translated into these in exactly one place (chat/upstream/genesys.py).
"""


class UpstreamError(Exception):
    code = "upstream_error"
    retryable = False
    detail = "The AI service failed. Please try again later."

    def __init__(self, detail: str | None = None, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(detail or self.detail)
        if detail:
            self.detail = detail
        self.status = status
        self.retry_after = retry_after


class UpstreamRejected(UpstreamError):
    code = "upstream_rejected"
    detail = "The AI service rejected the request. Shorten the conversation or pick another model."


class UpstreamForbidden(UpstreamError):
    code = "upstream_forbidden"
    detail = (
        "The AI service refused this portal: the AI Gateway may not be enabled for the organization, "
        "or the OAuth client lacks the ai:generation:write scope. Please tell an administrator."
    )


class UpstreamAuthFailed(UpstreamError):
    code = "upstream_auth_failed"
    detail = (
        "The portal could not sign in to the AI service. Please tell an administrator to check "
        "the Genesys client credentials."
    )


class UpstreamRateLimited(UpstreamError):
    code = "rate_limited"
    retryable = True
    detail = "The AI service is busy. Please try again in a little while."

    def __init__(self, detail: str | None = None, *, status: int | None = 429, retry_after: float | None = None):
        if detail is None and retry_after:
            detail = f"The AI service is busy; try again in {int(round(retry_after))} s."
        super().__init__(detail, status=status, retry_after=retry_after)


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"
    retryable = True
    detail = "The AI service is unavailable right now. Please try again in a minute."


class UpstreamTimeout(UpstreamUnavailable):
    code = "upstream_timeout"
    detail = "The AI service did not answer in time. Please try again."


class UpstreamInterrupted(UpstreamError):
    code = "upstream_interrupted"
    retryable = True
    detail = "The answer was cut off because the connection to the AI service broke. The part above is kept; press Retry to ask again."


def _all(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all(sub)


RETRYABLE_CODES = frozenset(cls.code for cls in _all(UpstreamError) if cls.retryable)
