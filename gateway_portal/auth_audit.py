"""Log-ins, failed log-ins and log-outs in the audit trail (auth.login, auth.login_failed,
auth.logout), from Django's auth signals; connected in apps.py.

A failed log-in keeps the user name tried and never the password (Django hands receivers the
credentials with the password already masked; only the user name is read here). Its actor is the
person of that name if there is one, else nobody. Attempts that django-axes refused because the
account or address is locked out are failed log-ins too, marked "locked_out".
The address is the socket's peer (REMOTE_ADDR), as for the lockout (gateway_portal/accounts.py).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

from audit.actions import do_record_event
from audit.models import Action
from gateway_portal.models import current_team

USERNAME_KEPT = 150  # a name longer than any account's is kept cut, not refused


def _address(request) -> str | None:
    return request.META.get("REMOTE_ADDR") if request is not None else None


def record_login(sender, request, user, **kwargs):
    do_record_event(
        Action.LOGIN, actor=user, team=current_team(user), target=f"user:{user.get_username()}",
        details={"ip": _address(request)},
    )


def record_logout(sender, request, user, **kwargs):
    if user is None:  # logging out of no session
        return
    do_record_event(
        Action.LOGOUT, actor=user, team=current_team(user), target=f"user:{user.get_username()}",
        details={"ip": _address(request)},
    )


def record_login_failure(sender, credentials, request=None, **kwargs):
    User = get_user_model()
    username = str(credentials.get(User.USERNAME_FIELD) or credentials.get("username") or "")[:USERNAME_KEPT]
    person = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first() if username else None
    details = {"username": username, "ip": _address(request)}
    if getattr(request, "axes_locked_out", False):
        details["locked_out"] = True
    do_record_event(
        Action.LOGIN_FAILED, actor=person, team=current_team(person) if person else None,
        target=f"user:{username}", details=details,
    )


def connect():
    user_logged_in.connect(record_login, dispatch_uid="audit-login")
    user_logged_out.connect(record_logout, dispatch_uid="audit-logout")
    user_login_failed.connect(record_login_failure, dispatch_uid="audit-login-failed")
