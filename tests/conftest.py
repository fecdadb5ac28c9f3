"""Shared fixtures: real Postgres (embedded unless DATABASE_URL is set), a real emulator process
on a loopback socket, named users (alice owns things, bob is another user), and a logged-in
websocket client speaking to the full ASGI application (session cookie, origin check and all).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client, override_settings

from chat.emulator.process import start_emulator

# Fast, deterministic upstream for the suite; individual tests slow it down with directives.
UPSTREAM_TEST_SETTINGS = dict(
    UPSTREAM_BACKOFF_BASE=0.02,
    UPSTREAM_BACKOFF_MAX=0.1,
    UPSTREAM_READ_TIMEOUT=2.0,
    UPSTREAM_CONNECT_TIMEOUT=2.0,
    UPSTREAM_DEADLINE=10.0,
)


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    """Plain connections in the test process, closed after each sync_to_async call (the executor's
    thread pool), so the test database can be dropped at the end. Not the portal's pool: channels'
    WebsocketCommunicator turns close_old_connections into a no-op while it runs, so answers run
    in-process never give their connections back and a pool would run dry. The `runportal`
    processes the tests start do use the pool (tests/test_crowd.py)."""
    from django.conf import settings

    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    settings.DATABASES["default"]["OPTIONS"].pop("pool", None)


@pytest.fixture(scope="session")
def emulator():
    with start_emulator(ttft_ms=0, tokens_per_second=0, reply_tokens=40) as emu:
        overrides = override_settings(EMULATOR_URL=emu.url, **UPSTREAM_TEST_SETTINGS)
        overrides.enable()
        try:
            yield emu
        finally:
            overrides.disable()


@pytest.fixture(autouse=True)
def _fresh_token_cache(emulator):
    """Each test starts without a cached upstream token, as a fresh process would."""
    from django.core.cache import cache

    from chat.upstream import genesys

    genesys._client = None
    yield
    try:
        cache.clear()
    except RuntimeError:
        pass  # a test without database access (pytest-django blocks it) has no cached token to clear


@pytest.fixture(autouse=True)
async def _close_worker_thread_connections():
    """Async code reaches the ORM through asgiref's worker thread; close its connection after each
    test as a request would, so the test database can be dropped at the end of the run."""
    yield
    from django.db import connections

    await sync_to_async(connections.close_all)()


def nonce() -> str:
    """Makes a prompt unique, so the emulator's per-prompt fault counters start at zero."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-password-1")


def session_cookie_for(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


class ChatSocket:
    """A browser's websocket to /ws/chat/, through the real ASGI stack."""

    def __init__(self, communicator: WebsocketCommunicator):
        self.communicator = communicator

    async def send(self, **frame):
        await self.communicator.send_to(text_data=json.dumps(frame))

    async def send_raw(self, text):
        await self.communicator.send_to(text_data=text)

    async def receive(self, timeout=10):
        return json.loads(await self.communicator.receive_from(timeout=timeout))

    async def receive_until(self, *types, timeout=10):
        """Frames up to and including the first whose type is in `types`."""
        frames = []
        while True:
            frame = await self.receive(timeout=timeout)
            frames.append(frame)
            if frame["type"] in types:
                return frames

    async def close(self):
        await self.communicator.disconnect()


@pytest.fixture
async def open_socket():
    sockets = []

    async def _open(user=None):
        from gateway_portal.asgi import application

        headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
        if user is not None:
            cookie = await sync_to_async(session_cookie_for)(user)
            headers.append((b"cookie", f"sessionid={cookie}".encode()))
        communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        socket = ChatSocket(communicator)
        sockets.append(socket)
        return socket

    yield _open
    for socket in sockets:
        await socket.close()


PROJECT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _test_database_url() -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    host = db.get("HOST") or "127.0.0.1"
    if host.startswith("/"):
        return f"postgresql://{db['USER']}:{db.get('PASSWORD') or ''}@/{db['NAME']}?host={host}"
    return f"postgresql://{db['USER']}:{db.get('PASSWORD') or ''}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"


class RunningPortal:
    def __init__(self, process, port):
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.output = ""

    def stop(self, timeout=20) -> str:
        """SIGTERM, as a service manager would; returns what it printed while stopping."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise AssertionError("runportal did not stop on SIGTERM")
            self.output += self.process.stdout.read()
        return self.output


def launch_portal(*args: str, **env: str) -> RunningPortal:
    """`manage.py runportal` in its own process on the test database, with its own emulator."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "PORTAL_ADMIN_PASSWORD": "admin-password-1",
        "EMULATOR_TTFT_MS": "200",
        "EMULATOR_TOKENS_PER_SECOND": "60",
        **env,
    }
    env.pop("GENESYS_CLIENT_ID", None)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runportal", "--port", str(port), *args],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    running = RunningPortal(process, port)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "is running at" in line:
            break
    running.output = "".join(lines)
    if process.poll() is not None or "is running at" not in running.output:
        process.kill()
        pytest.fail("runportal did not start:\n" + running.output)
    return running


@pytest.fixture
def portal(transactional_db):
    running = launch_portal()
    try:
        yield running
    finally:
        assert "Gateway Portal stopped." in running.stop()


@pytest.fixture(scope="session")
def redis_url():
    """The machine's Redis (PORTAL_TEST_REDIS_URL, else database 14 of 127.0.0.1:6379), for the
    paths with many processes. That database is the tests' own: emptied at the start, so quota
    leases left by an earlier run's killed process (they live an hour) cannot refuse this run's
    users, whose ids start again from 1."""
    import redis

    url = os.environ.get("PORTAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).flushdb()
    except redis.RedisError as exc:
        if os.environ.get("PORTAL_REQUIRE_REDIS"):
            pytest.fail(f"Redis at {url} is needed for the multi-process tests: {exc}")
        pytest.skip(f"no Redis at {url} ({exc}); set PORTAL_TEST_REDIS_URL")
    return url


@pytest.fixture(scope="session", autouse=True)
def _end_worker_thread_connections(django_db_setup, django_db_blocker):
    """The executor's ORM calls run in each test event loop's default thread pool; when
    pytest-asyncio closes a loop its threads end without a request cycle to close their
    connections. End those sessions so the test database can be dropped at the end."""
    yield
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def pytest_sessionfinish(session, exitstatus):
    """Leave the machine as we found it: stop the embedded Postgres if this run started it."""
    from gateway_portal import embedded_db

    if embedded_db.started_here():
        embedded_db.stop()
