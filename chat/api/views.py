"""The API for programs: `POST /v1/chat/completions` and `GET /v1/models`, in OpenAI's shapes.

A thin caller of the executor (docs/ARCHITECTURE.md, "One API request"): authenticate the key,
read the request, run `ChatExecutor().stream()` with the key's person and team (sse.py), and
write its events back as one JSON body or as SSE chunks. Every rule (limits, validation, filters,
audit, usage, webhooks) is the executor's; nothing here repeats one.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from chat.actions import run_in_thread
from chat.completion import API, CompletionRequest, Done, Failed, Started
from chat.errors import InvalidRequest, PortalError

from . import keys, shapes
from .sse import ChunkStream, Completion, read_until_text, status_of


def error_response(sentence: str, status: int, code: str, *, param: str | None = None, retry_after: float | None = None) -> JsonResponse:
    response = JsonResponse(shapes.error_body(sentence, status, code, param), status=status)
    if status == 429 or (status == 503 and retry_after):
        response["Retry-After"] = shapes.retry_after_header(retry_after)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="gateway-portal"'
    return response


def _failure(failed: Failed) -> JsonResponse:
    status = status_of(failed)
    code = "model_not_allowed" if status == 403 else failed.code
    return error_response(failed.detail, status, code, param="model" if status == 403 else None, retry_after=failed.retry_after)


def _refusal(error: PortalError) -> JsonResponse:
    return error_response(str(error), error.http_status, error.code, param=getattr(error, "param", None), retry_after=error.retry_after)


async def _key(request):
    return await run_in_thread(keys.authenticate)(request.headers.get("Authorization", ""))


@csrf_exempt
async def chat_completions(request):
    if request.method != "POST":
        return error_response("Use POST for /v1/chat/completions.", 405, "method_not_allowed")
    try:
        key = await _key(request)
        wanted = shapes.parse_chat_request(request.body)
    except PortalError as exc:
        return _refusal(exc)
    except RequestDataTooBig:
        return error_response(f"The request is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes.", 413, "request_too_large")
    completion = Completion(
        CompletionRequest(
            user=key.user, team=key.team, messages=wanted.messages, model_id=wanted.model,
            temperature=wanted.temperature, max_tokens=wanted.max_tokens, client=API, api_key=key.label,
        )
    )
    try:
        if wanted.stream:
            read, failed = await read_until_text(completion)
            if failed is not None:
                return _failure(failed)
            started = read[0] if read and isinstance(read[0], Started) else None
            completion_id = _completion_id(started)
            body = ChunkStream(completion, shapes.Chunks(completion_id, wanted.model, wanted.include_usage), read[1:] if started else read)
            response = StreamingHttpResponse(body, content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Request-Id"] = started.request_id if started else ""
            return response
        started = None
        while (event := await completion.next()) is not None:
            if isinstance(event, Started):
                started = event
            elif isinstance(event, Failed):
                return _failure(event)
            elif isinstance(event, Done):
                response = JsonResponse(shapes.completion_body(_completion_id(started), wanted.model, event.outcome))
                response["X-Request-Id"] = started.request_id if started else ""
                return response
        return _refusal(InvalidRequest("The completion ended without an answer."))  # not reached: the executor always ends with Done or Failed
    except BaseException:
        completion.cancel()  # the client went away (Django cancels this view): so does the answer
        raise


def _completion_id(started: Started | None) -> str:
    # The executor's request id: the same as the audit entry's, so a program's log and the trail meet.
    return "chatcmpl-" + (started.request_id if started else "unknown")


@csrf_exempt
async def models(request):
    if request.method != "GET":
        return error_response("Use GET for /v1/models.", 405, "method_not_allowed")
    try:
        await _key(request)
    except PortalError as exc:
        return _refusal(exc)
    # For now every model of PORTAL_MODELS, for every key (per-team models come with the models
    # the admin configures).
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "gateway-portal"} for name in settings.PORTAL_MODELS]
    return JsonResponse({"object": "list", "data": data})


def not_found(request, rest=""):
    return error_response(f"There is no API endpoint /v1/{rest}.", 404, "not_found")


