"""Open chat sockets end with the session that opened them.

A websocket is authenticated once, at its handshake; without this, a socket opened before a
log-out (or before the account was deactivated or its password changed) could go on starting
answers. Each socket joins two groups of the channel layer (so this works across server
processes with REDIS_URL): its session's, which a log-out ends, and its person's, which
deactivation and a password change end. Answers already running go on and are stored; the
person can follow them again after logging in.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_save, pre_save

log = logging.getLogger(__name__)

END = {"type": "session.ended"}


def session_group(session_key: str) -> str:
    return f"chat-session.{session_key}"


def person_group(user_id: int) -> str:
    return f"chat-person.{user_id}"


def _end(group: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, END)
    except Exception:  # the log-out itself must not fail because Redis is away
        log.exception("could not close the chat sockets of %s", group)


def _on_logged_out(sender, request, user, **kwargs):
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        _end(session_group(session_key))


def _remember_credentials(sender, instance, update_fields=None, **kwargs):
    if instance.pk is None or (update_fields is not None and not {"password", "is_active"} & set(update_fields)):
        instance._socket_credentials = None
        return
    instance._socket_credentials = sender.objects.filter(pk=instance.pk).values_list("password", "is_active").first()


def _on_saved(sender, instance, created, **kwargs):
    before = getattr(instance, "_socket_credentials", None)
    if created or before is None:
        return
    password, was_active = before
    if password != instance.password or (was_active and not instance.is_active):
        _end(person_group(instance.pk))


def connect() -> None:
    User = get_user_model()
    user_logged_out.connect(_on_logged_out, dispatch_uid="chat-sockets-logout")
    pre_save.connect(_remember_credentials, sender=User, dispatch_uid="chat-sockets-credentials")
    post_save.connect(_on_saved, sender=User, dispatch_uid="chat-sockets-saved")
