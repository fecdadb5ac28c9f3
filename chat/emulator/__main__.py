"""Run the emulator: ``python -m chat.emulator [--host H] [--port P | --fd N] [options]``.

Every option can also come from an environment variable (``--ttft-ms`` <- ``EMULATOR_TTFT_MS``
and so on); the command line wins. Prints ``Emulator listening on http://HOST:PORT`` once it
accepts connections, and exits with status 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys

import uvicorn

from .app import EmulatorConfig, build_app

_DEFAULTS = EmulatorConfig()
# (option, type, default, help)
_OPTIONS = (
    ("host", str, "127.0.0.1", "interface to bind (ignored with --fd)"),
    ("port", int, 8089, "port to bind, 0 = any free port (ignored with --fd)"),
    ("fd", int, None, "serve on this already-listening socket file descriptor"),
    ("ttft-ms", float, _DEFAULTS.ttft_ms, "time to first token in milliseconds"),
    ("tokens-per-second", float, _DEFAULTS.tokens_per_second, "stream pace, 0 = as fast as possible"),
    ("reply-tokens", int, _DEFAULTS.reply_tokens, "words per reply"),
    ("chunk-tokens", int, _DEFAULTS.chunk_tokens, "words per SSE content event"),
    ("token-ttl", int, _DEFAULTS.token_ttl, "access token lifetime in seconds"),
    ("client-id", str, _DEFAULTS.client_id, "OAuth client id"),
    ("client-secret", str, _DEFAULTS.client_secret, "OAuth client secret"),
    ("parent-pid", int, None, "exit when this process (the parent) goes away"),
    ("ssl-certfile", str, None, "serve HTTPS with this certificate (PEM), like the real upstream"),
    ("ssl-keyfile", str, None, "the certificate's private key (PEM)"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chat.emulator", description="Genesys AI Gateway emulator")
    for name, kind, default, help_text in _OPTIONS:
        env = "EMULATOR_" + name.upper().replace("-", "_")
        raw = os.environ.get(env)
        try:
            value = kind(raw) if raw not in (None, "") else default
        except ValueError:
            parser.error(f"{env}={raw!r} is not a valid {kind.__name__}")
        parser.add_argument("--" + name, type=kind, default=value, help=f"{help_text} (env {env})")
    return parser.parse_args(argv)


class _Server(uvicorn.Server):
    """uvicorn server that announces its address and can follow its parent's lifetime."""

    parent_pid: int | None = None

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if not self.started:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        scheme = "https" if self.config.is_ssl else "http"
        print(f"Emulator listening on {scheme}://{host}:{port}", flush=True)
        if self.parent_pid:
            self._watch = asyncio.get_running_loop().create_task(self._watch_parent())

    async def _watch_parent(self) -> None:
        while os.getppid() == self.parent_pid:
            await asyncio.sleep(1)
        self.should_exit = True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = EmulatorConfig(
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_ttl=args.token_ttl,
        ttft_ms=args.ttft_ms,
        tokens_per_second=args.tokens_per_second,
        reply_tokens=args.reply_tokens,
        chunk_tokens=args.chunk_tokens,
    )
    server = _Server(uvicorn.Config(
        build_app(config),
        host=args.host,
        port=args.port,
        http="httptools",
        ws="none",
        loop="asyncio",
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,  # loopback only; one less middleware frame per resumed stream
        backlog=4096,
        timeout_graceful_shutdown=2,  # open streams get 2 s, then they are cancelled
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    ))
    server.parent_pid = args.parent_pid

    # uvicorn re-raises the signal it caught after its graceful shutdown; make that a no-op
    # (or an early stop before uvicorn installed its handlers) so the exit status is 0.
    def on_signal(signum, frame) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sockets = None
    if args.fd is not None:
        # socket(fileno=...) detects the real family (AF_INET), so asyncio sets TCP_NODELAY on
        # accepted connections; uvicorn's own --fd path labels the socket AF_UNIX and does not.
        sockets = [socket.socket(fileno=args.fd)]
    server.run(sockets=sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
