"""The server's websocket frames, built from executor events (README.md, "Websocket protocol").

Shared by the consumer and by the answer bus, which forwards frames to a socket served by
another process.
"""

from __future__ import annotations

from chat.executor import Delta, Done, Failed, Started


def frame_for(event) -> dict:
    if isinstance(event, Delta):
        return {"type": "delta", "message": event.message_id, "seq": event.seq, "text": event.text}
    if isinstance(event, Started):
        return {
            "type": "started",
            "conversation": event.conversation_id,
            "message": event.message_id,
            "user_message": event.user_message_id,
            "request_id": event.request_id,
            "title": event.title,
        }
    if isinstance(event, Done):
        return {
            "type": "done",
            "message": event.message_id,
            "status": event.status,
            "finish_reason": event.finish_reason,
            "model": event.model_id,
            "usage": event.usage,
            "latency_ms": event.latency_ms,
            "ttft_ms": event.ttft_ms,
            "filters": event.filters,
        }
    if isinstance(event, Failed):
        return error_frame(event.code, event.detail, event.retryable, message=event.message_id, retry_after=event.retry_after)
    raise TypeError(f"unknown event {event!r}")


def error_frame(code, detail, retryable=False, *, message=None, retry_after=None) -> dict:
    frame = {"type": "error", "message": message, "code": code, "detail": detail, "retryable": retryable}
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame


def snapshot_frame(message_id: int, seq: int, text: str) -> dict:
    """The answer so far, for a socket that starts following it mid-way (then deltas after `seq`)."""
    return {"type": "snapshot", "message": message_id, "seq": seq, "text": text, "status": "streaming"}
