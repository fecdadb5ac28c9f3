"""Child processes this process starts, waits for and stops: the emulator, the benchmark's portal
and LiteLLM, the workers of `runportal --workers`, the tests' portals.

One way to do it, so each of them gets the same guarantees: a child that dies or never gets ready
is reported with its exit status and the end of its output (not a bare timeout), and stopping is
SIGTERM, a grace period for a clean exit, then SIGKILL, and may be called twice.

No Django here: the emulator and the bench's load client run without it.
"""

from __future__ import annotations

import abc

import ctypes
import functools
import http.client
import os
import select
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

# `output=CAPTURE`: stdout and stderr go to a temporary file this process can read at any time.
# A file, not a pipe: nobody has to keep reading it for the child to go on writing.
CAPTURE = "capture"


def free_port() -> int:
    """A loopback port free right now, for a child that binds it itself (a small race, accepted)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NotReady(RuntimeError):
    """The child exited, or did not get ready in time; the message says which, and what it wrote."""


def die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when its parent goes away (Linux prctl), so a killed parent
    leaves nothing listening behind it. The kernel sends it when the *thread* that started the
    child ends: start such children from a thread that lives as long as they should."""
    PR_SET_PDEATHSIG = 1
    _prctl()(PR_SET_PDEATHSIG, signal.SIGTERM)


@functools.cache
def _prctl():
    # Looked up in the parent (start() asks first), so the forked child only makes the call.
    return ctypes.CDLL("libc.so.6", use_errno=True).prctl


_die_with_parent = die_with_parent  # ChildProcess.start's parameter of that name hides it there


class ChildProcess:
    """A started child. ``name`` is how messages call it ("The emulator")."""

    def __init__(self, popen: subprocess.Popen, name: str, capture: IO[bytes] | None, log_path: Path | None) -> None:
        self.popen = popen
        self.name = name
        self.log_path = log_path
        self._capture = capture
        self._captured = ""  # what the capture file held when it was closed

    @classmethod
    def start(
        cls, args: list[str], *, name: str, cwd: str | Path | None = None, env: dict[str, str] | None = None,
        output: str | Path | None = None, hand_over_fds: tuple[int, ...] = (), die_with_parent: bool = False,
    ) -> ChildProcess:
        """Start ``args``. ``output``: None (this process' stdout/stderr), CAPTURE, or a log file
        path (truncated). ``hand_over_fds`` are given to the child and closed here once it has
        them (also when it could not start), so only the child holds them: a pipe's write end then
        reads as closed when the child dies."""
        capture = log = None
        if die_with_parent:
            _prctl()
        try:
            if output == CAPTURE:
                capture = tempfile.TemporaryFile()
            elif output is not None:
                log = open(output, "wb")
            popen = subprocess.Popen(
                args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=capture or log, stderr=subprocess.STDOUT if capture or log else None,
                pass_fds=hand_over_fds, preexec_fn=_die_with_parent if die_with_parent else None,
            )
        except BaseException:
            if capture is not None:
                capture.close()
            raise
        finally:
            if log is not None:
                log.close()  # the child has its own copy
            for fd in hand_over_fds:
                os.close(fd)
        return cls(popen, name, capture, Path(output) if log is not None else None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def args(self) -> list[str]:
        return self.popen.args

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """What the child wrote so far (CAPTURE or a log file; "" when it writes to ours)."""
        if self._capture is not None and not self._capture.closed:
            # pread: the child shares the file offset, so seeking could make it overwrite output.
            fd = self._capture.fileno()
            return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
        if self.log_path is not None:
            try:
                return self.log_path.read_text(errors="replace")
            except OSError:
                return ""
        return self._captured

    def output_tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_ready(self, ready: Readiness, timeout: float, *, interval: float = 0.05) -> None:
        """Return once ``ready`` says so; NotReady when the child exits first or time runs out.
        A child that does not get ready (or whose wait is interrupted) is stopped: it is of no use."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.popen.poll() is not None:
                    raise NotReady(f"{self.name} (pid {self.pid}) exited with status {self.returncode} "
                                   f"before it was ready.{self._what_it_wrote()}")
                if ready(self):
                    return
                if time.monotonic() > deadline:
                    raise NotReady(f"{self.name} (pid {self.pid}) did not {ready.waiting_for} within {timeout:g} s."
                                   f"{self._what_it_wrote()}")
                time.sleep(interval)
        except BaseException:
            self.stop(grace=5)
            raise
        finally:
            ready.close()

    def _what_it_wrote(self) -> str:
        if self._capture is None and self.log_path is None:
            return " See its errors above."
        where = f" (the end of {self.log_path})" if self.log_path is not None else ""
        return f" Its output{where}:\n{self.output_tail()}"

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM) without waiting; stop() then waits."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, grace: float = 10) -> bool:
        """SIGTERM, up to ``grace`` s for a clean exit, then SIGKILL. Safe to call twice.
        True when it exited by itself (or had already)."""
        self.terminate()
        return self._wait_or_kill(grace)

    def _wait_or_kill(self, grace: float) -> bool:
        try:
            self.popen.wait(timeout=grace)
            clean = True
        except subprocess.TimeoutExpired:
            clean = False
        self.kill()
        return clean

    def kill(self) -> None:
        """SIGKILL if it still runs (no clean-up in the child: a crash, as tests stage it); waits for it."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        self._close_capture()

    def _close_capture(self) -> None:
        if self._capture is not None and not self._capture.closed:
            self._captured = self.output()
            self._capture.close()

    def __repr__(self) -> str:
        return f"<ChildProcess {self.name!r} pid={self.pid}>"


def stop_together(children: list[ChildProcess], grace: float) -> None:
    """SIGTERM all, then one shared grace period: they shut down side by side, not one by one.
    One SIGTERM each: a second one, mid-shutdown, makes Daphne print a traceback."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + grace
    for child in children:
        child._wait_or_kill(max(0.1, deadline - time.monotonic()))


# --- readiness checks: ready(child) -> bool, asked again every `interval` until it says True ------


class Readiness(abc.ABC):
    waiting_for = "get ready"

    @abc.abstractmethod
    def __call__(self, child: ChildProcess) -> bool:
        """Whether the child is ready now."""

    def close(self) -> None:
        """Called once waiting is over, ready or not."""


class HttpAnswers(Readiness):
    """Ready when GET ``url`` answers below 500 (https on loopback is not verified: a probe)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url, self.host, self.port, self.path = url, parts.hostname, parts.port, parts.path or "/"
        self.https = parts.scheme == "https"
        self.waiting_for = f"answer GET {url}"

    def __call__(self, child: ChildProcess) -> bool:
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=2, context=ssl._create_unverified_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
        try:
            conn.request("GET", self.path)
            return conn.getresponse().status < 500
        except OSError:
            return False
        finally:
            conn.close()


class LinePrinted(Readiness):
    """Ready when the child's output (CAPTURE or a log file) contains ``text``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.waiting_for = f"print “{text}”"

    def __call__(self, child: ChildProcess) -> bool:
        return self.text in child.output()


class PipeWritten(Readiness):
    """Ready when the child writes a byte to a pipe. Put ``write_fd`` in its command line and in
    ChildProcess.start's ``hand_over_fds``; a child that dies first closes it unwritten."""

    waiting_for = "report that it is ready"

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    def __call__(self, child: ChildProcess) -> bool:
        readable, _, _ = select.select([self.read_fd], [], [], 0)
        return bool(readable) and os.read(self.read_fd, 1) != b""

    def close(self) -> None:
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1
