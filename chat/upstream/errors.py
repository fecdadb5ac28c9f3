"""The errors an upstream completion can end with, and what each means for the person waiting.

These are the upstream branch of the portal's error tree (chat/errors.py: PortalError, with
.code, .detail, .retryable, .retry_after and .http_status, the status the HTTP API answers with).

    UpstreamError                 every failure of the upstream path (502); .status: what the upstream said
    ├── UpstreamRejected          400: the request itself is wrong (schema, token limit, model id); no retry (400)
    ├── UpstreamForbidden         403: missing scope or AI Gateway not enabled; no retry, an admin must act (502)
    ├── UpstreamAuthFailed        401 after one token refresh, or the token endpoint refused our credentials (502)
    ├── UpstreamRateLimited       429 beyond our attempts or deadline; .retry_after when the upstream said (429)
    ├── UpstreamUnavailable       5xx, refused or dropped connections, beyond our attempts or deadline (503)
    │   └── UpstreamTimeout       no answer within the connect/read timeout or the total deadline (504)
    └── UpstreamInterrupted       the stream broke after text had reached the user: never retried, since
                                  a second answer would repeat or contradict what they already read (502)

`retryable` says whether pressing Retry later can help; it is what the browser shows a Retry button for.
httpx's own exceptions are translated into these in exactly one place (chat/upstream/genesys.py).
"""

from chat.errors import PortalError


class UpstreamError(PortalError):
    code = "upstream_error"
    retryable = False
    detail = "The AI service failed. Please try again later."
    http_status = 502

    def __init__(self, detail: str | None = None, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(detail, retry_after=retry_after)
        self.status = status


class UpstreamRejected(UpstreamError):
    code = "upstream_rejected"
    http_status = 400
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
    http_status = 429
    detail = "The AI service is busy. Please try again in a little while."

    def __init__(self, detail: str | None = None, *, status: int | None = 429, retry_after: float | None = None):
        if detail is None and retry_after:
            detail = f"The AI service is busy; try again in {int(round(retry_after))} s."
        super().__init__(detail, status=status, retry_after=retry_after)


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"
    retryable = True
    http_status = 503
    detail = "The AI service is unavailable right now. Please try again in a minute."


class UpstreamTimeout(UpstreamUnavailable):
    code = "upstream_timeout"
    http_status = 504
    detail = "The AI service did not answer in time. Please try again."


class UpstreamInterrupted(UpstreamError):
    code = "upstream_interrupted"
    retryable = True
    detail = "The answer was cut off because the connection to the AI service broke. The part above is kept; press Retry to ask again."

