"""The server's websocket frames, built from executor events (README.md, "Websocket protocol").

Shared by the consumer and by the answer bus, which forwards frames to a socket served by
another process. The facts of a finished answer are named once, by `Outcome.to_dict()`
(chat/completion.py), for the live frames and for a stored answer (`Message.to_dict()`).
"""

from __future__ import annotations

from chat.completion import ERROR, Delta, Done, Failed, Started


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
            **({"left_out": event.left_out} if event.left_out else {}),
        }
    if isinstance(event, Done):
        return {"type": "done", "message": event.message_id, **event.outcome.to_dict()}
    if isinstance(event, Failed):
        frame = error_frame(event.code, event.detail, event.retryable, message=event.message_id, retry_after=event.retry_after)
        if event.limit is not None:
            frame["limit"] = event.limit
        if event.outcome is not None:
            frame = {**event.outcome.to_dict(), **frame}
        return frame
    raise TypeError(f"unknown event {event!r}")


def error_frame(code, detail, retryable=False, *, message=None, retry_after=None) -> dict:
    frame = {"type": "error", "message": message, "code": code, "detail": detail, "retryable": retryable}
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame


def stored_final_frame(answer: dict) -> dict:
    """The last frame of an answer that has already ended, from `Message.to_dict()`, with its text
    (a reader who arrives after the end has seen none of it)."""
    facts = dict(answer)
    message_id = facts.pop("id")
    facts.pop("role", None)
    return {"type": "error" if facts["status"] == ERROR else "done", "message": message_id, **facts}


def snapshot_frame(message_id: int, seq: int, text: str) -> dict:
    """The answer so far, for a socket that starts following it mid-way (then deltas after `seq`)."""
    return {"type": "snapshot", "message": message_id, "seq": seq, "text": text, "status": "streaming"}
