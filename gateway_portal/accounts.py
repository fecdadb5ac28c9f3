"""Log-in, log-out and the password pages, under /accounts/.

Password reset works by mail, so it is offered only when mail is configured (EMAIL_URL): without
it Django's view would try an SMTP server on localhost:25 and log a traceback for every request.
Then the reset pages answer 404 and the log-in page says whom to ask (PORTAL_PASSWORD_HELP).
"""

from functools import wraps

from django.conf import settings
from django.contrib.auth import views
from django.http import Http404
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
