"""Start the emulator in a child process on a free loopback port (tests, runportal, benchmark).

The parent binds the listening socket itself and hands its descriptor to the child, so the port
is known before the child starts and there is no bind race between parallel test runs.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from gateway_portal.child_processes import CAPTURE, ChildProcess, HttpAnswers

# Project root: the parent of the `chat` package, so `python -m chat.emulator` imports there.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

_OPTIONS = (
    "ttft_ms", "tokens_per_second", "reply_tokens", "chunk_tokens", "token_ttl", "client_id", "client_secret",
    "ssl_certfile", "ssl_keyfile",
)


class EmulatorProcess:
    """A running emulator child. Use as a context manager or call ``stop()``."""

    def __init__(self, child: ChildProcess, port: int, scheme: str = "http") -> None:
        self.child = child
        self.port = port
        self.url = f"{scheme}://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.child.pid

    def output(self) -> str:
        """What the child wrote so far (warnings, tracebacks)."""
        return self.child.output()

    def stop(self) -> None:
        """SIGTERM, up to 5 s for a clean exit, then SIGKILL. Safe to call twice."""
        self.child.stop(grace=5)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<EmulatorProcess pid={self.pid} url={self.url}>"


def start_emulator(
    *, port: int = 0, startup_timeout: float = 20.0, inherit_env: bool = False, **config_overrides
) -> EmulatorProcess:
    """Start ``python -m chat.emulator`` on 127.0.0.1:<port> (0: a free one); wait until /health answers.

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

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(4096)
        port = sock.getsockname()[1]
        listener = sock.detach()  # the child's from now on: start() closes this process' copy
    env = dict(os.environ) if inherit_env else {k: v for k, v in os.environ.items() if not k.startswith("EMULATOR_")}
    child = ChildProcess.start(
        [sys.executable, "-m", "chat.emulator", "--fd", str(listener), "--parent-pid", str(os.getpid()), *args],
        name="The emulator", cwd=PROJECT_ROOT, env=env, output=CAPTURE, hand_over_fds=(listener,),
    )
    emulator = EmulatorProcess(child, port, "https" if config_overrides.get("ssl_certfile") else "http")
    child.wait_ready(HttpAnswers(emulator.url + "/health"), startup_timeout, interval=0.02)
    return emulator
