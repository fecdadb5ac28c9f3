"""The HTTP/1.1 client that carries completion streams: an asyncio Protocol per connection, the
response parsed by httptools, and a small keep-alive pool.

Why not httpx here (it still fetches tokens): a streamed completion is one small chunked read per
token, and every read went through httpx -> httpcore -> h11: six async-generator layers and a
pure-Python parser state machine, ~37 µs of CPU per token, plus httpcore's pool work per request
(anyio events, a pass over every connection at each start and end). At 200 concurrent answers
that was a third of the portal's CPU (docs/PERFORMANCE.md). Here `data_received` hands the bytes
to httptools (llhttp, the C parser uvicorn serves with), which decodes the chunked body into
`on_body`; the reader wakes once per network read and takes everything that arrived.

Scope, on purpose: what the AI Gateway needs. HTTP/1.1 POST with a known body, responses framed
by chunked encoding, Content-Length or connection close, keep-alive reuse, TLS with verification,
connect and read timeouts, and a corporate proxy (`Proxies`: HTTPS_PROXY / HTTP_PROXY / NO_PROXY,
credentials from the proxy URL): an https target through a CONNECT tunnel, TLS end to end inside
it; an http target with absolute-form requests to the proxy. Errors are this module's exceptions;
genesys.py translates them.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import certifi
import httptools

_HIGH_WATER = 1 << 20  # stop reading from the socket while this much body is unread
_LOW_WATER = 1 << 18


class StreamError(Exception):
    """The connection failed or the response could not be read (refused, reset, malformed)."""


class StreamTimeout(StreamError):
    pass


def ssl_context(verify: str | bool) -> ssl.SSLContext:
    """True: certifi's CA bundle (as httpx does); False: no verification; a path: that CA bundle."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else certifi.where())


@dataclass(frozen=True)
class Proxy:
    """An http:// proxy: where it listens and the Proxy-Authorization its URL's credentials make."""

    host: str
    port: int
    authorization: str | None

    @classmethod
    def from_url(cls, url: str) -> Proxy:
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            raise StreamError(f"only http:// proxies are supported, not {parts.scheme}:// (check HTTPS_PROXY / HTTP_PROXY)")
        authorization = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return cls(parts.hostname, parts.port or 80, authorization)

    def __repr__(self) -> str:  # never the credentials
        return f"Proxy({self.host}:{self.port})"


@dataclass(frozen=True)
class Proxies:
    """Which proxy a URL goes through, by the conventions of curl and httpx: HTTPS_PROXY for https
    targets, HTTP_PROXY for http ones, none for a host NO_PROXY names. NO_PROXY is a comma-separated
    list of host names (matching the name and its subdomains; a leading dot or `*.` is the same),
    host:port, IP addresses, CIDR ranges (10.0.0.0/8), or `*` for every host."""

    https: str = ""
    http: str = ""
    no_proxy: str = ""

    def url_for(self, url: str) -> str | None:
        """The proxy URL for `url` (credentials included), or None to connect directly."""
        target = urllib.parse.urlsplit(url)
        proxy = self.https if target.scheme == "https" else self.http
        if not proxy or not target.hostname:
            return None
        if self.bypasses(target.hostname, target.port or (443 if target.scheme == "https" else 80)):
            return None
        return proxy

    def for_url(self, url: str) -> Proxy | None:
        proxy = self.url_for(url)
        return Proxy.from_url(proxy) if proxy else None

    def bypasses(self, host: str, port: int) -> bool:
        host = host.lower().strip("[]").rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        for entry in (e.strip().lower() for e in self.no_proxy.split(",")):
            if not entry:
                continue
            if entry == "*":
                return True
            name, entry_port = entry, None
            if entry.startswith("[") and "]" in entry:  # [::1]:8080
                name, _, rest = entry[1:].partition("]")
                entry_port = rest[1:] or None
            elif entry.count(":") == 1:
                name, entry_port = entry.split(":")
            if entry_port is not None and entry_port != str(port):
                continue
            if address is not None:
                try:
                    if address in ipaddress.ip_network(name, strict=False):
                        return True
                except ValueError:
                    pass
                continue
            name = name.removeprefix("*").lstrip(".").rstrip(".")
            if name and (host == name or host.endswith("." + name)):
                return True
        return False


class _Connection(asyncio.Protocol):
    def __init__(self, key: tuple):
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self.used = False
        self._waiter: asyncio.Future | None = None
        self._reset()

    def _reset(self):
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.received_any = False
        self.body = bytearray()
        self.reading_paused = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = StreamError(f"the upstream sent a malformed HTTP response: {exc}")
            self.transport.close()
        if len(self.body) > _HIGH_WATER and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake()

    def eof_received(self):
        self._end_of_stream()
        return False  # let the transport close itself

    def connection_lost(self, exc):
        self._end_of_stream(exc)

    def _end_of_stream(self, exc=None):
        self.closed = True
        if self.headers_done and not self.complete and self._close_delimited():
            self.complete = True  # no length and not chunked: the body ends with the connection
        elif not self.complete and self.error is None:
            self.error = StreamError(str(exc) if exc else "the upstream closed the connection")
        self._wake()

    def _close_delimited(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "").lower()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes):
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self):
        self.status = self.parser.get_status_code()
        # Asked now: after the message completes, llhttp has reset and always answers False.
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True

    def on_body(self, body: bytes):
        self.body += body

    def on_message_complete(self):
        self.complete = True

    # -- used by the pool and the response ---------------------------------------------------

    def _wake(self):
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        handle = loop.call_later(timeout, self._expire) if timeout is not None else None
        try:
            await self._waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    def _expire(self):
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(StreamTimeout("timed out waiting for the upstream"))

    def take_body(self) -> bytes:
        data = bytes(self.body)
        self.body.clear()
        if self.reading_paused and len(self.body) < _LOW_WATER:
            self.reading_paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return self.complete and self.error is None and not self.closed and self.keep_alive

    def close(self):
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class StreamResponse:
    """A response whose body is read as it arrives. Always `close()` it (the pool needs it back)."""

    def __init__(self, pool: StreamPool, connection: _Connection, read_timeout: float | None):
        self._pool = pool
        self._connection = connection
        self._read_timeout = read_timeout
        self.status = connection.status
        self.headers = connection.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """Every read's worth of body, in order, until the body ends."""
        connection = self._connection
        while True:
            if connection.body:
                yield connection.take_body()
                continue
            if connection.complete:
                return
            if connection.error is not None:
                raise connection.error
            await connection.wait(self._read_timeout)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def close(self) -> None:
        if self._connection is not None:
            self._pool._release(self._connection)
            self._connection = None


class StreamPool:
    """Keep-alive connections by origin; at most `max_connections` requests in flight at once."""

    def __init__(self, *, verify: str | bool = True, max_connections: int = 100, keepalive_expiry: float = 30.0,
                 connect_timeout: float | None = 10.0, read_timeout: float | None = 60.0, proxies: Proxies | None = None):
        self.proxies = proxies or Proxies()
        self._ssl = ssl_context(verify)
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_connections
        self._idle: dict[tuple, list[_Connection]] = {}
        self._keepalive_expiry = keepalive_expiry
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes) -> StreamResponse:
        """Send the request and wait for the response head; the body is read from the response."""
        target = urllib.parse.urlsplit(url)
        if target.scheme not in ("http", "https") or not target.hostname:
            raise StreamError(f"not an http(s) URL: {url}")
        proxy = self.proxies.for_url(url)
        key = (target.scheme, target.hostname, target.port or (443 if target.scheme == "https" else 80), proxy)
        # Plain http through a proxy: the request names the whole URL, to the proxy (absolute form).
        forward = proxy if proxy is not None and target.scheme == "http" else None
        head = _request_head(method, target, headers, len(body), forward)
        try:
            # httpx's "pool timeout": waiting for a free connection counts as connecting.
            await asyncio.wait_for(self._slots.acquire(), self._connect_timeout)
        except TimeoutError as exc:
            raise StreamTimeout(f"all {self._max_idle} upstream connections stayed busy") from exc
        try:
            while True:
                connection = self._take_idle(key) or await self._connect(key)
                reused = connection.used
                connection.used = True
                connection.transport.write(head + body)
                try:
                    while not connection.headers_done:
                        if connection.error is not None:
                            raise connection.error
                        await connection.wait(self._read_timeout)
                except StreamError:
                    connection.close()
                    # A kept-alive connection the server closed meanwhile: once more, on a new one.
                    if reused and not connection.received_any and not isinstance(connection.error, StreamTimeout):
                        continue
                    raise
                return StreamResponse(self, connection, self._read_timeout)
        except BaseException:
            self._slots.release()
            raise

    def _take_idle(self, key) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self._keepalive_expiry:
                connection._reset()
                return connection
            connection.close()
        return None

    async def _connect(self, key) -> _Connection:
        scheme, host, port, proxy = key
        loop = asyncio.get_running_loop()
        tls = self._ssl if scheme == "https" else None
        where = f"{host}:{port}" + (f" through the proxy {proxy.host}:{proxy.port}" if proxy else "")
        try:
            if proxy is None:
                connecting = loop.create_connection(lambda: _Connection(key), host, port, ssl=tls,
                                                    server_hostname=host if tls else None)
            elif tls is None:
                connecting = loop.create_connection(lambda: _Connection(key), proxy.host, proxy.port)
            else:
                connecting = self._tunnel(key, proxy, host, port, tls)
            _, connection = await asyncio.wait_for(connecting, self._connect_timeout)
        except TimeoutError as exc:
            raise StreamTimeout(f"timed out connecting to {where}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise StreamError(f"could not connect to {where}: {exc}") from exc
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    async def _tunnel(self, key, proxy: Proxy, host: str, port: int, tls: ssl.SSLContext):
        """CONNECT through the proxy, then TLS with the target inside the tunnel: the proxy sees
        only where to, never the token or the conversation."""
        loop = asyncio.get_running_loop()
        family, kind, protocol, _, address = (await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM))[0]
        sock = socket.socket(family, kind, protocol)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
            if proxy.authorization:
                lines.append(f"Proxy-Authorization: {proxy.authorization}")
            await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = await loop.sock_recv(sock, 4096)
                if not data or len(answer) > 65536:
                    raise StreamError(f"the proxy {proxy.host}:{proxy.port} closed the tunnel to {authority}")
                answer += data
            head, _, rest = answer.partition(b"\r\n\r\n")
            status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[1].isdigit() or not 200 <= int(parts[1]) < 300:
                raise StreamError(f"the proxy {proxy.host}:{proxy.port} refused a tunnel to {authority}: {status_line}")
            if rest:
                raise StreamError(f"the proxy {proxy.host}:{proxy.port} sent data before the TLS handshake")
            return await loop.create_connection(lambda: _Connection(key), sock=sock, ssl=tls, server_hostname=host)
        except BaseException:
            sock.close()
            raise

    def _release(self, connection: _Connection) -> None:
        self._slots.release()
        idle = self._idle.setdefault(connection.key, [])
        if connection.reusable() and len(idle) < self._max_idle:
            connection.idle_since = time.monotonic()
            idle.append(connection)
        else:
            connection.close()  # mid-body (a stopped answer) or not keep-alive: cannot be reused


def _request_head(method: str, target: urllib.parse.SplitResult, headers: dict[str, str], length: int,
                  forward: Proxy | None = None) -> bytes:
    default_port = 443 if target.scheme == "https" else 80
    host = target.hostname if (target.port or default_port) == default_port else f"{target.hostname}:{target.port}"
    if ":" in target.hostname:  # IPv6 literal
        host = f"[{target.hostname}]" + (f":{target.port}" if target.port else "")
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    if forward is not None:
        path = f"{target.scheme}://{host}{path}"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {length}"]
    if forward is not None and forward.authorization:
        lines.append(f"Proxy-Authorization: {forward.authorization}")
    for name, value in headers.items():
        # Header values include an upstream-issued token: never let one split the request.
        if any(c in name or c in value for c in "\r\n\0"):
            raise StreamError(f"refusing a request header with a line break: {name}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
