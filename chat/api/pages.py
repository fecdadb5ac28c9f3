"""Settings → API keys (`/settings/keys/`): a person's keys, with their use; make one (shown once),
revoke one. Whose keys these are is asked of chat.access only; another person's key is a 404."""

from __future__ import annotations

from django import forms
from django.contrib.auth.mixins import LoginRequiredMixin
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views import View

from chat import access
from chat.api import keys
from gateway_portal.models import current_team, teams_of


class NewKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the key is for, e.g. “nightly report script”.")
    team = forms.ModelChoiceField(queryset=None, empty_label=None, help_text="Its requests count for this team.")
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, label="Expires after (days)",
        help_text="Leave empty for a key that lasts until you revoke it.",
    )

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_of(user)
        self.fields["team"].initial = current_team(user)


class KeysView(LoginRequiredMixin, View):
    template_name = "api/keys.html"

    def get(self, request):
        return self._page(request, NewKeyForm(request.user))

    def post(self, request):
        form = NewKeyForm(request.user, request.POST)
        if not form.is_valid():
            return self._page(request, form, status=400)
        row, key = keys.do_create_key(request.user, form.cleaned_data["team"], form.cleaned_data["name"], expires_in_days=form.cleaned_data["expires_in_days"])
        # Shown in this response only: it is stored nowhere but as its hash.
        return self._page(request, NewKeyForm(request.user), new_key=key, new_row=row)

    def _page(self, request, form, *, status=200, **extra):
        rows = list(access.api_keys_of(request.user).select_related("team"))
        usage = keys.usage_by_key(rows)
        now = timezone.now()
        listed = [{"key": row, "state": row.state(now), "usage": usage.get(row.prefix)} for row in rows]
        context = {"form": form, "keys": listed, "api_base": request.build_absolute_uri("/v1"), **extra}
        response = render(request, self.template_name, context, status=status)
        response["Cache-Control"] = "no-store"  # the new key must not stay in a cache
        return response


class RevokeKeyView(LoginRequiredMixin, View):
    def post(self, request, pk):
        key = get_object_or_404(access.api_keys_of(request.user), pk=pk)
        keys.do_revoke_key(key, actor=request.user)
        return redirect(reverse("api:keys"))
