"""Fault directives: how a test or a person asks the emulator to misbehave.

A directive is ``[[emulator TOKEN TOKEN ...]]`` inside the last user message (so it can be typed
into the chat page) or the ``X-Emulator: TOKEN TOKEN ...`` header (so a client test need not
change the prompt). Tokens are ``name`` or ``name=value``; see ``Faults`` for the names.
Unknown names are an error rather than ignored, so a typo does not silently test nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

DIRECTIVE_RE = re.compile(r"\[\[\s*emulator\b([^\]]*)\]\]", re.IGNORECASE)

# Status codes a directive may ask for. The seed names 400/401/403/429/5xx.
FAULT_STATUSES = frozenset({400, 401, 403, 429, 500, 502, 503, 504})


class DirectiveError(ValueError):
    """A directive the emulator does not understand; answered with 400."""


@dataclass(frozen=True)
class Faults:
    """Parsed directive. ``directive`` is the normalised text, part of the fault-counter key."""

    directive: str = ""
    fault: int | None = None  # respond with this status instead of a completion
    retry_after: int | None = None  # Retry-After seconds on a 429
    times: int | None = None  # fault/expire_token only for the first N identical requests
    expire_token: bool = False  # revoke the bearer token and answer 401 (once by default)
    stall_first: float = 0.0  # seconds before the response headers
    stall_mid: float = 0.0  # seconds of silence after `after` content chunks
    after: int = 1
    drop_after: int | None = None  # abort the connection after N content chunks
    malformed: bool = False  # a broken SSE data line after 2 content chunks
    think: bool = False  # reply starts with a <think>...</think> block
    gen_error: bool = False  # [GENERATION_ERROR] marker and junk near the end
    tokens: int | None = None  # reply length in tokens
    ttft_ms: float | None = None
    rate: float | None = None  # tokens per second, 0 = as fast as possible
    chunk_tokens: int | None = None

    @property
    def active(self) -> bool:
        return bool(self.directive)


_FLAGS = {"expire_token", "malformed", "think", "gen_error"}
# name -> (converter, minimum, maximum)
_VALUES: dict[str, tuple[type, float, float]] = {
    "fault": (int, 100, 599),
    "retry_after": (int, 0, 86400),
    "times": (int, 0, 1_000_000),
    "stall_first": (float, 0, 3600),
    "stall_mid": (float, 0, 3600),
    "after": (int, 0, 1_000_000),
    "drop_after": (int, 0, 1_000_000),
    "tokens": (int, 1, 100_000),
    "ttft_ms": (float, 0, 3_600_000),
    "rate": (float, 0, 1_000_000),
    "chunk_tokens": (int, 1, 100_000),
}
_KNOWN = ", ".join(sorted(_FLAGS | set(_VALUES)))
assert _FLAGS | set(_VALUES) <= {f.name for f in fields(Faults)}


def split_directives(text: str) -> tuple[str, str]:
    """Return (directive tokens, text with every ``[[emulator ...]]`` removed).

    The cleaned text is what the reply is made from, so the echo never repeats the directive.
    """
    found = DIRECTIVE_RE.findall(text)
    if not found:
        return "", text
    cleaned = DIRECTIVE_RE.sub(" ", text)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip()
    return " ".join(part.strip() for part in found), cleaned


def parse_faults(*sources: str) -> Faults:
    """Parse directive token strings (header first, then message: later tokens win)."""
    words = " ".join(s for s in sources if s).split()
    if not words:
        return Faults()
    values: dict[str, object] = {}
    for word in words:
        name, has_value, raw = word.partition("=")
        name = name.lower()
        if name in _FLAGS:
            if has_value:
                raise DirectiveError(f"Emulator directive '{name}' takes no value.")
            values[name] = True
        elif name in _VALUES:
            values[name] = _convert(name, raw)
        else:
            raise DirectiveError(f"Unknown emulator directive '{word}'; known: {_KNOWN}.")
    fault = values.get("fault")
    if fault is not None and fault not in FAULT_STATUSES:
        allowed = ", ".join(str(s) for s in sorted(FAULT_STATUSES))
        raise DirectiveError(f"Emulator directive fault={fault} is not supported; use one of {allowed}.")
    return Faults(directive=" ".join(words), **values)  # type: ignore[arg-type]


def _convert(name: str, raw: str) -> int | float:
    kind, low, high = _VALUES[name]
    try:
        value = kind(raw)
    except ValueError:
        raise DirectiveError(f"Emulator directive '{name}' needs a {kind.__name__} value, got '{raw}'.") from None
    if not low <= value <= high:
        raise DirectiveError(f"Emulator directive '{name}' must be between {low:g} and {high:g}, got {raw}.")
    return value
