"""Summary statistics for the benchmark: min, nearest-rank p50/p95/p99, max.

Nearest rank (the smallest sample with at least p% of the samples at or below it) is used because
it always reports a value that was actually measured, and it is simple to check by hand.
Imported by the load client, so it must stay free of Django.
"""

from __future__ import annotations

import math

PERCENTILES = (50, 95, 99)


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(samples: list[float]) -> dict:
    """{"n", "min", "p50", "p95", "p99", "max"}; the values are None when there are no samples."""
    ordered = sorted(samples)
    summary = {"n": len(ordered), "min": ordered[0] if ordered else None}
    for p in PERCENTILES:
        summary[f"p{p}"] = percentile(ordered, p)
    summary["max"] = ordered[-1] if ordered else None
    return summary


def difference(a: dict, b: dict) -> dict:
    """a - b for each percentile present in both summaries (the portal's overhead over direct)."""
    return {
        key: (a[key] - b[key]) if a.get(key) is not None and b.get(key) is not None else None
        for key in ("p50", "p95", "p99")
    }
