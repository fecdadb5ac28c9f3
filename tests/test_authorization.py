"""Who gets in where: every page, admin view and socket action against the cast.

alice owns the conversations; bob is her teammate (team Red), charlie an outsider (team Blue),
tess Red's team admin, olivia a compliance officer (tests/helpers.py). Someone else's object answers 404 (or, over the
socket, "not_found" / "not_running"), never a hint that it exists; anonymous visitors are sent to
the log-in page.
"""

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from audit.models import AuditEntry
from chat.models import Conversation
from tests.helpers import nonce

pytestmark = pytest.mark.django_db(transaction=True)

LOGIN = "login"  # redirected to the portal's log-in page
ADMIN_LOGIN = "admin login"  # redirected to the admin's log-in page

# (what, {who: expected}); "{private}", "{shared}", "{audit}" are filled in with alice's ids.
PAGES = [
    ("GET /", {"alice": 200, "bob": 200, "tess": 200, "charlie": 200, "olivia": 200, None: LOGIN}),
    ("GET /c/{private}/", {"alice": 200, "bob": 404, "tess": 404, "charlie": 404, "olivia": 404, None: LOGIN}),
    ("GET /c/{shared}/", {"alice": 200, "bob": 200, "tess": 200, "charlie": 404, "olivia": 404, None: LOGIN}),
    ("POST /c/{private}/share/", {"alice": 302, "bob": 404, "tess": 404, "charlie": 404, "olivia": 404, None: LOGIN}),
    ("POST /c/{shared}/share/", {"alice": 302, "bob": 404, "tess": 404, "charlie": 404, "olivia": 404, None: LOGIN}),
    ("GET /admin/chat/conversation/{private}/change/", {"alice": ADMIN_LOGIN, "bob": ADMIN_LOGIN, "tess": ADMIN_LOGIN, "charlie": ADMIN_LOGIN, "olivia": 200, None: ADMIN_LOGIN}),
    ("GET /admin/audit/auditentry/", {"alice": ADMIN_LOGIN, "bob": ADMIN_LOGIN, "tess": ADMIN_LOGIN, "charlie": ADMIN_LOGIN, "olivia": 200, None: ADMIN_LOGIN}),
    ("GET /admin/audit/auditentry/{audit}/change/", {"alice": ADMIN_LOGIN, "bob": ADMIN_LOGIN, "tess": ADMIN_LOGIN, "charlie": ADMIN_LOGIN, "olivia": 200, None: ADMIN_LOGIN}),
    ("POST /admin/audit/auditentry/{audit}/delete/", {"alice": ADMIN_LOGIN, "bob": ADMIN_LOGIN, "tess": ADMIN_LOGIN, "charlie": ADMIN_LOGIN, "olivia": 403, None: ADMIN_LOGIN}),
    # The team pages (gateway_portal/team_pages.py): members see their team, its team admin changes it.
    ("GET /teams/", {"alice": 200, "bob": 200, "tess": 200, "charlie": 200, "olivia": 200, None: LOGIN}),
    ("GET /teams/red/", {"alice": 200, "bob": 200, "tess": 200, "charlie": 404, "olivia": 200, None: LOGIN}),
    ("GET /teams/blue/", {"alice": 404, "bob": 404, "tess": 404, "charlie": 200, "olivia": 200, None: LOGIN}),
    ("POST /teams/red/members/", {"alice": 403, "bob": 403, "tess": 302, "charlie": 404, "olivia": 403, None: LOGIN}),
    ("POST /teams/red/members/bob/role/", {"alice": 403, "bob": 403, "tess": 302, "charlie": 404, "olivia": 403, None: LOGIN}),
    ("POST /teams/red/members/bob/remove/", {"alice": 403, "bob": 403, "tess": 302, "charlie": 404, "olivia": 403, None: LOGIN}),
    ("POST /teams/blue/members/charlie/remove/", {"alice": 404, "bob": 404, "tess": 404, "charlie": 403, "olivia": 403, None: LOGIN}),
    ("GET /admin/auth/user/", {"alice": ADMIN_LOGIN, "bob": ADMIN_LOGIN, "tess": ADMIN_LOGIN, "charlie": ADMIN_LOGIN, "olivia": 403, None: ADMIN_LOGIN}),
    ("GET /admin/audit/auditentry/transcript/{private}/", {"alice": ADMIN_LOGIN, "bob": ADMIN_LOGIN, "tess": ADMIN_LOGIN, "charlie": ADMIN_LOGIN, "olivia": 200, None: ADMIN_LOGIN}),
    ("GET /admin/audit/auditentry/export.csv", {"alice": ADMIN_LOGIN, "bob": ADMIN_LOGIN, "tess": ADMIN_LOGIN, "charlie": ADMIN_LOGIN, "olivia": 200, None: ADMIN_LOGIN}),
    ("GET /admin/audit/usagerecord/export.csv", {"alice": ADMIN_LOGIN, "bob": ADMIN_LOGIN, "tess": ADMIN_LOGIN, "charlie": ADMIN_LOGIN, "olivia": 200, None: ADMIN_LOGIN}),
    ("POST /admin/audit/legalhold/add/", {"alice": ADMIN_LOGIN, "bob": ADMIN_LOGIN, "tess": ADMIN_LOGIN, "charlie": ADMIN_LOGIN, "olivia": 403, None: ADMIN_LOGIN}),
]

# Socket actions on alice's private conversation and its answer: what each person gets back.
SOCKET = [
    ("send into the conversation", {"alice": "done", "bob": "not_found", "charlie": "not_found", "olivia": "not_found"}),
    ("resume the answer", {"alice": "done", "bob": "not_found", "charlie": "not_found", "olivia": "not_found"}),
    ("stop the answer", {"alice": "not_running", "bob": "not_running", "charlie": "not_running", "olivia": "not_running"}),
]


@pytest.fixture
async def alices_things(alice, open_socket):
    socket = await open_socket(alice)
    ids = {}
    for name in ("private", "shared"):
        await socket.send(type="send", conversation=None, content=f"{name} {nonce()}", model="gpt-4")
        frames = await socket.receive_until("done", "error")
        ids[name], ids[name + "_answer"] = frames[0]["conversation"], frames[0]["message"]
        if name == "private":
            ids["audit"] = (await AuditEntry.objects.aget(request_id=frames[0]["request_id"])).pk
    await Conversation.objects.filter(pk=ids["shared"]).aupdate(shared=True)
    return ids


# What each kind of POST sends (by the path's last part); the rest send {"post": "yes"}.
FORMS = {"share": {"shared": "1"}, "members": {"username": "olivia", "role": "member"}, "role": {"role": "member"}}


def outcome(response) -> object:
    if response.status_code == 302:
        location = response.headers["Location"]
        if location.startswith("/accounts/login/"):
            return LOGIN
        if location.startswith("/admin/login/"):
            return ADMIN_LOGIN
    return response.status_code


@pytest.mark.parametrize("what, expected", PAGES, ids=[what for what, _ in PAGES])
async def test_pages_and_admin_views(what, expected, alices_things, alice, bob, tess, charlie, olivia):
    people = {"alice": alice, "bob": bob, "tess": tess, "charlie": charlie, "olivia": olivia, None: None}
    method, path = what.split(" ", 1)
    path = path.format(**alices_things)
    seen = {}
    for who, person in people.items():
        client = Client()
        if person is not None:
            await sync_to_async(client.force_login)(person)
        data = FORMS.get(path.rsplit("/", 2)[-2], {"post": "yes"})
        call = client.get if method == "GET" else (lambda url: client.post(url, data))
        seen[who] = outcome(await sync_to_async(call)(path))
    assert seen == expected


@pytest.mark.parametrize("what, expected", SOCKET, ids=[what for what, _ in SOCKET])
async def test_socket_actions(what, expected, alices_things, alice, bob, charlie, olivia, open_socket):
    seen = {}
    for who, person in {"alice": alice, "bob": bob, "charlie": charlie, "olivia": olivia}.items():
        socket = await open_socket(person)
        if what == "send into the conversation":
            await socket.send(type="send", conversation=alices_things["private"], content=f"more {nonce()}", model="gpt-4")
        elif what == "resume the answer":
            await socket.send(type="resume", message=alices_things["private_answer"])
        else:
            await socket.send(type="stop", message=alices_things["private_answer"])
        frames = await socket.receive_until("done", "error")
        seen[who] = frames[-1]["type"] if frames[-1]["type"] == "done" else frames[-1]["code"]
    assert seen == expected
