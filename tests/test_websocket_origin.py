"""Only the portal's own pages may open the chat socket: same scheme, host and port."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from gateway_portal.asgi import application
from tests.helpers import session_cookie_for

pytestmark = pytest.mark.django_db(transaction=True)


async def handshake(alice, origin, *, host="127.0.0.1:8000", scheme="ws", extra=()):
    cookie = await sync_to_async(session_cookie_for)(alice)
    headers = [(b"host", host.encode()), (b"cookie", f"sessionid={cookie}".encode()), *extra]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    communicator.scope["scheme"] = scheme
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return connected


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9999",  # another port of the same host
        "https://127.0.0.1",  # another scheme (and port)
        "http://127.0.0.1",  # port 80, not 8000
        "http://evil.example:8000",
        "null",
        None,  # no Origin header at all
    ],
)
async def test_a_socket_from_another_origin_is_refused(alice, origin):
    assert not await handshake(alice, origin)


async def test_the_portals_own_origin_is_accepted(alice):
    assert await handshake(alice, "http://127.0.0.1:8000")
    assert await handshake(alice, "HTTP://LOCALHOST:8000", host="localhost:8000")


async def test_default_ports_match_with_or_without_the_number(alice):
    assert await handshake(alice, "https://localhost", host="localhost:443", scheme="wss")
    assert not await handshake(alice, "http://localhost", host="localhost:443", scheme="wss")


async def test_a_host_outside_allowed_hosts_is_refused_even_from_its_own_origin(alice):
    assert not await handshake(alice, "http://evil.example:8000", host="evil.example:8000")


async def test_a_trusted_origin_from_settings_is_accepted(alice, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com"]
    assert await handshake(alice, "https://chat.example.com")
    assert not await handshake(alice, "http://chat.example.com")


async def test_behind_a_tls_proxy_the_forwarded_scheme_counts(alice, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    forwarded = ((b"x-forwarded-proto", b"https"),)
    assert await handshake(alice, "https://127.0.0.1:8000", extra=forwarded)
    assert not await handshake(alice, "http://127.0.0.1:8000", extra=forwarded)
