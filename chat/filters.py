"""Safety filters, applied to the answer while it streams.

Each filter sees the text in arbitrary pieces (tags may be split across network reads), so it
holds back only the few characters that could be the start of what it looks for, and releases
them as soon as they cannot be. A filter counts what it changed so the person reading the answer,
and the audit trail, can see it ("1 reasoning block removed").

    think_blocks       drops <think>…</think> reasoning blocks (seed step 1)
    generation_error   drops a [GENERATION_ERROR] marker and everything after it (seed step 2)
    list_markers       strips leading list markers from lines (seed step 3; opt-in, it breaks
                       markdown lists, so it is meant for automated use)
"""

from __future__ import annotations

import re


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


FILTERS = {cls.name: cls for cls in (ThinkBlocks, ErrorMarker, ListMarkers)}


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

    def report(self) -> list[dict]:
        return [{"filter": f.name, "count": f.count, "label": f.label()} for f in self.filters if f.count]
