"""A crowd against a real `runportal`: 50 people loading pages while their answers stream.

Every page load must succeed and every answer must be stored with its audit entry, within what
PostgreSQL allows (the database connections of a process come from a pool sized to it). No
timings are asserted: only what the 50 people would notice.
"""

import asyncio
import json
import os
import subprocess
import sys

import httpx
import psycopg
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from audit.models import AuditEntry
from chat.models import Message
from gateway_portal.child_processes import free_port
from tests.helpers import PROJECT, _test_database_url, launch_portal, nonce, session_cookie_for

pytestmark = pytest.mark.django_db(transaction=True)

PEOPLE = 50
PAGE_LOADS = 6


def people(count):
    User = get_user_model()
    return [session_cookie_for(User.objects.create_user(f"crowd-{i}")) for i in range(count)]


async def one_person(portal, cookie, index):
    """Ask a question, load the chat page a few times while the answer streams, read it to the end."""
    async with (
        httpx.AsyncClient(base_url=portal.url, cookies={"sessionid": cookie}, timeout=120) as http,
        websockets.connect(
            portal.url.replace("http", "ws") + "/ws/chat/",
            additional_headers={"Cookie": f"sessionid={cookie}", "Origin": portal.url},
            open_timeout=60,
        ) as ws,
    ):
        await ws.send(json.dumps({"type": "send", "conversation": None, "content": f"Question {index} {nonce()}"}))
        statuses = [(await http.get("/")).status_code for _ in range(PAGE_LOADS)]
        async with asyncio.timeout(120):
            while (frame := json.loads(await ws.recv()))["type"] not in ("done", "error"):
                pass
    return statuses, frame


async def crowd(portal):
    cookies = await sync_to_async(people)(PEOPLE)
    results = await asyncio.gather(*(one_person(portal, cookie, i) for i, cookie in enumerate(cookies)))
    statuses = [status for person_statuses, _ in results for status in person_statuses]
    finals = [frame for _, frame in results]
    assert statuses.count(500) == 0 and set(statuses) == {200}
    assert [frame["type"] for frame in finals] == ["done"] * PEOPLE
    answers = await sync_to_async(list)(
        Message.objects.filter(role="assistant", pk__in=[frame["message"] for frame in finals])
    )
    assert len(answers) == PEOPLE and {answer.status for answer in answers} == {"complete"}
    audited = await sync_to_async(AuditEntry.objects.filter(message__in=answers, status="success").count)()
    assert audited == PEOPLE


async def test_fifty_people_loading_pages_while_answers_stream_all_get_them():
    running = await sync_to_async(launch_portal)("--no-admin")
    try:
        await crowd(running)
    finally:
        assert "Gateway Portal stopped." in await sync_to_async(running.stop)()


@pytest.fixture
def database_role():
    """Login roles PostgreSQL lets open only so many connections: the portal must live within that."""
    url = _test_database_url()
    roles = []

    def make(connection_limit):
        role = f"crowd_{nonce()}"
        try:
            admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'crowd-password' CONNECTION LIMIT {connection_limit}")
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the test database's user may not create roles")
        roles.append(role)
        admin.execute(f"GRANT ALL ON SCHEMA public TO {role}")
        admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        return url.replace(url.split("://", 1)[1].split("@", 1)[0], f"{role}:crowd-password", 1)

    with psycopg.connect(url, autocommit=True) as admin:
        try:
            yield make
        finally:
            for role in roles:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role])
                admin.execute(f"DROP OWNED BY {role}")
                admin.execute(f"DROP ROLE {role}")


async def test_two_worker_processes_share_the_connections_postgres_allows(database_role, redis_url):
    database_url = await sync_to_async(database_role)(30)
    running = await sync_to_async(launch_portal)(
        "--no-admin", "--workers", "2", DATABASE_URL=database_url, REDIS_URL=redis_url
    )
    try:
        assert "Database connections: up to 10 per server process (2 server processes" in running.output
        await crowd(running)
    finally:
        assert "Gateway Portal stopped." in await sync_to_async(running.stop)()


def test_runportal_refuses_more_workers_than_the_connections_allow(database_role, redis_url):
    database_url = database_role(16)
    result = subprocess.run(
        [sys.executable, "manage.py", "runportal", "--no-admin", "--workers", "2", "--port", str(free_port())],
        cwd=PROJECT, env={**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert (
        "PostgreSQL lets the portal open only 16 more connections (the role's CONNECTION LIMIT 16); 2 server "
        "processes need at least 4 each, plus 10 spare." in result.stderr
    )
