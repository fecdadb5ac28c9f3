"""The team's limits page, /teams/<slug>/limits/: every member sees the limits that apply to the
team and what is used under each now; the team's admin changes the team's own values (audited).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.shortcuts import redirect
from django.urls import path
from django.views.generic import TemplateView

from audit.actions import do_record_event
from audit.models import Action
from chat import access, quotas
from gateway_portal.models import Membership, TeamLimits

# What each limit is called on the page, in the order shown.
LABELS = {
    "concurrent_per_person": ("Answers at once, per person", "answers"),
    "concurrent_per_team": ("Answers at once, whole team", "answers"),
    "concurrent_global": ("Answers at once, whole portal", "answers"),
    "requests_per_minute": ("Messages per minute, per person", "messages"),
    "tokens_per_minute": ("Tokens per minute, whole team", "tokens"),
    "tokens_per_month": ("Tokens per month, whole team", "tokens"),
}


class TeamLimitsForm(forms.ModelForm):
    class Meta:
        model = TeamLimits
        fields = list(quotas.TEAM_VALUES)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        defaults = quotas.Limits.defaults()
        for name, field in self.fields.items():
            default = getattr(defaults, name)
            field.label = LABELS[name][0]
            field.widget.attrs.update(placeholder=f"default: {default:,}" if default else "default: no limit", min=0)
            field.help_text = ""


class TeamLimitsView(LoginRequiredMixin, TemplateView):
    template_name = "teams/limits.html"

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated:
            self.membership = access.team_membership(request.user, kwargs["slug"])
            self.team = self.membership.team
            self.may_change = self.membership.role == Membership.Role.ADMIN
        return super().dispatch(request, *args, **kwargs)

    def own(self) -> TeamLimits:
        return TeamLimits.objects.filter(team=self.team).first() or TeamLimits(team=self.team)

    def get_context_data(self, form=None, **kwargs):
        own = self.own()
        limits = quotas.effective_limits(self.team.pk, {n: getattr(own, n) for n in quotas.TEAM_VALUES if getattr(own, n) is not None})
        try:
            used = quotas.limits.usage(self.request.user.pk, self.team.pk)
        except Exception:
            used = None  # Redis down: the page still shows the limits
        rows = []
        for name, (label, unit) in LABELS.items():
            value = getattr(limits, name)
            rows.append({
                "name": name, "label": label, "unit": unit, "value": value,
                "own": name in quotas.TEAM_VALUES and getattr(own, name) is not None,
                "used": used.get(name) if used is not None else None,
                "field": form[name] if form is not None and name in form.fields else None,
            })
        return super().get_context_data(
            team=self.team, rows=rows, may_change=self.may_change, form=form, usage_unavailable=used is None,
            lease_seconds=int(quotas.settings.PORTAL_LEASE_SECONDS), **kwargs,
        )

    def get(self, request, *args, **kwargs):
        form = TeamLimitsForm(instance=self.own()) if self.may_change else None
        return self.render_to_response(self.get_context_data(form=form))

    def post(self, request, *args, **kwargs):
        if not self.may_change:
            return self.http_method_not_allowed(request, *args, **kwargs)
        own = self.own()
        before = {name: getattr(own, name) for name in quotas.TEAM_VALUES}
        form = TeamLimitsForm(request.POST, instance=own)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form), status=400)
        changed = {name: [before[name], form.cleaned_data[name]] for name in quotas.TEAM_VALUES if before[name] != form.cleaned_data[name]}
        if changed:
            do_record_event(
                Action.LIMITS_CHANGED, actor=request.user, team=self.team, target=f"team:{self.team.slug}",
                details={"changed": changed}, also=lambda now: form.save(),
            )
            quotas.forget_team(self.team.pk)
            messages.success(request, "The team's limits are saved. Other server processes use them within "
                                      f"{quotas.TEAM_CACHE_SECONDS} seconds.")
        return redirect("team-limits", slug=self.team.slug)


urlpatterns = [path("teams/<slug:slug>/limits/", TeamLimitsView.as_view(), name="team-limits")]
