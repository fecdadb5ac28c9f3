"""/healthz and /readyz as a load balancer sees them: 200 when the part they check is there, 503
naming the part that is not."""

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest
from django.test import AsyncClient, Client, override_settings

from chat.emulator.process import start_emulator
from gateway_portal.child_processes import free_port
from tests.helpers import launch_portal


def test_healthz_answers_without_touching_the_database():
    # No django_db mark: pytest-django would fail the test at the first query.
    response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db(transaction=True)
async def test_ready_when_database_redis_and_the_upstream_token_are_there(redis_url):
    with override_settings(REDIS_URL=redis_url):
        response = await AsyncClient().get("/readyz")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ready", body
    assert set(body["checks"]) == {"database", "redis", "upstream"}
    assert all(check["ok"] for check in body["checks"].values())


@pytest.mark.django_db(transaction=True)
async def test_not_ready_when_the_token_endpoint_refuses_the_portal():
    with start_emulator(client_secret="not-the-portals-secret") as emulator, override_settings(EMULATOR_URL=emulator.url):
        response = await AsyncClient().get("/readyz")
    body = response.json()
    assert response.status_code == 503 and body["status"] == "not ready"
    assert body["checks"]["database"]["ok"] and not body["checks"]["upstream"]["ok"]
    assert "sign in" in body["checks"]["upstream"]["error"] or "credentials" in body["checks"]["upstream"]["error"]
    assert "not-the-portals-secret" not in response.content.decode()


@pytest.mark.django_db(transaction=True)
async def test_not_ready_when_redis_is_unreachable():
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        response = await AsyncClient().get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert not body["checks"]["redis"]["ok"] and "ConnectionError" in body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"] and body["checks"]["upstream"]["ok"]


class Cable:
    """A TCP relay to PostgreSQL that can be unplugged: open connections cut, new ones closed at once."""

    def __init__(self, target: tuple[str, int] | str):
        self.target = target  # (host, port), or the path of PostgreSQL's Unix socket (the embedded one)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.plugged = True
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.plugged:
                client.close()
                continue
            if isinstance(self.target, str):
                server = socket.socket(socket.AF_UNIX)
                server.connect(self.target)
            else:
                server = socket.create_connection(self.target)
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def unplug(self):
        self.plugged = False
        for end in self.open:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open = []

    def plug(self):
        self.plugged = True

    def close(self):
        self.unplug()
        self.listener.close()


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.django_db(transaction=True)
def test_a_running_portal_is_not_ready_once_its_database_is_unreachable():
    from django.conf import settings

    db = settings.DATABASES["default"]
    host, port = db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)
    # The embedded PostgreSQL listens on a Unix socket only; the cable reaches either over TCP.
    cable = Cable(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port))
    url = f"postgresql://{db['USER']}:{db.get('PASSWORD') or ''}@127.0.0.1:{cable.port}/{db['NAME']}"
    portal = launch_portal("--job-workers", "0", DATABASE_URL=url, PORTAL_READY_TIMEOUT="2")
    try:
        status, body = get(portal.url + "/readyz")
        assert status == 200 and body["checks"]["database"]["ok"], body
        cable.unplug()
        status, body = get(portal.url + "/readyz")
        assert status == 503 and not body["checks"]["database"]["ok"], body
        assert get(portal.url + "/healthz") == (200, {"status": "ok"})
    finally:
        cable.plug()  # so the portal's own shutdown can store what it has to
        portal.stop()
        cable.close()
