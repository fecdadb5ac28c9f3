"""The benchmark's load client: ``python -m gateway_portal.bench.load < spec.json``.

It runs in a process of its own and never imports Django, so what it costs is not the portal's
CPU and its event loop does not delay the portal's. It speaks to one target over real loopback
sockets:

- ``portal``:  the chat websocket (/ws/chat/) with a logged-in session cookie, as a browser does;
- ``genesys``: the emulator's Genesys SSE endpoint directly, with a token from /oauth/token;
- ``openai``:  an OpenAI-shaped ``/v1/chat/completions`` stream (LiteLLM's proxy).

The spec (JSON on stdin) says the target, the prompt, the number of clients and the mode:

- ``closed``: each client sends its next request as soon as its stream ends (the first requests
  spread evenly over ``stagger`` seconds); after ``warmup`` seconds a window of ``duration``
  seconds is measured (longer, up to ``max_duration``, until ``min_samples`` first tokens);
- ``hold``: each client connects, sends one long request and holds it; the window starts when
  every stream has started (or failed) and lasts ``duration``; then the streams run to their end.

Progress goes to stdout as JSON lines, so the bench can read /proc at the same moments:
``{"mark": "idle"}`` before the first connection, ``{"mark": "start"}`` and ``{"mark": "end"}``
around the window, then ``{"result": {...}}``. Times are ``time.perf_counter`` seconds;
reported latencies are milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway_portal.bench.stats import summarize

GENESYS_PATH = "/api/v2/ai/generations/chat/completions"
OPENAI_PATH = "/v1/chat/completions"
# How a Genesys content event starts its delta (the role event's delta starts with "role"), so
# the direct client can count content events without decoding every one of them.
GENESYS_CONTENT_MARK = b'"delta":{"content":'


def now() -> float:
    return time.perf_counter()


@dataclass
class Stream:
    """One request and what came back."""

    sent: float
    in_window: bool  # sent while the window was open: its first token is a TTFT sample
    first: float | None = None
    last: float | None = None
    done: float | None = None
    deltas: int = 0
    tokens: int = 0
    error: str | None = None
    message_id: int | None = None  # the portal's answer id, needed to stop it
    stopped: bool = False  # stopped by the client at the end of the run (what follows is expected)


class Metrics:
    """What the clients record; only events inside the window count toward the figures."""

    def __init__(self) -> None:
        self.measuring = False
        self.ttft: list[float] = []
        self.gaps: list[float] = []
        self.deltas = 0
        self.completions = 0
        self.completed_deltas = 0  # the deltas of the completions counted (all of their deltas)
        self.tokens = 0
        self.window_errors = 0
        self.errors: Counter[str] = Counter()
        self.error_details: dict[str, str] = {}
        self.connected = 0
        self.stopped = 0  # streams stopped on purpose at the end of a hold run

    def on_delta(self, stream: Stream, at: float) -> None:
        if stream.first is None:
            stream.first = at
            if stream.in_window:
                self.ttft.append((at - stream.sent) * 1000)
        elif self.measuring:
            self.gaps.append((at - stream.last) * 1000)
        stream.last = at
        stream.deltas += 1
        if self.measuring:
            self.deltas += 1

    def on_done(self, stream: Stream, at: float, tokens: int) -> None:
        stream.done, stream.tokens = at, tokens
        if self.measuring:
            self.completions += 1
            self.completed_deltas += stream.deltas
            self.tokens += tokens

    def on_error(self, stream: Stream | None, code: str, detail: str = "") -> None:
        if stream is not None:
            if stream.stopped:
                return  # the client closed or stopped it: how it ends is not the target's error
            stream.error = code
        self.errors[code] += 1
        self.error_details.setdefault(code, detail[:300])
        if self.measuring:
            self.window_errors += 1


# --- the portal's websocket ---------------------------------------------------------------------


class PortalClient:
    """One browser tab: a websocket with a session cookie, one answer at a time."""

    def __init__(self, target: dict, index: int, spec: dict, metrics: Metrics) -> None:
        cookies = target["cookies"]
        self.url = target["url"]
        self.origin = target["origin"]
        self.cookie = f"sessionid={cookies[index % len(cookies)]}"
        self.frame = json.dumps({
            "type": "send", "conversation": None, "content": spec["prompt"], "model": target.get("model", "gpt-4"),
            "temperature": 0.7, "max_tokens": spec["max_tokens"],
        })
        self.metrics = metrics
        self.ws = None

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        # No compression and no keepalive pings: neither is part of what is measured.
        self.ws = await connect(
            self.url, origin=self.origin, additional_headers={"Cookie": self.cookie},
            compression=None, ping_interval=None, max_size=None, open_timeout=60,
        )

    async def request(self, stream: Stream) -> None:
        from websockets.exceptions import ConnectionClosed

        metrics = self.metrics
        try:
            await self.ws.send(self.frame)
            while True:
                raw = await self.ws.recv()
                at = now()
                # Deltas are most frames; Django's json.dumps puts "type" first, so a prefix test
                # saves decoding them (anything else is decoded and handled by its type).
                if raw.startswith('{"type": "delta"'):
                    metrics.on_delta(stream, at)
                    continue
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "delta":
                    metrics.on_delta(stream, at)
                elif kind == "started":
                    stream.message_id = frame.get("message")
                elif kind == "done":
                    if frame.get("status") == "complete":
                        metrics.on_done(stream, at, int((frame.get("usage") or {}).get("output_tokens") or 0))
                    else:
                        stream.done = at  # stopped at the end of the run: not a completion
                    return
                elif kind == "error":
                    metrics.on_error(stream, frame.get("code") or "error", frame.get("detail") or "")
                    return
        except ConnectionClosed as exc:
            metrics.on_error(stream, "socket_closed", str(exc))
            self.ws = None

    async def stop(self, stream: Stream) -> None:
        """Stop an answer still running at the end, so it does not load the next measurement."""
        if self.ws is not None and stream.message_id:
            try:
                await self.ws.send(json.dumps({"type": "stop", "message": stream.message_id}))
            except Exception:
                pass

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None


# --- plain HTTP/1.1 + SSE (the emulator directly, or LiteLLM) -----------------------------------


class ChunkedDecoder:
    """Incremental decoder of an HTTP/1.1 chunked body; ``done`` once the last chunk arrived."""

    def __init__(self) -> None:
        self.buffer = b""
        self.need = 0  # bytes left in the current chunk
        self.state = "size"
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = []
        while not self.done:
            if self.state == "size":
                end = self.buffer.find(b"\r\n")
                if end < 0:
                    break
                size = int(self.buffer[:end].split(b";")[0], 16)
                self.buffer = self.buffer[end + 2:]
                if size == 0:
                    self.done = True
                    break
                self.need, self.state = size, "data"
            elif self.state == "data":
                if not self.buffer:
                    break
                piece = self.buffer[:self.need]
                self.buffer = self.buffer[len(piece):]
                out.append(piece)
                self.need -= len(piece)
                if self.need == 0:
                    self.state = "crlf"
            else:  # the CRLF after a chunk's data
                if len(self.buffer) < 2:
                    break
                self.buffer = self.buffer[2:]
                self.state = "size"
        return b"".join(out)


class SSEClient:
    """One keep-alive HTTP/1.1 connection streaming completions (raw asyncio: no client library
    between the timer and the socket, so the direct figures are the emulator's own)."""

    def __init__(self, target: dict, index: int, spec: dict, metrics: Metrics) -> None:
        base = urlsplit(target["base"])
        self.host, self.port = base.hostname, base.port
        self.openai = target["kind"] == "openai"
        if self.openai:
            path = OPENAI_PATH
            payload = {"model": target.get("model", "gpt-4"), "messages": [{"role": "user", "content": spec["prompt"]}],
                       "max_tokens": spec["max_tokens"], "temperature": 0.7, "stream": True,
                       "stream_options": {"include_usage": True}}
        else:
            path = GENESYS_PATH
            payload = {"messages": [{"role": "user", "content": spec["prompt"]}],
                       "params": {"model_id": "gpt-4", "temperature": 0.7, "max_tokens": spec["max_tokens"], "stream": True}}
        body = json.dumps(payload).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Authorization: Bearer {self.token(target, index)}\r\nContent-Type: application/json\r\n"
                f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n")
        self.request_bytes = head.encode() + body
        self.metrics = metrics
        self.reader = self.writer = None

    @staticmethod
    def token(target: dict, index: int) -> str:
        # The portal's API: one key per bench user, as its websocket clients have one session each.
        tokens = target.get("tokens")
        return tokens[index % len(tokens)] if tokens else target["token"]

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, stream: Stream) -> None:
        try:
            if self.writer is None:
                await self.connect()
            stream.sent = now()  # after a reconnect, time the request itself
            self.writer.write(self.request_bytes)
            status, headers, rest = await self._read_head()
            if status != 200:
                body = await self._read_plain_body(headers, rest)
                self.metrics.on_error(stream, f"http_{status}", body.decode(errors="replace"))
                return
            await self._read_events(stream, headers, rest)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.metrics.on_error(stream, "connection_" + type(exc).__name__, str(exc))
            await self.close()

    async def _read_head(self) -> tuple[int, dict, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise asyncio.IncompleteReadError(data, None)
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, rest

    async def _read_plain_body(self, headers: dict, rest: bytes) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            decoder, body = ChunkedDecoder(), b""
            body += decoder.feed(rest)
            while not decoder.done:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                body += decoder.feed(chunk)
            return body
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = await self.reader.read(65536)
            if not chunk:
                break
            rest += chunk
        return rest

    async def _read_events(self, stream: Stream, headers: dict, rest: bytes) -> None:
        """Each network read with content counts as one delta (as the portal relays one per read)."""
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        decoder = ChunkedDecoder() if chunked else None
        pending = b""
        tokens = content_events = 0
        finished = False
        data = rest
        while True:
            at = now()
            payload = decoder.feed(data) if decoder else data
            pending += payload
            if b"\n\n" in pending:
                *events, pending = pending.split(b"\n\n")
                found = 0
                for event in events:
                    count, usage, end = self._parse(event)
                    found += count
                    if usage is not None:
                        tokens = usage
                    finished = finished or end
                if found:
                    content_events += found
                    self.metrics.on_delta(stream, at)
            if (decoder and decoder.done) or (not decoder and finished):
                break
            data = await self.reader.read(65536) if self.reader is not None else b""
            if not data:
                await self.close()
                break
        if finished:
            self.metrics.on_done(stream, now(), tokens or content_events)
        else:
            self.metrics.on_error(stream, "stream_ended_early", "the stream ended without [DONE]")

    def _parse(self, event: bytes) -> tuple[int, int | None, bool]:
        """(content events, completion tokens if this event has usage, end of stream)."""
        if not event.startswith(b"data: "):
            return 0, None, False
        data = event[6:]
        if data == b"[DONE]":
            return 0, None, True
        if not self.openai:
            if GENESYS_CONTENT_MARK in data:
                return 1, None, False
            if b'"usage"' in data:
                return 0, json.loads(data)["usage"].get("completion_tokens"), False
            return 0, None, False
        chunk = json.loads(data)
        choices = chunk.get("choices") or [{}]
        content = (choices[0].get("delta") or {}).get("content")
        usage = chunk.get("usage")
        return (1 if content else 0), (usage or {}).get("completion_tokens"), False

    async def stop(self, stream: Stream) -> None:
        # Closing the connection is how an HTTP client stops a stream; the request reading it
        # sees the end of the stream and closes its side.
        if self.writer is not None:
            self.writer.close()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None


def fetch_token(target: dict) -> str:
    """A bearer token from the emulator's /oauth/token (HTTP Basic client credentials)."""
    basic = base64.b64encode(f"{target['client_id']}:{target['client_secret']}".encode()).decode()
    request = urllib.request.Request(
        target["base"].rstrip("/") + "/oauth/token",
        data=b"grant_type=client_credentials&scope=ai:generation:write",
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["access_token"]


# --- running a load -----------------------------------------------------------------------------


def mark(name: str) -> None:
    sys.stdout.write(json.dumps({"mark": name}) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Load:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.metrics = Metrics()
        self.streams: list[Stream] = []
        self.stopping = asyncio.Event()
        self.connect_gate = asyncio.Semaphore(spec.get("connect_concurrency", 50))
        target = spec["target"]
        make = PortalClient if target["kind"] == "portal" else SSEClient
        self.clients = [make(target, i, spec, self.metrics) for i in range(spec["clients"])]
        self.last: dict[int, Stream] = {}  # client index -> its latest stream

    async def run(self) -> dict:
        mark("idle")
        self.began = now()
        tasks = [asyncio.create_task(self.client_task(i)) for i in range(len(self.clients))]
        if self.spec["mode"] == "hold":
            window = await self.hold_window(tasks)
        else:
            window = await self.closed_window()
        self.stopping.set()
        await self.finish(tasks)
        result = self.result(window)
        result["run_seconds"] = round(now() - self.began, 3)
        return result

    async def client_task(self, index: int) -> None:
        client = self.clients[index]
        async with self.connect_gate:
            try:
                await client.connect()
            except Exception as exc:  # refused, handshake rejected, timeout: all count
                self.metrics.on_error(None, "connect_" + type(exc).__name__, str(exc))
                return
        self.metrics.connected += 1
        hold = self.spec["mode"] == "hold"
        # Clients that all start at once stay in lock-step (equal replies end together) and
        # measure a burst every reply; spread their first requests over `stagger` seconds.
        await asyncio.sleep(self.spec.get("stagger", 0) * index / len(self.clients))
        while not self.stopping.is_set():
            stream = Stream(sent=now(), in_window=self.metrics.measuring)
            self.streams.append(stream)
            self.last[index] = stream
            await client.request(stream)
            if stream.error:
                await asyncio.sleep(0.1)  # a failing target must not turn the loop into a spin
            if hold:
                break
        if hold:
            await self.stopping.wait()

    async def closed_window(self) -> tuple[float, float, float]:
        spec = self.spec
        await asyncio.sleep(spec.get("warmup", 0))
        start = self.open_window()
        limit = max(spec["duration"], spec.get("max_duration", spec["duration"]))
        while True:
            await asyncio.sleep(0.1)
            elapsed = now() - start
            if elapsed >= limit or (elapsed >= spec["duration"] and len(self.metrics.ttft) >= spec.get("min_samples", 0)):
                break
        return self.close_window(start)

    async def hold_window(self, tasks) -> tuple[float, float, float]:
        """Wait until every stream has started (or failed), then measure with all of them open."""
        deadline = now() + self.spec.get("ramp_timeout", 120)
        while now() < deadline and not all(self.settled(i, t) for i, t in enumerate(tasks)):
            await asyncio.sleep(0.05)
        self.ramp_seconds = now() - self.began
        self.open_streams = sum(1 for s in self.last.values() if s.first is not None and s.done is None and not s.error)
        start = self.open_window()
        await asyncio.sleep(self.spec["duration"])
        return self.close_window(start)

    def settled(self, index: int, task: asyncio.Task) -> bool:
        stream = self.last.get(index)
        return task.done() or (stream is not None and (stream.first is not None or bool(stream.error)))

    def open_window(self) -> float:
        self.cpu_start = cpu_seconds()
        mark("start")
        self.metrics.measuring = True
        return now()

    def close_window(self, start: float) -> tuple[float, float, float]:
        self.metrics.measuring = False
        end = now()
        mark("end")
        return start, end, cpu_seconds() - self.cpu_start

    async def finish(self, tasks) -> None:
        """End the run: hold streams are stopped at once (they were long on purpose); closed-loop
        streams get `drain` seconds to end, and the ones still running then count as errors."""
        drain = self.spec.get("drain", 10)
        if self.spec["mode"] == "hold":
            await self.stop_running(as_error=False)
        _, pending = await asyncio.wait(tasks, timeout=drain) if tasks else (set(), set())
        if pending:
            await self.stop_running(as_error=True)
            _, pending = await asyncio.wait(pending, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*(client.close() for client in self.clients), return_exceptions=True)

    async def stop_running(self, *, as_error: bool) -> None:
        for index, stream in list(self.last.items()):
            if stream.done is None and not stream.error and not stream.stopped:
                if as_error:
                    self.metrics.on_error(stream, "unfinished_at_end", "still streaming when the run ended")
                else:
                    self.metrics.stopped += 1
                stream.stopped = True
                await self.clients[index].stop(stream)

    def result(self, window: tuple[float, float, float]) -> dict:
        start, end, client_cpu = window
        seconds = end - start
        m = self.metrics
        result = {
            "window_seconds": round(seconds, 3),
            "clients": len(self.clients),
            "connected": m.connected,
            "requests": len(self.streams),
            "completions": m.completions,
            "tokens": m.tokens,
            "deltas": m.deltas,
            "completions_per_s": m.completions / seconds if seconds else 0,
            "tokens_per_s": m.tokens / seconds if seconds else 0,
            "deltas_per_completion": m.completed_deltas / m.completions if m.completions else None,
            "ttft_ms": summarize(m.ttft),
            "gap_ms": summarize(m.gaps),
            "errors": dict(m.errors),
            "error_details": m.error_details,
            "window_errors": m.window_errors,
            "client_cpu_s": round(client_cpu, 3),
            "completed_streams": sum(1 for s in self.streams if s.done is not None and not s.error),
        }
        if self.spec["mode"] == "hold":
            result["open_streams_at_start"] = self.open_streams
            result["stopped_at_end"] = self.metrics.stopped
            result["ramp_seconds"] = round(self.ramp_seconds, 3)
        return result


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    spec = json.load(sys.stdin)
    raise_open_files_limit()
    target = spec["target"]
    if target["kind"] == "genesys" and not target.get("token"):
        target["token"] = fetch_token(target)
    result = asyncio.run(Load(spec).run())
    sys.stdout.write(json.dumps({"result": result}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
