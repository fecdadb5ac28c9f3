"""The benchmark runs end to end (`manage.py bench --quick`) and writes its report.

A smoke test only: it asserts that every part starts, talks and stops, and that the report has
its sections — never a timing (speed goals live in the bench's report, not in tests). The bench
runs as its own process with the normal settings (not pytest-django's test database), as a
person would run it; its bench users are reused between runs.
"""

import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent

HEADINGS = [
    "# Benchmarks",
    "## Machine",
    "## How it is measured",
    "## How to reproduce",
    "## Against the targets",
    "## Scenario 1 — chat-shaped TTFT overhead",
    "## Scenario 2 — cost per completion and saturation",
    "## Scenario 3 — 50 concurrent streams on one process",
    "## Scenario 4 — relay throughput",
    "## Scenario 5 — database work per completion",
    "## Scenario 6 — pages at scale",
]


def test_quick_bench_runs_every_scenario_and_writes_the_report(tmp_path):
    output = tmp_path / "B.md"
    result = subprocess.run(
        [sys.executable, "manage.py", "bench", "--quick", "--output", str(output)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, f"bench failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    report = output.read_text()
    for heading in HEADINGS:
        assert heading in report, f"the report lacks {heading!r}"
    assert "failed:" not in report
    assert "| portal API (/v1, HTTP SSE) |" in report  # scenarios 1 and 2 drive the API too
    # Both paths of a scenario ran and were reported side by side.
    assert "| 1 | portal |" in report and "| 1 | direct |" in report
