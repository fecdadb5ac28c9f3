"""Safety filters, applied to the answer while it streams.

Each filter sees the text in arbitrary pieces (tags may be split across network reads), so it
holds back only the few characters that could be the start of what it looks for, and releases
them as soon as they cannot be. A filter counts what it changed so the person reading the answer,
and the audit trail, can see it ("1 reasoning block removed").

    think_blocks       drops <think>…</think> reasoning blocks (seed step 1)
    generation_error   drops a [GENERATION_ERROR] marker and everything after it (seed step 2)
    list_markers       strips leading list markers from lines (seed step 3; opt-in, it breaks
                       markdown lists, so it is meant for automated use)
    email, phone, card, iban, patterns   PII redaction (chat/pii.py)

Which filters run: the team's own list (Team.safety_filters) if it has one, else
PORTAL_SAFETY_FILTERS. The PII ones may also screen the question (PORTAL_PROMPT_FILTER).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError

from chat.errors import InvalidRequest
from chat.pii import REDACTIONS


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ThinkBlocks:
    name = "think_blocks"
    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self):
        self.count = 0
        self._inside = False
        self._held = ""

    def feed(self, text: str) -> str:
        text = self._held + text
        self._held = ""
        out = []
        while text:
            if self._inside:
                end = text.find(self.CLOSE)
                if end < 0:
                    keep = _partial_suffix(text, self.CLOSE)
                    self._held = text[len(text) - keep:] if keep else ""
                    return "".join(out)
                text = text[end + len(self.CLOSE):]
                self._inside = False
            else:
                start = text.find(self.OPEN)
                if start < 0:
                    keep = _partial_suffix(text, self.OPEN)
                    out.append(text[: len(text) - keep])
                    self._held = text[len(text) - keep:] if keep else ""
                    break
                out.append(text[:start])
                text = text[start + len(self.OPEN):]
                self._inside = True
                self.count += 1
        return "".join(out)

    def finish(self) -> str:
        # An unclosed block is still reasoning, not answer; a held partial "<thi" is answer text.
        held, self._held = self._held, ""
        return "" if self._inside else held

    def label(self) -> str:
        return f"{self.count} reasoning block{'s' if self.count != 1 else ''} removed"


class ErrorMarker:
    name = "generation_error"
    MARKER = "[GENERATION_ERROR]"

    def __init__(self):
        self.count = 0
        self._held = ""

    def feed(self, text: str) -> str:
        if self.count:
            return ""
        text = self._held + text
        self._held = ""
        at = text.find(self.MARKER)
        if at >= 0:
            self.count = 1
            return text[:at]
        keep = _partial_suffix(text, self.MARKER)
        if keep:
            self._held = text[-keep:]
            return text[:-keep]
        return text

    def finish(self) -> str:
        held, self._held = self._held, ""
        return "" if self.count else held

    def label(self) -> str:
        return "generation error marker and the text after it removed"


class ListMarkers:
    name = "list_markers"
    _marker = re.compile(r"^[ \t]*(?:[-*+•]|\d+[.)])[ \t]+")

    def __init__(self):
        self.count = 0
        self._at_line_start = True
        self._line = ""  # the start of the current line, held until we know whether it is a marker

    def feed(self, text: str) -> str:
        out = []
        parts = text.split("\n")
        for i, part in enumerate(parts):
            if i:
                out.append("\n")
                self._at_line_start = True
            if not self._at_line_start:
                out.append(part)
                continue
            self._line += part
            line_complete = i < len(parts) - 1
            if line_complete or not _could_still_be_marker(self._line):
                out.append(self._strip(self._line))
                self._line = ""
                self._at_line_start = False
        return "".join(out)

    def _strip(self, line: str) -> str:
        stripped, n = self._marker.subn("", line, count=1)
        self.count += n
        return stripped

    def finish(self) -> str:
        line, self._line = self._line, ""
        return self._strip(line)

    def label(self) -> str:
        return f"{self.count} list marker{'s' if self.count != 1 else ''} removed"


def _could_still_be_marker(line: str) -> bool:
    return bool(re.fullmatch(r"[ \t]*(?:[-*+•]|\d+[.)]?)?", line))


FILTERS = {cls.name: cls for cls in (ThinkBlocks, ErrorMarker, ListMarkers, *REDACTIONS)}
PII = [cls.name for cls in REDACTIONS]


def filter_names(team) -> list[str]:
    """The filters a team's answers go through: its own list, else the portal's."""
    return list(getattr(team, "safety_filters", None) or settings.PORTAL_SAFETY_FILTERS)


def validate_filter_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in FILTERS]
    if unknown:
        raise ValidationError(f"“{'”, “'.join(unknown)}” is no filter; the filters are {', '.join(FILTERS)}.")


class SafetyPipeline:
    """The configured filters in order; feed() and finish() return text that is safe to relay."""

    def __init__(self, names: list[str]):
        unknown = [n for n in names if n not in FILTERS]
        if unknown:
            raise ValueError(f"Unknown safety filter(s) in PORTAL_SAFETY_FILTERS: {', '.join(unknown)}")
        self.filters = [FILTERS[n]() for n in names]

    def feed(self, text: str) -> str:
        for f in self.filters:
            text = f.feed(text)
            if not text:
                return ""
        return text

    def finish(self) -> str:
        text = ""
        for f in self.filters:
            text = f.feed(text) + f.finish() if text else f.finish()
        return text

    def changed(self) -> bool:
        return any(f.count for f in self.filters)

    def report(self) -> list[dict]:
        return [{"filter": f.name, "count": f.count, "label": f.label()} for f in self.filters if f.count]


def screen_prompt(messages: list[dict], names: list[str]) -> list[dict]:
    """PORTAL_PROMPT_FILTER on the newest question, before it goes upstream: `refuse` names what
    was found (never the data itself), `redact` sends and stores it redacted, `off` leaves it."""
    mode = settings.PORTAL_PROMPT_FILTER
    pii = [n for n in names if n in PII]
    if mode == "off" or not pii or not messages:
        return messages
    pipeline = SafetyPipeline(pii)
    question = messages[-1]["content"]
    redacted = pipeline.feed(question) + pipeline.finish()
    if not pipeline.changed():
        return messages
    if mode == "refuse":
        found = " and ".join(
            f"{f.count} {f.noun[1]}" if f.count > 1 else f"{'an' if f.noun[0][0] in 'aeiouI' else 'a'} {f.noun[0]}"
            for f in pipeline.filters
            if f.count
        )
        raise InvalidRequest(
            f"Your message contains {found}, which this portal does not send to the model. "
            "Remove it and send your message again."
        )
    return messages[:-1] + [{**messages[-1], "content": redacted}]

