"""One load point: spawn the load client with its spec, sample /proc at the moments it marks.

The client prints a mark when its measured window opens and closes; reading the portal's CPU
time and memory right then makes "CPU per completion" cover the same seconds as the completions
counted by the client. The same snapshot also reads the machine's total busy time, so a report
can say how much of the box something else (other people's work, the client) was using.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from gateway_portal.bench.processes import PROJECT_DIR, Usage, machine_busy_seconds, process_usage, tree_usage
from gateway_portal.child_processes import die_with_parent


@dataclass(frozen=True)
class Watched:
    """A process whose usage is read at every mark (`tree`: with its descendants)."""

    name: str
    pid: int
    tree: bool = False

    def usage(self) -> Usage | None:
        try:
            return tree_usage(self.pid) if self.tree else process_usage(self.pid)
        except (OSError, ValueError):
            return None


@dataclass
class Snapshot:
    wall: float
    machine_busy_s: float
    usage: dict[str, Usage]


@dataclass
class Point:
    """The client's figures for one load point plus the processes' usage between its marks."""

    load: dict
    marks: dict[str, Snapshot] = field(default_factory=dict)

    def cpu_s(self, name: str, start: str = "start", end: str = "end") -> float | None:
        """CPU seconds between two marks. For a process tree it can even be negative: a child that
        exited in between takes its CPU time with it (callers treat that as unknown)."""
        a, b = self.marks.get(start), self.marks.get(end)
        if not a or not b or name not in a.usage or name not in b.usage:
            return None
        return b.usage[name].cpu_s - a.usage[name].cpu_s

    def cpu_share(self, name: str) -> float | None:
        """Cores used by `name` during the window (1.0 = one core busy all the time)."""
        cpu = self.cpu_s(name)
        seconds = self.load.get("window_seconds")
        return cpu / seconds if cpu is not None and seconds else None

    def rss(self, name: str, mark: str) -> int | None:
        snapshot = self.marks.get(mark)
        usage = snapshot.usage.get(name) if snapshot else None
        return usage.rss_bytes if usage else None

    def other_share(self) -> float | None:
        """Cores busy during the window with anything not watched (other work on the box)."""
        a, b = self.marks.get("start"), self.marks.get("end")
        seconds = self.load.get("window_seconds")
        if not a or not b or not seconds:
            return None
        ours = sum((self.cpu_s(name) or 0) for name in b.usage)
        return max(0.0, (b.machine_busy_s - a.machine_busy_s - ours) / seconds)

    def per_completion_ms(self, name: str) -> float | None:
        cpu, done = self.cpu_s(name), self.load.get("completions")
        return cpu * 1000 / done if cpu is not None and cpu >= 0 and done else None

    def per_token_us(self, name: str) -> float | None:
        cpu, tokens = self.cpu_s(name), self.load.get("tokens")
        return cpu * 1e6 / tokens if cpu is not None and cpu >= 0 and tokens else None


class LoadClientFailed(RuntimeError):
    pass


def run_load(spec: dict, watched: list[Watched], *, timeout: float) -> Point:
    """Run the load client to its end (killed after `timeout` s) and return its point."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway_portal.bench.load"], cwd=PROJECT_DIR,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            preexec_fn=die_with_parent,
        )
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            proc.stdin.write(json.dumps(spec))
            proc.stdin.close()
            client = Watched("client", proc.pid)
            point = _read_progress(proc, [*watched, client])
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0 or point is None:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-3000:]
            raise LoadClientFailed(f"The load client exited with status {proc.returncode}. Its stderr:\n{tail}")
    return point


def _read_progress(proc: subprocess.Popen, watched: list[Watched]) -> Point | None:
    marks: dict[str, Snapshot] = {}
    for line in proc.stdout:
        message = json.loads(line)
        if "mark" in message:
            marks[message["mark"]] = snapshot(watched)
        elif "result" in message:
            return Point(message["result"], marks)
    return None


def snapshot(watched: list[Watched]) -> Snapshot:
    usage = {w.name: u for w in watched if (u := w.usage()) is not None}
    return Snapshot(time.monotonic(), machine_busy_seconds(), usage)
