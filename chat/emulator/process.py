"""Start the emulator in a child process on a free loopback port (tests, runportal, benchmark).

The parent binds the listening socket itself and hands its descriptor to the child, so the port
is known before the child starts and there is no bind race between parallel test runs.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Project root: the parent of the `chat` package, so `python -m chat.emulator` imports there.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

_OPTIONS = (
    "ttft_ms", "tokens_per_second", "reply_tokens", "chunk_tokens", "token_ttl", "client_id", "client_secret",
    "ssl_certfile", "ssl_keyfile",
)


class EmulatorProcess:
    """A running emulator child. Use as a context manager or call ``stop()``."""

    def __init__(self, proc: subprocess.Popen, port: int, stderr_file, scheme: str = "http") -> None:
        self.proc = proc
        self.port = port
        self.url = f"{scheme}://127.0.0.1:{port}"
        self._stderr = stderr_file

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self) -> str:
        """What the child wrote to stderr so far (warnings, tracebacks)."""
        if self._stderr.closed:
            return ""
        # pread: the child shares the file offset, so seeking could make it overwrite output.
        fd = self._stderr.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM, up to 5 s for a clean exit, then SIGKILL. Safe to call twice."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._stderr.closed:
            self._stderr.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EmulatorProcess pid={self.pid} url={self.url}>"


def start_emulator(
    *, port: int = 0, startup_timeout: float = 20.0, inherit_env: bool = False, **config_overrides
) -> EmulatorProcess:
    """Start ``python -m chat.emulator`` on 127.0.0.1:<port> (0: a free one); wait until /health is 200.

    ``config_overrides`` are ``EmulatorConfig`` fields (ttft_ms=0, tokens_per_second=0, ...).
    EMULATOR_* variables of this process are passed on only with ``inherit_env`` (runportal, where
    the person configured them); tests and the benchmark want the config's defaults.
    """
    unknown = set(config_overrides) - set(_OPTIONS)
    if unknown:
        raise TypeError(f"start_emulator() got unknown options: {', '.join(sorted(unknown))}")
    args = []
    for name, value in config_overrides.items():
        args += ["--" + name.replace("_", "-"), str(value)]

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    port = sock.getsockname()[1]
    env = dict(os.environ) if inherit_env else {k: v for k, v in os.environ.items() if not k.startswith("EMULATOR_")}
    stderr_file = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chat.emulator", "--fd", str(sock.fileno()),
             "--parent-pid", str(os.getpid()), *args],
            pass_fds=(sock.fileno(),),
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
        )
    except BaseException:
        stderr_file.close()
        raise
    finally:
        sock.close()  # the child has its own copy

    emulator = EmulatorProcess(proc, port, stderr_file, "https" if config_overrides.get("ssl_certfile") else "http")
    try:
        _wait_healthy(emulator, startup_timeout)
    except BaseException:
        emulator.stop()
        raise
    return emulator


def _wait_healthy(emulator: EmulatorProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if emulator.proc.poll() is not None:
            raise RuntimeError(
                f"The emulator exited with status {emulator.proc.returncode} before it was ready. "
                f"Its stderr:\n{emulator.stderr_text()}")
        try:
            if emulator.url.startswith("https"):
                # A readiness probe on loopback; the client under test does verify the certificate.
                conn = http.client.HTTPSConnection(
                    "127.0.0.1", emulator.port, timeout=1, context=ssl._create_unverified_context()
                )
            else:
                conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=1)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"The emulator (pid {emulator.pid}) did not answer GET /health within {timeout:g} s. "
                f"Its stderr:\n{emulator.stderr_text()}")
        time.sleep(0.02)
