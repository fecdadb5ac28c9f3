"""What the tests share besides fixtures: the cast of users, a browser's chat socket, a running portal.

The cast (as healthchecks' tests name theirs), made by the fixtures of the same names in
tests/conftest.py:

    alice    the owner, in team Red: her conversations, answers and audit entries are under test
    bob      a teammate, in team Red: sees nothing of alice's unless she shares it with Red
    charlie  an outsider, in team Blue: never sees anything of alice's
    olivia   a compliance officer (in the default team): staff in the "Compliance officers"
             group, who may read the audit trail and transcripts in the admin, and change nothing
    tess     (tests of the team page) Red's team admin

Tests import from here, never from conftest.py.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from gateway_portal.child_processes import CAPTURE, ChildProcess, LinePrinted, NotReady, free_port
from gateway_portal.models import OFFICER_PERMISSIONS  # noqa: F401  what the officers' group may view

PROJECT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT / "test-artifacts"  # the browser tests' screenshots


def team_named(name: str):
    from gateway_portal.models import Team

    return Team.objects.get_or_create(slug=name.lower(), defaults={"name": name})[0]


def make_person(name: str, *, team: str | None = None, officer: bool = False, role: str = "member"):
    """A person with a password of `<name>-password-1`; in `team` only (else the default team),
    with `role` there ("member" or "admin"); an officer is staff in the officers' group."""
    from django.contrib.auth import get_user_model

    from gateway_portal.models import Membership, compliance_officers

    person = get_user_model().objects.create_user(name, password=f"{name}-password-1", is_staff=officer)
    if team is not None:
        Membership.objects.filter(user=person).delete()
        Membership.objects.create(user=person, team=team_named(team), role=role)
    if officer:
        person.groups.add(compliance_officers())
    return person


def nonce() -> str:
    """Makes a prompt unique, so the emulator's per-prompt fault counters start at zero."""
    return uuid.uuid4().hex[:8]


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


def _test_database_url() -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    host = db.get("HOST") or "127.0.0.1"
    if host.startswith("/"):
        return f"postgresql://{db['USER']}:{db.get('PASSWORD') or ''}@/{db['NAME']}?host={host}"
    return f"postgresql://{db['USER']}:{db.get('PASSWORD') or ''}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"


class RunningPortal:
    def __init__(self, child: ChildProcess, port: int):
        self.child = child
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def output(self) -> str:
        return self.child.output()

    def stop(self, timeout=20) -> str:
        """SIGTERM, as a service manager would; returns all it printed, stopping included."""
        if not self.child.stop(timeout):
            raise AssertionError("runportal did not stop on SIGTERM")
        return self.output


def launch_portal(*args: str, **env: str) -> RunningPortal:
    """`manage.py runportal` in its own process on the test database, with its own emulator."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "PORTAL_ADMIN_PASSWORD": "admin-password-1",
        "EMULATOR_TTFT_MS": "200",
        "EMULATOR_TOKENS_PER_SECOND": "60",
        **env,
    }
    env.pop("GENESYS_CLIENT_ID", None)
    # Dies with the test run: an interrupted run leaves no portal holding the test database.
    child = ChildProcess.start(
        [sys.executable, "manage.py", "runportal", "--port", str(port), *args],
        name="runportal", cwd=PROJECT, env=env, output=CAPTURE, die_with_parent=True,
    )
    try:
        child.wait_ready(LinePrinted("is running at"), 60)
    except NotReady as exc:
        pytest.fail(str(exc))
    return RunningPortal(child, port)
