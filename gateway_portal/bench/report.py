"""The bench's output: docs/BENCHMARKS.md (and the same tables on the console).

The report states where the figures come from (machine, versions, date, exact commands) and what
they can and cannot say: one run on a shared 2-core box, the load client on the same cores.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from django.conf import settings

from gateway_portal.bench.processes import BENCH_QUOTA

TARGETS = {
    "s1_p50": 3.0, "s1_p99": 20.0, "s1_n1": 3.0, "cpu_ms": 10.0, "litellm_factor": 10,
    "litellm_rate_earlier": 25.0, "sockets": 2000, "tokens_per_s": 50_000, "statements": 8,
    "page_ms": 300.0, "page_rows": 1_000_000,
}


@dataclass
class RunInfo:
    command: str
    quick: bool
    started: datetime
    finished: datetime | None = None
    portal_command: str = ""
    portal_workers: int = 1
    litellm_commands: list[str] = field(default_factory=list)
    litellm_version: str = ""
    loadavg_before: str = ""
    database: str = ""


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    return {
        "cpu": cpu, "nproc": os.cpu_count(), "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "versions": ", ".join(f"{name} {_version(name)}" for name in ("Django", "channels", "daphne", "Twisted", "httpx", "websockets")),
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


# --- formatting -----------------------------------------------------------------------------------


def num(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def mib(value) -> str:
    return "–" if value is None else f"{value / 1024 / 1024:,.1f} MiB"


def kib(value) -> str:
    return "–" if value is None else f"{value / 1024:,.1f} KiB"


def errors_text(figures: dict) -> str:
    errors = figures.get("errors") or {}
    return ", ".join(f"{code} {count}" for code, count in sorted(errors.items())) or "0"


def table(headers: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


# --- sections -------------------------------------------------------------------------------------


def build(results: dict, info: RunInfo) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Figures from one {'quick (smoke-test) ' if info.quick else ''}run of `python manage.py bench` on "
        f"{info.started:%Y-%m-%d %H:%M} UTC"
        + (f" ({(info.finished - info.started).total_seconds() / 60:.1f} minutes)." if info.finished else "."),
        "Regenerate this file with the commands under *How to reproduce*; it is written by the bench.",
        "",
    ]
    lines += machine_section(info)
    lines += method_section(info)
    lines += reproduce_section(info)
    lines += targets_section(results)
    sections = {1: scenario1, 2: scenario2, 3: scenario3, 4: scenario4, 5: scenario5, 6: scenario6}
    for number, section in sections.items():
        if number in results:
            lines += section(results[number])
    if results.get("litellm"):
        lines += scenario7(results)
    return "\n".join(lines) + "\n"


def machine_section(info: RunInfo) -> list[str]:
    m = machine()
    rows = [
        ["CPU", f"{m['cpu']}, nproc {m['nproc']}"],
        ["Memory", m["memory"]],
        ["OS", m["os"]],
        ["Python", m["python"]],
        ["Packages", m["versions"]],
        ["Database", info.database],
        ["Load average before the run", info.loadavg_before],
    ]
    if info.litellm_version:
        rows.append(["LiteLLM", info.litellm_version])
    return ["## Machine", "", *table(["", ""], rows), ""]


def method_section(info: RunInfo) -> list[str]:
    return [
        "## How it is measured",
        "",
        "- **A shared, noisy 2-core box.** Every figure comes from one run; read medians and ratios, "
        "not single milliseconds. The load client, the portal, the emulator and Postgres all share the "
        "same 2 cores, so at high load they slow each other down; the *client cores* and *other cores* "
        "columns say how much CPU the load client and everything outside the bench used in the window.",
        "- **Real processes, real sockets.** The portal runs as its own process (`manage.py runportal`, "
        "Daphne, `DEBUG` off) against the bench's emulator process; the load client is a third process "
        "(`python -m gateway_portal.bench.load`, no Django) with logged-in sessions (`sessionid` cookie, "
        "`Origin` header) on `/ws/chat/`.",
        f"- **Quotas raised for bench users** by `PORTAL_MAX_CONCURRENT_PER_USER={BENCH_QUOTA}` on the "
        "portal process: a few bench users stand in for many people.",
        "- **Every figure is a difference or a ratio measured in the same run.** Each load also runs "
        "straight against the emulator's Genesys SSE endpoint (token from `/oauth/token`), with the "
        "same `[[emulator …]]` pacing directive in the prompt.",
        "- **TTFT** through the portal: *send* frame written → first `delta` frame read. Direct: request "
        "written → first SSE content event read. **Overhead** = portal percentile − direct percentile.",
        "- **Closed loop**: each client sends its next request as soon as its stream ends. The clients' "
        "first requests are spread evenly over one reply's duration (clients started together stay in "
        "lock-step and every reply becomes a burst of N simultaneous requests). After a warm-up, a window "
        "is measured; completions and tokens are those that ended in the window, TTFT samples those of "
        "requests sent in it.",
        "- **CPU** is utime+stime of the process from `/proc/<pid>/stat` over the same window, divided "
        "by the completions (or tokens) in it; **memory** is `VmRSS` from `/proc/<pid>/status`. "
        "*Postgres ms/compl.* is the embedded Postgres' CPU over the window per completion (other "
        "databases on that server count too).",
        "- **Percentiles** are nearest-rank (min / p50 / p95 / p99 / max); *n* is the number of samples.",
        "",
    ]


def reproduce_section(info: RunInfo) -> list[str]:
    lines = [
        "## How to reproduce",
        "",
        "```sh",
        "python manage.py bench                      # all scenarios (about 10 minutes)",
        "python manage.py bench --litellm            # plus LiteLLM's proxy side by side (its venv in .bench/)",
        "python manage.py bench --quick --output /tmp/BENCH.md   # the smoke test CI runs (under 2 minutes)",
        "python manage.py bench --scenarios 1,2 --sizes '1=1,50;2=1,10' --duration 10",
        "```",
        "",
        f"This run: `{info.command}`",
        "",
        ("Portal processes (runportal and its workers; CPU figures are their sum): " if info.portal_workers > 1
         else "Portal process: ") +
        f"`PORTAL_MAX_CONCURRENT_PER_USER={BENCH_QUOTA} DEBUG=false "
        f"{info.portal_command}`",
    ]
    for command in info.litellm_commands:
        lines.append(f"LiteLLM: `LITELLM_MASTER_KEY=sk-bench LITELLM_LOCAL_MODEL_COST_MAP=True {command}`")
    lines += ["", "Logs of the last run: `.bench/portal.log`, `.bench/litellm-*.log`; raw figures: `.bench/last-run.json`.", ""]
    return lines


def targets_section(results: dict) -> list[str]:
    rows = []
    if 1 in results:
        rows += targets_s1(results[1])
    if 2 in results:
        rows += targets_s2(results[2], results.get("litellm_rate"))
    if 3 in results:
        s3 = results[3]["paths"].get("portal", {})
        ok = s3.get("open_streams") == results[3]["sockets"] and errors_text(s3) == "0"
        gap_p99 = (s3.get("gap_ms") or {}).get("p99")
        rows.append([f"{results[3]['sockets']:,} concurrent streams on one process, 0 errors",
                     f"{num(s3.get('open_streams'))} open at once, errors: {errors_text(s3)}; "
                     f"gap between deltas p99 {num(gap_p99)} ms (200 ms expected)",
                     verdict(ok if results[3]["sockets"] >= TARGETS["sockets"] else None)])
    if 4 in results:
        for row in results[4]["rows"]:
            rate = row["paths"]["portal"].get("tokens_per_s")
            rows.append([f"≥ 50,000 relayed tokens/s per process (chunks of {row['chunk_tokens']} token(s))",
                         f"{num(rate, 0)} tokens/s", verdict(rate is not None and rate >= TARGETS["tokens_per_s"])])
    if 5 in results:
        counts = [run["statements"] for row in results[5]["rows"] for run in row["runs"]]
        ok = bool(counts) and len(set(counts)) == 1 and max(counts) <= TARGETS["statements"]
        rows.append(["Constant SQL statements per completion, at most 8",
                     f"{', '.join(str(c) for c in sorted(set(counts)))} for every reply length", verdict(ok)])
    if 6 in results and "failed" not in results[6]:
        s6 = results[6]
        at_scale = s6["rows"] >= TARGETS["page_rows"]
        for kind, target in (("admin", "Audit admin lists"), ("analytics", "A member's analytics (busiest person, 30 days)"),
                             ("analytics team", "A team admin's analytics (busiest team, 30 days)"),
                             ("analytics everyone", "An officer's analytics (everyone, 30 days)")):
            timed = [page["p50"] for page in s6["pages"] if page.get("kind", "admin") == kind]
            if not timed:
                continue
            worst = max(timed)
            rows.append([f"{target} ≤ 300 ms server time at {TARGETS['page_rows']:,} rows",
                         f"{s6['rows']:,} rows: slowest page p50 {num(worst)} ms",
                         verdict(worst <= TARGETS["page_ms"] if at_scale else None)])
    if not rows:
        return []
    return ["## Against the targets", "", *table(["Target", "Measured", ""], rows), ""]


def targets_s1(s1: dict) -> list[list]:
    rows = []
    by_n = {row["n"]: row["paths"].get("portal", {}).get("overhead_ms", {}) for row in s1["rows"]}
    largest = max(by_n) if by_n else None
    if 1 in by_n:
        p50 = by_n[1].get("p50")
        rows.append(["Scenario 1: overhead ≤ 3 ms at N = 1 (p50)",
                     f"p50 {num(p50)} ms, p99 {num(by_n[1].get('p99'))} ms", verdict(p50 is not None and p50 <= TARGETS["s1_n1"])])
    if largest and largest > 1:
        o = by_n[largest]
        ok = o.get("p50") is not None and o["p50"] <= TARGETS["s1_p50"] and o.get("p99") is not None and o["p99"] <= TARGETS["s1_p99"]
        rows.append([f"Scenario 1: overhead p50 ≤ 3 ms and p99 ≤ 20 ms at N = 200",
                     f"N = {largest}: p50 {num(o.get('p50'))} ms, p99 {num(o.get('p99'))} ms",
                     verdict(ok if largest >= 200 else None)])
    return rows


def saturation(s2: dict, path: str) -> dict:
    """A path's saturation rate: completions/s at the first N whose overhead p99 passed the limit.

    When the limit was never passed, the rate at the largest N is a lower bound (`saturated`
    False). `cpu_ms` is the CPU per completion at that point, the busiest one measured.
    """
    rows = [(row["n"], row["paths"][path]) for row in s2["rows"] if path in row["paths"]]
    if not rows:
        return {}
    for n, figures in rows:
        p99 = (figures.get("overhead_ms") or {}).get("p99")
        if p99 is not None and p99 > s2["limit_ms"]:
            return {"n": n, "rate": figures.get("completions_per_s"), "saturated": True,
                    "cpu_ms": figures.get("cpu_ms_per_completion")}
    n, figures = rows[-1]
    return {"n": n, "rate": figures.get("completions_per_s"), "saturated": False,
            "cpu_ms": figures.get("cpu_ms_per_completion")}


def saturation_text(sat: dict, limit_ms: float) -> str:
    if not sat:
        return "–"
    if sat["saturated"]:
        return f"{num(sat['rate'])} completions/s at N = {sat['n']}, where the overhead p99 passed {limit_ms} ms"
    return f"≥ {num(sat['rate'])} completions/s (overhead p99 still ≤ {limit_ms} ms at the largest N, {sat['n']})"


def targets_s2(s2: dict, litellm_rate: float | None) -> list[list]:
    sat = saturation(s2, "portal")
    cpus = [row["paths"]["portal"].get("cpu_ms_per_completion") for row in s2["rows"] if "portal" in row["paths"]]
    cpus = [c for c in cpus if c is not None]
    cpu = sat.get("cpu_ms")
    rows = [["Scenario 2: ≤ 10 ms portal CPU per short completion (DB writes included)",
             f"{num(cpu, 2)} ms at N = {sat.get('n', '–')} (from {num(min(cpus), 2) if cpus else '–'} to "
             f"{num(max(cpus), 2) if cpus else '–'} ms over the N measured)",
             verdict(cpu is not None and cpu <= TARGETS["cpu_ms"])]]
    reference = litellm_rate or TARGETS["litellm_rate_earlier"]
    source = "LiteLLM 1 worker, this run" if litellm_rate else "LiteLLM 1 worker measured earlier on this machine"
    wanted = TARGETS["litellm_factor"] * reference
    rate = sat.get("rate")
    rows.append([f"Scenario 2: ≥ 10× LiteLLM's single-worker saturation rate ({source}: {num(reference)}/s → {num(wanted)}/s)",
                 saturation_text(sat, s2["limit_ms"]), verdict(rate is not None and rate >= wanted)])
    return rows


def path_label(path: str) -> str:
    if path == "api":
        return "portal API (/v1, HTTP SSE)"
    if path.startswith("litellm-"):
        workers = path.split("-", 1)[1]
        return f"LiteLLM ({workers} worker{'s' if workers != '1' else ''})"
    return path


def scenario1(s1: dict) -> list[str]:
    rows = []
    for row in s1["rows"]:
        for path, f in row["paths"].items():
            t, o = f.get("ttft_ms") or {}, f.get("overhead_ms") or {}
            rows.append([row["n"], path_label(path), t.get("n"), num(t.get("min")), num(t.get("p50")), num(t.get("p95")),
                         num(t.get("p99")), num(t.get("max")), num(o.get("p50")), num(o.get("p95")), num(o.get("p99")),
                         num(f.get("cores"), 2), num(f.get("client_cores"), 2), num(f.get("other_cores"), 2), errors_text(f)])
    return [
        "## Scenario 1 — chat-shaped TTFT overhead",
        "",
        f"Emulator: `[[emulator {s1['directive']}]]` (300 ms to first token, then 50 tokens/s). "
        "Closed loop, N websocket clients (or N direct HTTP clients). TTFT and overhead in ms.",
        "",
        *table(["N", "path", "n", "TTFT min", "p50", "p95", "p99", "max", "overhead p50", "p95", "p99",
                "cores", "client cores", "other cores", "errors"], rows),
        "",
    ]


def scenario2(s2: dict) -> list[str]:
    rows = []
    for row in s2["rows"]:
        for path, f in row["paths"].items():
            t, o = f.get("ttft_ms") or {}, f.get("overhead_ms") or {}
            rows.append([row["n"], path_label(path), num(f.get("completions_per_s")), num(t.get("p50")), num(t.get("p99")),
                         num(o.get("p50")), num(o.get("p99")), num(f.get("cpu_ms_per_completion"), 2),
                         num(f.get("cpu_us_per_token"), 0), num(f.get("cores"), 2), num(f.get("client_cores"), 2),
                         num(f.get("other_cores"), 2), num(f.get("postgres_ms_per_completion"), 2), errors_text(f)])
    lines = [
        "## Scenario 2 — cost per completion and saturation",
        "",
        f"Emulator: `[[emulator {s2['directive']}]]` (100 ms to first token, 20 tokens 10 ms apart). Closed loop; "
        f"N rises until the overhead p99 passes {s2['limit_ms']} ms (that row is the last for its path). "
        "CPU is the serving process' (the portal's, or LiteLLM's with its workers) over the window; "
        "µs/token divides it by relayed tokens.",
        "",
        *table(["N", "path", "compl/s", "TTFT p50", "p99", "overhead p50", "p99", "CPU ms/compl", "CPU µs/token",
                "cores", "client cores", "other cores", "Postgres ms/compl", "errors"], rows),
        "",
    ]
    for path in sorted({p for row in s2["rows"] for p in row["paths"] if p != "direct"}):
        lines.append(f"- Saturation of {path_label(path)}: {saturation_text(saturation(s2, path), s2['limit_ms'])}.")
    return lines + [""]


def scenario3(s3: dict) -> list[str]:
    rows = []
    for path, f in s3["paths"].items():
        g = f.get("gap_ms") or {}
        rows.append([path_label(path), num(f.get("open_streams")), num(f.get("ramp_seconds")), errors_text(f),
                     num(f.get("stopped_at_end")), num(g.get("p50")), num(g.get("p99")), num(g.get("max")),
                     mib(f.get("rss_before")), mib(f.get("rss_open")), kib(f.get("rss_per_socket")),
                     num(f.get("cores"), 2), num(f.get("client_cores"), 2), num(f.get("other_cores"), 2)])
    return [
        f"## Scenario 3 — {s3['sockets']:,} concurrent streams on one process",
        "",
        f"Emulator: `[[emulator {s3['directive']}]]` (long, slow replies: one token every 200 ms). Every client "
        "connects, sends one request and holds its stream; the window starts once every stream has started "
        "(*ramp s* after the first connection), and after it the client stops every stream. "
        "Gaps are between consecutive deltas of one stream in the window (200 ms expected). Memory per socket is "
        "the portal's VmRSS with all streams open minus before the first connection, divided by the open "
        "streams (it includes each stream's upstream connection and generation).",
        "",
        *table(["path", "open streams", "ramp s", "errors", "stopped at end", "gap p50 ms", "p99", "max", "RSS before",
                "RSS open", "per socket", "cores", "client cores", "other cores"], rows),
        "",
    ]


def scenario4(s4: dict) -> list[str]:
    rows = []
    for row in s4["rows"]:
        for path, f in row["paths"].items():
            rows.append([row["chunk_tokens"], path_label(path), num(f.get("tokens_per_s"), 0), num(f.get("completions_per_s")),
                         num(f.get("deltas_per_completion")), num(f.get("cpu_us_per_token"), 1), num(f.get("cores"), 2),
                         num(f.get("client_cores"), 2), num(f.get("emulator_cores"), 2), errors_text(f)])
    return [
        "## Scenario 4 — relay throughput",
        "",
        f"Emulator at full speed: `[[emulator ttft_ms=0 rate=0 tokens={s4['tokens']} chunk_tokens=K]]`, "
        f"{s4['clients']} clients in a closed loop. The portal sends an answer's first delta at once and merges "
        f"later ones into at most one frame per PORTAL_RELAY_INTERVAL_MS ({settings.PORTAL_RELAY_INTERVAL_MS:g} ms here; 0 turns the merging "
        "off); *deltas/compl.* shows how much it merged: for the direct path it counts reads that carried "
        "content, for the portal the `delta` frames. With K = 1 every token is its own SSE event (the worst case); K = 20 is larger chunks.",
        "",
        *table(["K (tokens per event)", "path", "tokens/s", "compl/s", "deltas/compl", "CPU µs/token", "cores",
                "client cores", "emulator cores", "errors"], rows),
        "",
    ]


def scenario5(s5: dict) -> list[str]:
    rows = []
    for row in s5["rows"]:
        runs = row["runs"]
        statements = sorted({r["statements"] for r in runs})
        rows.append([f"{row['size']:,}", ", ".join(str(r.get("tokens")) for r in runs), ", ".join(str(r["deltas"]) for r in runs),
                     ", ".join(map(str, statements)), ", ".join(str(c) for c in sorted({r["commits"] for r in runs})),
                     ", ".join(str(c) for c in sorted({r["health_checks"] for r in runs})), runs[0].get("status", "?")])
    sql = s5["rows"][-1]["runs"][-1]["sql"] if s5["rows"] and s5["rows"][-1]["runs"] else []
    return [
        "## Scenario 5 — database work per completion",
        "",
        "Counted in the bench process around `ChatExecutor().stream()` (from the request to its final event), "
        "against the emulator at full speed, with Django's `execute_wrapper` on every connection. *Commits* are "
        "transactions (each also costs a BEGIN round trip); *health checks* are the empty query the connection "
        "pool runs on each borrow (`CONN_HEALTH_CHECKS`). Three runs per size. Replies cannot be longer "
        f"than max_tokens = {s5['max_tokens']:,} (the protocol's limit), so a 10,000-token request is cut there "
        "(finish reason `length`).",
        "",
        *table(["reply tokens asked", "tokens delivered", "deltas", "SQL statements", "commits", "health checks", "status"], rows),
        "",
        "Statements of one completion: " + (", ".join(f"`{s}`" for s in sql) or "–") + ".",
        "",
    ]


def scenario6(s6: dict) -> list[str]:
    lines = ["## Scenario 6 — pages at scale", ""]
    if "failed" in s6:
        return lines + [f"failed: {s6['failed']}", ""]
    rows = [[page["label"], f"`{page['path']}`", num(page["min"]), num(page["p50"]), num(page["p95"]), num(page["max"])]
            for page in s6["pages"]]
    return lines + [
        f"The audit trail and usage records seeded to {s6['rows']:,} rows each by `manage.py seed_usage` (rows over "
        "90 days, 50 seed users; seed rows are marked `seed-`), then each page requested "
        f"{s6['repeats']} times from the bench process: the admin lists and the officer's analytics as a logged-in "
        "superuser, a member's analytics as the person with the most usage in the last 30 days"
        + (f" ({s6['busiest']['username']}, {s6['busiest']['rows_30_days']:,} records in 30 days)" if "busiest" in s6 else "")
        + "; the time is the whole request on loopback (server time plus a negligible transfer).",
        "",
        *table(["page", "path", "min ms", "p50", "p95", "max"], rows),
        "",
    ]


def scenario7(results: dict) -> list[str]:
    lines = ["## Scenario 7 — LiteLLM side by side", "",
             "The same loads (scenarios 1 and 2) through LiteLLM's proxy (`/v1/chat/completions`, streaming, "
             "`Authorization: Bearer sk-bench`) in front of the same emulator (its OpenAI shape). LiteLLM runs "
             "without a database, so it writes no spend logs; the portal stores question, answer, audit entry "
             "and usage record for every completion.", ""]
    rows = []
    for number, key in ((1, "p50"), (2, None)):
        if number not in results:
            continue
        for row in results[number]["rows"]:
            portal = row["paths"].get("portal")
            for path, f in row["paths"].items():
                if not path.startswith("litellm-") or not portal:
                    continue
                po, lo = portal.get("overhead_ms") or {}, f.get("overhead_ms") or {}
                rows.append([number, row["n"], path_label(path), num(lo.get("p50")), num(po.get("p50")), num(lo.get("p99")),
                             num(po.get("p99")), num(f.get("completions_per_s")), num(portal.get("completions_per_s")),
                             num(f.get("cpu_ms_per_completion"), 2), num(portal.get("cpu_ms_per_completion"), 2),
                             _ratio(f.get("cpu_ms_per_completion"), portal.get("cpu_ms_per_completion"))])
    lines += table(["scenario", "N", "gateway", "its overhead p50 ms", "portal's", "its p99", "portal's", "its compl/s",
                    "portal's", "its CPU ms/compl", "portal's", "CPU ratio (it / portal)"], rows)
    if 2 in results:
        portal = saturation(results[2], "portal")
        for path in sorted({p for row in results[2]["rows"] for p in row["paths"] if p.startswith("litellm-")}):
            theirs = saturation(results[2], path)
            if portal and theirs:
                lines += ["", f"Saturation (completions/s where the overhead p99 passed {results[2]['limit_ms']} ms): "
                          f"portal {saturation_text(portal, results[2]['limit_ms'])}; {path_label(path)} "
                          f"{saturation_text(theirs, results[2]['limit_ms'])}: ratio {_ratio(portal['rate'], theirs['rate'])}."]
    return lines + [""]


def _ratio(a, b) -> str:
    return f"{a / b:.1f}×" if a is not None and b else "–"
