"""The scenarios: which load, against which targets, and which figures come out.

Every scenario runs the same load twice (or more): through the portal's websocket and straight
against the emulator's Genesys SSE endpoint (and, with --litellm, through LiteLLM's proxy). One
emulator serves them all; each request carries its pacing in a `[[emulator …]]` directive, the
same text on every path, so the only difference between two figures is what sits in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway_portal.bench.processes import wait_until_quiet
from gateway_portal.bench.runner import Point, Watched, run_load
from gateway_portal.bench.stats import difference

# Scenario number -> its default sizes (and the --quick ones). What a size is depends on the
# scenario: clients (1, 2, 4), open sockets (3), reply tokens (5).
DEFAULT_SIZES = {1: [1, 50, 200], 2: [1, 10, 25, 50, 100, 200], 3: [2000], 4: [8], 5: [10, 1000, 10000], 6: [1_000_000]}
QUICK_SIZES = {1: [1, 5], 2: [1, 5], 3: [50], 4: [2], 5: [10, 1000], 6: [20_000]}
ALL_SCENARIOS = (1, 2, 3, 4, 5, 6)
QUICK_SCENARIOS = (1, 2, 3, 4, 5, 6)

OVERHEAD_LIMIT_MS = 50  # scenario 2 raises N until the overhead p99 passes this

CHAT = "ttft_ms=300 rate=50 tokens=200 chunk_tokens=1"
# --quick: the same first token, a reply short enough that a 3 s window sees several of them.
QUICK_CHAT = "ttft_ms=300 rate=50 tokens=20 chunk_tokens=1"
SHORT = "ttft_ms=100 rate=100 tokens=20 chunk_tokens=1"
QUESTION = "Explain how OAuth client credentials work for a service account."


def prompt(directive: str) -> str:
    return f"{QUESTION} [[emulator {directive}]]"


def reply_seconds(directive: str) -> float:
    """How long the emulator takes for one reply under this directive (0 at full speed)."""
    values = dict(part.split("=") for part in directive.split())
    rate = float(values.get("rate", 0))
    return float(values.get("ttft_ms", 0)) / 1000 + (int(values.get("tokens", 0)) / rate if rate else 0)


@dataclass
class Plan:
    scenarios: list[int]
    sizes: dict[int, list[int]]
    duration: float  # seconds of one measured window
    quick: bool
    litellm_workers: list[int] = field(default_factory=list)
    portal_workers: int = 1  # runportal --workers

    @property
    def warmup(self) -> float:
        return 1.0 if self.quick else 3.0


@dataclass
class Targets:
    """The `target` part of the load client's spec for each path."""

    portal: dict
    direct: dict
    api: dict | None = None  # the portal's /v1/chat/completions (scenarios 1 and 2)
    litellm: dict[int, dict] = field(default_factory=dict)  # workers -> target


class Bench:
    """Runs load points against the started processes and collects the figures."""

    def __init__(self, plan: Plan, targets: Targets, watched: list[Watched], emulator_url: str, say) -> None:
        self.plan, self.targets, self.watched = plan, targets, watched
        self.emulator_url = emulator_url
        self.say = say

    # -- one point ---------------------------------------------------------------------------

    def point(self, target: dict, directive: str, clients: int, *, mode: str = "closed", duration: float | None = None,
              **extra) -> Point:
        # Closed-loop clients start spread over one reply, and the window opens after all started.
        stagger = reply_seconds(directive) if mode == "closed" else 0
        spec = {
            "target": target, "prompt": prompt(directive), "max_tokens": 4096, "clients": clients, "mode": mode,
            "stagger": stagger, "warmup": stagger + self.plan.warmup, "duration": duration or self.plan.duration,
            "drain": 10, "connect_concurrency": 50, **extra,
        }
        longest = spec["warmup"] + max(spec["duration"], spec.get("max_duration", 0)) + spec["drain"]
        point = run_load(spec, self.watched, timeout=longest + spec.get("ramp_timeout", 120) + 60)
        # The portal goes on with answers stopped at the end; let them end before the next point.
        wait_until_quiet(self.emulator_url)
        return point

    def paths(self, directive: str, clients: int, **extra) -> dict[str, Point]:
        """The same load straight to the emulator, through the portal and through each LiteLLM."""
        points = {"direct": self.point(self.targets.direct, directive, clients, **extra)}
        points["portal"] = self.point(self.targets.portal, directive, clients, **extra)
        if self.targets.api:
            points["api"] = self.point(self.targets.api, directive, clients, **extra)
        for workers, target in self.targets.litellm.items():
            points[f"litellm-{workers}"] = self.point(target, directive, clients, **extra)
        return points

    # -- scenarios -----------------------------------------------------------------------------

    def ttft_overhead(self) -> dict:
        """1: chat-shaped replies, closed loop; TTFT through each path minus TTFT direct."""
        directive = QUICK_CHAT if self.plan.quick else CHAT
        rows = []
        for n in self.plan.sizes[1]:
            self.say(f"  scenario 1: N={n}")
            # Few clients make few samples per second: measure longer (up to 2x) for 10 of them.
            extra = {} if self.plan.quick else {"min_samples": 10, "max_duration": 2 * self.plan.duration}
            points = self.paths(directive, n, **extra)
            rows.append(self.row(n, points, process_of_path))
        return {"directive": directive, "rows": rows}

    def cost_and_saturation(self) -> dict:
        """2: short replies; CPU per completion; raise N until the overhead p99 passes 50 ms."""
        rows = []
        running = {"portal": True, **({"api": True} if self.targets.api else {}), **{f"litellm-{w}": True for w in self.targets.litellm}}
        for n in self.plan.sizes[2]:
            self.say(f"  scenario 2: N={n}")
            points = {"direct": self.point(self.targets.direct, SHORT, n)}
            if running["portal"]:
                points["portal"] = self.point(self.targets.portal, SHORT, n)
            if running.get("api"):
                points["api"] = self.point(self.targets.api, SHORT, n)
            for workers, target in self.targets.litellm.items():
                if running[f"litellm-{workers}"]:
                    points[f"litellm-{workers}"] = self.point(target, SHORT, n)
            row = self.row(n, points, process_of_path)
            rows.append(row)
            for path in list(running):
                overhead = row["paths"].get(path, {}).get("overhead_ms", {}).get("p99")
                if overhead is not None and overhead > OVERHEAD_LIMIT_MS:
                    running[path] = False  # saturated: this row is where it passed the limit
            if not any(running.values()):
                break
        return {"directive": SHORT, "rows": rows, "limit_ms": OVERHEAD_LIMIT_MS}

    def concurrency(self) -> dict:
        """3: open many slow streams on one process; errors, gaps between deltas, memory per socket."""
        sockets = self.plan.sizes[3][-1]
        # Replies far longer than the ramp and the window (200 s at full size), stopped after the
        # window: every stream is open while it is measured, however long the ramp takes.
        directive = "ttft_ms=300 rate=5 tokens=50 chunk_tokens=1" if self.plan.quick else \
            "ttft_ms=300 rate=5 tokens=1000 chunk_tokens=1"
        window = min(self.plan.duration, 2 if self.plan.quick else 15)
        rows = {}
        for path, target in (("direct", self.targets.direct), ("portal", self.targets.portal)):
            self.say(f"  scenario 3: {sockets} sockets, {path}")
            point = self.point(target, directive, sockets, mode="hold", duration=window, drain=60, ramp_timeout=180)
            rows[path] = self.hold_figures(point, process_of_path(path))
        return {"directive": directive, "sockets": sockets, "paths": rows}

    def relay_throughput(self) -> dict:
        """4: the emulator at full speed; tokens per second through one process, small and large chunks."""
        clients = self.plan.sizes[4][-1]
        tokens = 500 if self.plan.quick else 2000
        rows = []
        for chunk in (1, 20):
            directive = f"ttft_ms=0 rate=0 tokens={tokens} chunk_tokens={chunk}"
            self.say(f"  scenario 4: chunk_tokens={chunk}")
            points = {"direct": self.point(self.targets.direct, directive, clients),
                      "portal": self.point(self.targets.portal, directive, clients)}
            row = self.row(clients, points, process_of_path)
            row["chunk_tokens"] = chunk
            rows.append(row)
        return {"tokens": tokens, "clients": clients, "rows": rows}

    # -- figures ---------------------------------------------------------------------------------

    def row(self, n: int, points: dict[str, Point], process_for) -> dict:
        direct = points["direct"].load["ttft_ms"]
        paths = {}
        for path, point in points.items():
            figures = point_figures(point, process_for(path))
            if path != "direct":
                figures["overhead_ms"] = difference(point.load["ttft_ms"], direct)
            paths[path] = figures
        return {"n": n, "paths": paths}

    def hold_figures(self, point: Point, process: str | None) -> dict:
        figures = point_figures(point, process)
        load = point.load
        figures["open_streams"] = load.get("open_streams_at_start")
        figures["ramp_seconds"] = load.get("ramp_seconds")
        figures["stopped_at_end"] = load.get("stopped_at_end")
        if process:
            before, after = point.rss(process, "idle"), point.rss(process, "start")
            figures["rss_before"], figures["rss_open"] = before, after
            if before and after and figures["open_streams"]:
                figures["rss_per_socket"] = (after - before) / figures["open_streams"]
        return figures


def process_of_path(path: str) -> str | None:
    """Which watched process does the work of a path (the direct path has none in between)."""
    if path in ("portal", "api"):  # the API is served by the same portal process
        return "portal"
    if path.startswith("litellm-"):
        return path
    return None


def point_figures(point: Point, process: str | None) -> dict:
    load = point.load
    figures = {key: load.get(key) for key in (
        "clients", "connected", "requests", "completions", "tokens", "deltas", "completions_per_s", "tokens_per_s",
        "deltas_per_completion", "ttft_ms", "gap_ms", "errors", "error_details", "window_errors", "window_seconds")}
    figures["client_cores"] = point.cpu_share("client")
    figures["other_cores"] = point.other_share()
    figures["emulator_cores"] = point.cpu_share("emulator")
    figures["postgres_ms_per_completion"] = point.per_completion_ms("postgres")
    if process:
        figures["cores"] = point.cpu_share(process)
        figures["cpu_ms_per_completion"] = point.per_completion_ms(process)
        figures["cpu_us_per_token"] = point.per_token_us(process)
    return figures
