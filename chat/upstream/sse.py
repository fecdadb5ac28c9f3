"""Incremental Server-Sent Events decoding for the completion stream.

We decode ourselves instead of iterating line by line (as httpx-sse does) because the executor
coalesces by network read: one `feed()` per read returns every complete event in it, so a burst of
tokens that arrived together is relayed as one delta, without a timer and without added latency.
Handles events and UTF-8 characters split across reads, CRLF/CR/LF line endings, comments and
multi-line data fields (joined with "\n", as the SSE specification says).
"""

import codecs


class SSEDecoder:
    def __init__(self):
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""

    def feed(self, chunk: bytes) -> list[str]:
        """Return the data of every event completed by this chunk, in order."""
        text = self._utf8.decode(chunk)
        if not text:
            return []
        buffer = self._buffer + text
        if "\r" in buffer:
            # A lone trailing CR may be the first half of a CRLF still in flight.
            keep_cr = buffer.endswith("\r")
            buffer = buffer.replace("\r\n", "\n").replace("\r", "\n")
            if keep_cr:
                buffer = buffer[:-1] + "\r"
        if "\n\n" not in buffer:
            self._buffer = buffer
            return []
        *blocks, self._buffer = buffer.split("\n\n")
        events = []
        for block in blocks:
            data = _event_data(block)
            if data is not None:
                events.append(data)
        return events

    def flush(self) -> list[str]:
        """The last event, when the stream ended without its blank line."""
        rest = (self._buffer + self._utf8.decode(b"", final=True)).replace("\r", "")
        self._buffer = ""
        data = _event_data(rest) if rest.strip() else None
        return [data] if data is not None else []


def _event_data(block: str) -> str | None:
    if block.startswith("data: ") and "\n" not in block:
        return block[6:]  # the common case: one data line
    lines = []
    for line in block.split("\n"):
        if line.startswith("data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(" ") else value)
    return "\n".join(lines) if lines else None
