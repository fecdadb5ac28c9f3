"""Log-in, log-out and the password pages, under /accounts/.

Password reset works by mail, so it is offered only when mail is configured (EMAIL_URL): without
it Django's view would try an SMTP server on localhost:25 and log a traceback for every request.
Then the reset pages answer 404 and the log-in page says whom to ask (PORTAL_PASSWORD_HELP).

Failed log-ins are slowed down, then locked out per account and per address (django-axes, with
its attempts in Postgres so that every server process sees them; settings.py says how long).
"""

import time
from datetime import timedelta
from functools import wraps

from django.conf import settings
from django.contrib.auth import views
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import Http404
from django.shortcuts import render
from django.urls import path


class LoginView(views.LoginView):
    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["password_reset_offered"] = settings.PORTAL_PASSWORD_RESET
        context["password_help"] = settings.PORTAL_PASSWORD_HELP
        return context


def _only_with_mail(view):
    @wraps(view)
    def guarded(request, *args, **kwargs):
        if not settings.PORTAL_PASSWORD_RESET:
            raise Http404("Password reset needs mail; EMAIL_URL is not set.")
        return view(request, *args, **kwargs)

    return guarded


urlpatterns = [
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("password_change/", views.PasswordChangeView.as_view(), name="password_change"),
    path("password_change/done/", views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("password_reset/", _only_with_mail(views.PasswordResetView.as_view()), name="password_reset"),
    path("password_reset/done/", _only_with_mail(views.PasswordResetDoneView.as_view()), name="password_reset_done"),
    path(
        "reset/<uidb64>/<token>/",
        _only_with_mail(views.PasswordResetConfirmView.as_view()),
        name="password_reset_confirm",
    ),
    path("reset/done/", _only_with_mail(views.PasswordResetCompleteView.as_view()), name="password_reset_complete"),
]


# --- Repeated failed log-ins (django-axes, attempts stored in Postgres so every process sees them) --

# PORTAL_LOGIN_LOCKOUT_BY's words, and what django-axes calls them.
LOCKOUT_BY = {"account": "username", "address": "ip_address"}
# From the third failure in a row on, each wrong password is answered a second later: a script
# guessing one password after another slows down well before the lockout (a sleeping request
# thread costs no CPU; a locked-out attempt costs not even the password hash).
SLOW_DOWN_AFTER = 3
DELAY = 1.0


# django-axes reads these through settings.py's AXES_* names on every attempt, so they follow the
# PORTAL_LOGIN_* settings (override_settings included).


def lockout_parameters(request, credentials):
    return [LOCKOUT_BY[name] for name in settings.PORTAL_LOGIN_LOCKOUT_BY]


def failure_limit(request, credentials):
    return settings.PORTAL_LOGIN_FAILURE_LIMIT


def lockout_time(request=None):
    return timedelta(minutes=settings.PORTAL_LOGIN_LOCKOUT_MINUTES)


def client_address(request):
    """Where a log-in came from, for the lockout: the peer of the socket, never a header a client
    could set (X-Forwarded-For) to dodge it. Behind a reverse proxy this is the proxy's address,
    so there PORTAL_LOGIN_LOCKOUT_BY=account (README.md)."""
    return request.META.get("REMOTE_ADDR")


def lockout_message() -> str:
    minutes = settings.PORTAL_LOGIN_LOCKOUT_MINUTES
    return (
        f"Too many failed log-ins for this account or from this address: log-in is locked for "
        f"{minutes:g} minute{'s' if minutes != 1 else ''}. An administrator can unlock it sooner."
    )


def locked_out(request, response, credentials, *args, **kwargs):
    """The log-in page again (status 429), saying why the right password is refused for a while."""
    form = AuthenticationForm(request, initial={"username": (credentials or {}).get("username", "")})
    context = {
        "form": form,
        "next": request.POST.get("next", ""),
        "locked_out": lockout_message(),
        "password_reset_offered": settings.PORTAL_PASSWORD_RESET,
        "password_help": settings.PORTAL_PASSWORD_HELP,
    }
    return render(request, "registration/login.html", context, status=429)


@receiver(user_login_failed)
def slow_down(sender, credentials, request=None, **kwargs):
    # Runs after axes' own receiver (its app comes first), which counted this failure.
    if request is None or getattr(request, "axes_locked_out", False):
        return
    if (getattr(request, "axes_failures_since_start", None) or 0) >= SLOW_DOWN_AFTER:
        time.sleep(DELAY)
