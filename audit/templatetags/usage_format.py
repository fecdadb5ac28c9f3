"""Numbers for people on the analytics pages (1.2 k, 340 ms, 2.1 s, 2.5 %); the charts' axes say
the same in static/analytics/analytics.js. The CSV keeps the exact values."""

from __future__ import annotations

from django import template

register = template.Library()

NONE = "–"


@register.filter
def compact(value) -> str:
    """12 → 12, 1234 → 1.2 k, 56789 → 57 k, 3456789 → 3.5 M."""
    if value is None:
        return NONE
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            scaled = value / size
            return f"{scaled:.1f} {unit}" if abs(scaled) < 10 else f"{scaled:.0f} {unit}"
    return f"{value:.0f}" if isinstance(value, float) else str(value)


@register.filter
def count(value) -> str:
    """Exact, with thousands separators: 12,345."""
    return NONE if value is None else f"{value:,}"


@register.filter
def duration(ms) -> str:
    """Milliseconds for people: 340 ms, 2.1 s, 14 s, 2.5 min."""
    if ms is None:
        return NONE
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 10_000:
        return f"{ms / 1000:.1f} s"
    if ms < 60_000:
        return f"{ms / 1000:.0f} s"
    return f"{ms / 60_000:.1f} min"


@register.filter
def percent(rate) -> str:
    """A fraction as a percentage: 0.025 → 2.5 %; a small non-zero rate is not shown as 0."""
    if rate is None:
        return NONE
    if 0 < rate < 0.001:
        return "< 0.1 %"
    return f"{rate * 100:.1f} %"


@register.filter
def rate(value) -> str:
    """Tokens per second: 42 /s."""
    return NONE if value is None else f"{value:.0f} /s"
