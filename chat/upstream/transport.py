"""The network layer under the upstream client: httpcore on plain asyncio instead of anyio.

Why: httpx/httpcore reach the network through anyio, which on every read enters a cancel scope,
detects the running async library and pauses and resumes the transport. For a completion
stream that is hundreds of small reads, that was most of the portal's CPU per relayed token
(docs/BENCHMARKS.md). HTTP itself - h11 parsing, pooling, TLS settings, errors - stays httpx's
and httpcore's; this module only implements httpcore's documented network-backend interface
(`AsyncNetworkBackend` / `AsyncNetworkStream`) with an asyncio Protocol and a byte buffer.
A read that finds data already buffered returns it without suspending or arming a timer.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import typing

import httpcore
import httpx

_HIGH_WATER = 1 << 20  # stop reading from the socket while this much is buffered
_LOW_WATER = 1 << 18


class _StreamProtocol(asyncio.Protocol):
    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self._read_waiter: asyncio.Future | None = None
        self._drain_waiter: asyncio.Future | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake_reader()

    def eof_received(self):
        self.eof = True
        self._wake_reader()
        return False  # let the transport close itself

    def connection_lost(self, exc):
        self.eof = True
        self.error = exc
        self._wake_reader()
        self.writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self):
        self.writing_paused = True

    def resume_writing(self):
        self.writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _wake_reader(self):
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    async def wait_readable(self, timeout: float | None) -> None:
        self._read_waiter = asyncio.get_running_loop().create_future()
        try:
            await _wait(self._read_waiter, timeout)
        finally:
            self._read_waiter = None

    async def drain(self, timeout: float | None) -> None:
        self._drain_waiter = asyncio.get_running_loop().create_future()
        try:
            await _wait(self._drain_waiter, timeout)
        finally:
            self._drain_waiter = None


async def _wait(future: asyncio.Future, timeout: float | None) -> None:
    if timeout is None:
        await future
        return
    handle = asyncio.get_running_loop().call_later(timeout, _expire, future)
    try:
        await future
    finally:
        handle.cancel()


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, protocol: _StreamProtocol):
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            try:
                await protocol.wait_readable(timeout)
            except TimeoutError as exc:
                raise httpcore.ReadTimeout("timed out waiting for the upstream") from exc
        if protocol.buffer:
            data = bytes(protocol.buffer[:max_bytes])
            del protocol.buffer[:max_bytes]
            if protocol.reading_paused and len(protocol.buffer) < _LOW_WATER:
                protocol.reading_paused = False
                protocol.transport.resume_reading()
            return data
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error)) from protocol.error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        protocol = self._protocol
        if protocol.transport is None or protocol.transport.is_closing():
            raise httpcore.WriteError("the connection to the upstream is closed")
        protocol.transport.write(buffer)
        if protocol.writing_paused:
            try:
                await protocol.drain(timeout)
            except TimeoutError as exc:
                raise httpcore.WriteTimeout("timed out writing to the upstream") from exc

    async def aclose(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> AsyncioStream:
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(protocol.transport, protocol, ssl_context, server_hostname=server_hostname), timeout
            )
        except TimeoutError as exc:
            protocol.transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake with the upstream") from exc
        except (OSError, ssl.SSLError) as exc:
            protocol.transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        protocol.transport = transport
        return self

    def get_extra_info(self, info: str) -> typing.Any:
        transport = self._protocol.transport
        if info == "is_readable":
            # An idle pooled connection that became readable was closed by the server.
            return bool(self._protocol.buffer) or self._protocol.eof
        if transport is None:
            return None
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(
                    _StreamProtocol, host, port, local_addr=(local_address, 0) if local_address else None
                ),
                timeout,
            )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(protocol)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await asyncio.wait_for(loop.create_unix_connection(_StreamProtocol, path), timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"timed out connecting to {path}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return AsyncioStream(protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _LinearPool(httpcore.AsyncConnectionPool):
    """httpcore's pool with its assignment pass made linear.

    httpcore 1.0.9 rebuilds a list of every connection for each idle connection it looks at
    (counting all connections, not the idle ones) and re-filters all connections for each
    queued request: O(connections²) on every request start and every response close. With one
    HTTP/1.1 connection per open stream, 200 streams spent ~40% of the portal's CPU there
    (py-spy, docs/BENCHMARKS.md). Upstream fix: encode/httpcore#1035 (open), merged in the
    pydantic/httpx2 fork. Same decisions as httpcore's, in one pass each: drop closed
    connections, close expired ones and idle ones beyond max_keepalive_connections, then give
    each queued request an available connection (each at most once: this pool speaks HTTP/1.1
    only), a new one, or an idle one's place.
    """

    def _assign_requests_to_connections(self) -> list:
        closing = []
        kept = []
        idle = 0
        for connection in self._connections:
            if connection.is_closed():
                continue
            if connection.has_expired():
                closing.append(connection)
                continue
            if connection.is_idle():
                if idle >= self._max_keepalive_connections:
                    closing.append(connection)
                    continue
                idle += 1
            kept.append(connection)
        self._connections[:] = kept

        queued = [request for request in self._requests if request.is_queued()]
        if not queued:
            return closing
        available = [c for c in self._connections if c.is_available()]
        idle_connections = [c for c in self._connections if c.is_idle()]
        reserved = set()  # assigned in this pass: still idle until their request starts
        for pool_request in queued:
            origin = pool_request.request.url.origin
            for index, connection in enumerate(available):
                if connection.can_handle_request(origin):
                    del available[index]
                    reserved.add(connection)
                    pool_request.assign_to_connection(connection)
                    break
            else:
                if len(self._connections) < self._max_connections:
                    connection = self.create_connection(origin)
                    self._connections.append(connection)
                    pool_request.assign_to_connection(connection)
                    continue
                while idle_connections and idle_connections[0] in reserved:
                    idle_connections.pop(0)
                if idle_connections:
                    stale = idle_connections.pop(0)
                    self._connections.remove(stale)
                    closing.append(stale)
                    connection = self.create_connection(origin)
                    self._connections.append(connection)
                    pool_request.assign_to_connection(connection)
        return closing


def upstream_transport(limits: httpx.Limits, verify: str | bool = True) -> httpx.AsyncHTTPTransport:
    """httpx's transport, with its connection pool on the asyncio backend above.

    `verify`: True (certifi's CA bundle, as httpx does), False, or the path of a CA bundle.
    httpx does not take a network backend as an argument, so the pool it built is replaced by an
    identical one (same TLS context and limits) that has one; proxies from the environment are
    still served by httpx's own transports (AsyncClient mounts those separately).
    """
    if isinstance(verify, str):
        context = ssl.create_default_context(cafile=verify)
    else:
        context = httpx.create_ssl_context(verify=verify)
    transport = httpx.AsyncHTTPTransport(verify=context, limits=limits)
    transport._pool = _LinearPool(
        ssl_context=context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncioBackend(),
        http1=True,
        http2=False,  # _LinearPool assumes one request per connection at a time
    )
    return transport
