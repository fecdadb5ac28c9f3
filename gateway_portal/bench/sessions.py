"""Bench users and logged-in sessions, made the way Django's login makes them.

The load client connects like a browser after login: a `sessionid` cookie for a database session
holding the auth keys. Users are `bench-0` … `bench-<k-1>` and are reused between runs; the
sessions (and, for the API path, API keys) are made per run and deleted at its end.
"""

from __future__ import annotations

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session

from gateway_portal.models import Membership, Team

BACKEND = "django.contrib.auth.backends.ModelBackend"


def bench_users(count: int) -> list:
    """`bench-0` … `bench-<count-1>`, created when missing (no usable password: they never log in)."""
    User = get_user_model()
    names = [f"bench-{i}" for i in range(count)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    missing = []
    for name in names:
        if name not in existing:
            user = User(username=name)
            user.set_unusable_password()
            missing.append(user)
    User.objects.bulk_create(missing)
    by_name = {u.username: u for u in User.objects.filter(username__in=names)}
    # bulk_create sends no post_save, so they are put into the default team here.
    team = Team.default()
    Membership.objects.bulk_create([Membership(team=team, user=user) for user in by_name.values()], ignore_conflicts=True)
    return [by_name[name] for name in names]


def session_keys(users: list) -> list[str]:
    """One fresh logged-in session per user; returns the cookie values."""
    keys = []
    for user in users:
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = BACKEND
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        keys.append(store.session_key)
    return keys


def delete_sessions(keys: list[str]) -> None:
    Session.objects.filter(session_key__in=keys).delete()


def api_keys(users: list) -> list[str]:
    """One fresh API key per user, made as the settings page makes them (the API path's clients)."""
    from chat.api.keys import do_create_key

    return [do_create_key(user, Team.default(), "bench")[1] for user in users]


def delete_api_keys(users: list) -> None:
    from chat.api.models import ApiKey

    ApiKey.objects.filter(user__in=users, name="bench").delete()
