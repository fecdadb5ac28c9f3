"""The processes a bench run starts, and what /proc says about them.

The portal runs as `manage.py runportal` (Daphne, production settings) in a process of its own,
so its CPU time and memory can be read from /proc/<pid> and nothing of the bench or the load
client is counted in them. Every child is asked to die with the bench (PR_SET_PDEATHSIG), so a
killed bench does not leave a portal listening behind it.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gateway_portal.child_processes import ChildProcess, HttpAnswers, free_port

PROJECT_DIR = Path(__file__).resolve().parents[2]
BENCH_DIR = PROJECT_DIR / ".bench"  # logs, LiteLLM's venv and config (git-ignored)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Concurrency quota for the bench users on the portal process: the bench measures the relay, and
# a few users stand in for thousands of people, so the per-person limit must not be what it hits.
BENCH_QUOTA = 100_000


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; children started afterwards inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- /proc ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system) and resident memory of a process and its descendants."""

    cpu_s: float
    rss_bytes: int


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses: split after its last ")".
    return raw[raw.rindex(")") + 2:].split()


def process_usage(pid: int) -> Usage:
    fields = _stat_fields(pid)  # fields[0] is field 3 (state) of proc(5)
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return Usage(cpu, _rss(pid))


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_usage(pid: int) -> Usage:
    """The process and all its live descendants (LiteLLM's workers, Postgres' backends)."""
    children = _children_map()
    cpu, rss, todo = 0.0, 0, [pid]
    while todo:
        current = todo.pop()
        try:
            usage = process_usage(current)
        except (OSError, ValueError):
            continue
        cpu, rss = cpu + usage.cpu_s, rss + usage.rss_bytes
        todo.extend(children.get(current, ()))
    return Usage(cpu, rss)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLOCK_TICKS


# --- the portal ------------------------------------------------------------------------------------


class Portal:
    """`manage.py runportal` in its own process, pointed at the bench's emulator."""

    def __init__(self, child: ChildProcess, port: int) -> None:
        self.child, self.port = child, port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws/chat/"

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def log_path(self) -> Path:
        return self.child.log_path

    def usage(self) -> Usage:
        return process_usage(self.pid)

    def stop(self) -> None:
        """SIGTERM (Daphne shuts down cleanly), then SIGKILL after 10 s. Safe to call twice."""
        self.child.stop(grace=10)


def portal_command(port: int, emulator_url: str, workers: int = 1) -> list[str]:
    # --no-admin: the person's first runportal, not the bench, creates the admin (and shows its password).
    return [sys.executable, "manage.py", "runportal", "--port", str(port),
            "--emulator-url", emulator_url, "--keep-database", "--no-admin",
            *(["--workers", str(workers)] if workers > 1 else [])]


def start_portal(emulator_url: str, *, workers: int = 1, startup_timeout: float = 90) -> Portal:
    port = free_port()
    BENCH_DIR.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update({
        "DEBUG": "false",  # production settings
        "PORTAL_MAX_CONCURRENT_PER_USER": str(BENCH_QUOTA),
        "PYTHONUNBUFFERED": "1",
    })
    child = ChildProcess.start(
        portal_command(port, emulator_url, workers), name="The portal", cwd=PROJECT_DIR, env=env,
        output=BENCH_DIR / "portal.log", die_with_parent=True,
    )
    portal = Portal(child, port)
    child.wait_ready(HttpAnswers(portal.url + "/accounts/login/"), startup_timeout, interval=0.1)
    return portal


def emulator_active_streams(emulator_url: str) -> int:
    """The emulator's gauge of streams in progress (from /_emulator/stats)."""
    import json
    from urllib.request import urlopen

    with urlopen(emulator_url + "/_emulator/stats", timeout=5) as response:
        return int(json.loads(response.read())["active_streams"])


def wait_until_quiet(emulator_url: str, timeout: float = 30) -> bool:
    """Wait for the previous point's streams to end, so they do not load the next one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if emulator_active_streams(emulator_url) == 0:
            return True
        time.sleep(0.2)
    return False


def postgres_pid() -> int | None:
    """The embedded Postgres' postmaster (its backends are its children), if this bench uses it."""
    from django.conf import settings

    if not settings.EMBEDDED_DATABASE:
        return None
    from gateway_portal import embedded_db

    try:
        return int((embedded_db.data_dir() / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
