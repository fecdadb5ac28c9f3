"""An open chat socket ends with its session: log-out, deactivation, a new password."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chat.models import Message
from gateway_portal.asgi import application
from tests.helpers import ChatSocket, nonce

pytestmark = pytest.mark.django_db(transaction=True)


async def logged_in_socket(user):
    """A browser: its own logged-in session (a Client) and a socket opened with its cookie."""
    client = Client()
    await sync_to_async(client.force_login)(user)
    headers = [
        (b"origin", b"http://127.0.0.1:8000"),
        (b"host", b"127.0.0.1:8000"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return client, ChatSocket(communicator)


async def assert_closed_as_logged_out(socket):
    frame = json.loads(await socket.communicator.receive_from(timeout=5))
    assert frame["code"] == "unauthenticated" and frame["detail"] == "Your session has ended. Log in again to chat."
    closing = await socket.communicator.receive_output(timeout=5)
    assert closing == {"type": "websocket.close", "code": 4401}


async def test_logging_out_closes_that_browsers_socket_but_not_another_browsers(alice):
    client, socket = await logged_in_socket(alice)
    _, other_browser = await logged_in_socket(alice)
    response = await sync_to_async(client.post)("/accounts/logout/")
    assert response.status_code == 302
    await assert_closed_as_logged_out(socket)

    await other_browser.send(type="send", conversation=None, content=f"still mine {nonce()}", model="gpt-4")
    frames = await other_browser.receive_until("done", "error")
    assert frames[-1]["type"] == "done"
    await other_browser.close()


async def test_a_new_password_closes_every_socket_of_the_person(alice):
    _, first = await logged_in_socket(alice)
    _, second = await logged_in_socket(alice)

    def change_password():
        alice.set_password("a-new-password-2")
        alice.save()

    await sync_to_async(change_password)()
    await assert_closed_as_logged_out(first)
    await assert_closed_as_logged_out(second)


async def test_deactivating_the_account_closes_its_sockets_and_leaves_others_open(alice, bob):
    _, alices = await logged_in_socket(alice)
    _, bobs = await logged_in_socket(bob)

    def deactivate():
        alice.is_active = False
        alice.save(update_fields=["is_active"])

    await sync_to_async(deactivate)()
    await assert_closed_as_logged_out(alices)
    assert await bobs.communicator.receive_nothing(timeout=0.3)
    await bobs.close()


async def test_an_answer_running_at_log_out_goes_on_and_is_stored(alice):
    client, socket = await logged_in_socket(alice)
    await socket.send(type="send", conversation=None, content=f"[[emulator tokens=60 rate=200]] {nonce()}", model="gpt-4")
    started = await socket.receive()
    assert started["type"] == "started"
    await sync_to_async(client.post)("/accounts/logout/")
    # The socket is told and closed; deltas sent before the close may come first.
    while (frame := json.loads(await socket.communicator.receive_from(timeout=5)))["type"] == "delta":
        pass
    assert frame["code"] == "unauthenticated"

    for _ in range(100):
        answer = await Message.objects.aget(pk=started["message"])
        if answer.status != "streaming":
            break
        await asyncio.sleep(0.05)
    assert answer.status == "complete" and len(answer.content.split()) == 60


async def test_saving_a_person_without_touching_credentials_leaves_their_sockets_open(alice):
    _, socket = await logged_in_socket(alice)

    def rename():
        alice.first_name = "Alice"
        alice.save()

    await sync_to_async(rename)()
    assert await socket.communicator.receive_nothing(timeout=0.3)
    await socket.close()
