"""Shared fixtures: real Postgres (embedded unless DATABASE_URL is set), a real emulator process
on a loopback socket, the cast of users (tests/helpers.py says who is who), a logged-in websocket
client speaking to the full ASGI application (session cookie, origin check and all), and a real
runportal process.
"""

from __future__ import annotations

import os

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from chat.emulator.process import start_emulator
from tests.helpers import ChatSocket, launch_portal, make_person, session_cookie_for

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


@pytest.fixture
def alice(django_user_model):
    return make_person("alice", team="Red")


@pytest.fixture
def bob(django_user_model):
    return make_person("bob", team="Red")


@pytest.fixture
def charlie(django_user_model):
    return make_person("charlie", team="Blue")


@pytest.fixture
def tess(django_user_model):
    return make_person("tess", team="Red", role="admin")


@pytest.fixture
def olivia(django_user_model):
    return make_person("olivia", officer=True)


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
