"""The team page, /teams/: a person's teams, each team's members and roles, and the team admin's
changes (add a member, remove one, change a role) as plain POST forms with CSRF.

Who sees and changes what is chat/access.py's (teams_visible_to, teams_managed_by): a team
nobody lets you see answers 404; a team you see but do not manage refuses a change with 403 (it
reveals nothing you could not already read). Every change goes through gateway_portal/teams.py,
which writes it and its audit entry in one transaction and enforces the rules (the last team
admin stays; nobody is left without a team).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages as flash
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect
from django.urls import path
from django.views import View
from django.views.generic import DetailView, ListView

from chat import access
from gateway_portal import teams
from gateway_portal.models import DEFAULT_TEAM_SLUG, Membership, Team

app_name = "teams"


class AddMemberForm(forms.Form):
    username = forms.CharField(label="User name", max_length=150)
    role = forms.ChoiceField(label="Role", choices=Membership.Role.choices, initial=Membership.Role.MEMBER)

    def clean_username(self):
        try:
            return teams.find_person(self.cleaned_data["username"])
        except teams.TeamRuleError as exc:
            raise forms.ValidationError(str(exc)) from None


class RoleForm(forms.Form):
    role = forms.ChoiceField(label="Role", choices=Membership.Role.choices)


class TeamListView(LoginRequiredMixin, ListView):
    """/teams/: the teams the person may see, with their role in each (an officer or a superuser
    sees every team, with no role where they are not a member)."""

    template_name = "teams/team_list.html"
    context_object_name = "teams"

    def get_queryset(self):
        user = self.request.user
        return (
            access.teams_visible_to(user)
            .annotate(
                member_count=Count("memberships", distinct=True),
                my_admin=Count("memberships", filter=Q(memberships__user=user, memberships__role=Membership.Role.ADMIN)),
                my_member=Count("memberships", filter=Q(memberships__user=user)),
            )
            .order_by("name")
        )


class TeamDetailView(LoginRequiredMixin, DetailView):
    """/teams/<slug>/: the members and their roles, for every member; the forms for its admins."""

    template_name = "teams/team_detail.html"
    context_object_name = "team"

    def get_object(self, queryset=None):
        return get_object_or_404(access.teams_visible_to(self.request.user).distinct(), slug=self.kwargs["slug"])

    def get_context_data(self, add_form=None, **kwargs):
        context = super().get_context_data(**kwargs)
        team, user = self.object, self.request.user
        members = list(
            Membership.objects.filter(team=team).select_related("user").order_by("role", "user__username")  # "admin" sorts before "member"
        )
        manages = access.teams_managed_by(user).filter(pk=team.pk).exists()
        context.update(
            members=members,
            admins=[m.user for m in members if m.role == Membership.Role.ADMIN],
            my_membership=next((m for m in members if m.user_id == user.pk), None),
            manages=manages,
            add_form=add_form or AddMemberForm(),
            roles=Membership.Role.choices,
            is_default_team=team.slug == DEFAULT_TEAM_SLUG,
        )
        return context


class _ManageTeam(LoginRequiredMixin, View):
    """A change to a team's members: the team must be visible (else 404) and managed (else 403)."""

    http_method_names = ["post"]

    def managed_team(self) -> Team:
        user = self.request.user
        team = get_object_or_404(access.teams_visible_to(user).distinct(), slug=self.kwargs["slug"])
        if not access.teams_managed_by(user).filter(pk=team.pk).exists():
            raise PermissionDenied("Only the team's admins can change its members.")
        return team

    def membership(self, team: Team) -> Membership:
        return get_object_or_404(Membership.objects.select_related("user"), team=team, user__username=self.kwargs["username"])

    def back_to(self, team: Team):
        # After removing or demoting themselves, a team admin may no longer see the team.
        if access.teams_visible_to(self.request.user).filter(pk=team.pk).exists():
            return redirect("teams:detail", slug=team.slug)
        return redirect("teams:list")


class AddMemberView(_ManageTeam):
    def post(self, request, slug):
        team = self.managed_team()
        form = AddMemberForm(request.POST)
        if form.is_valid():
            person, role = form.cleaned_data["username"], form.cleaned_data["role"]
            try:
                teams.do_add_member(team, person, role, actor=request.user)
            except teams.TeamRuleError as exc:
                form.add_error("username", str(exc))
            else:
                flash.success(request, f"{person.get_username()} joined {team.name} as {Membership.Role(role).label}.")
                return redirect("teams:detail", slug=team.slug)
        view = TeamDetailView(request=request, kwargs={"slug": slug})
        view.object = team
        return view.render_to_response(view.get_context_data(add_form=form))  # 200, as FormView does


class RemoveMemberView(_ManageTeam):
    def post(self, request, slug, username):
        team = self.managed_team()
        person = self.membership(team).user
        try:
            moved_to = teams.do_remove_member(team, person, actor=request.user)
        except teams.TeamRuleError as exc:
            flash.error(request, str(exc))
        else:
            sentence = f"{person.get_username()} is no longer in {team.name}; their conversations stay theirs."
            if moved_to is not None:
                sentence += f" It was their only team, so they are now in {moved_to.name}."
            flash.success(request, sentence)
        return self.back_to(team)


class ChangeRoleView(_ManageTeam):
    def post(self, request, slug, username):
        team = self.managed_team()
        person = self.membership(team).user
        form = RoleForm(request.POST)
        if not form.is_valid():
            flash.error(request, "Choose a role: member or team admin.")
            return self.back_to(team)
        role = form.cleaned_data["role"]
        try:
            changed = teams.do_change_role(team, person, role, actor=request.user)
        except teams.TeamRuleError as exc:
            flash.error(request, str(exc))
        else:
            label = Membership.Role(role).label
            flash.success(request, f"{person.get_username()} is now {label} of {team.name}." if changed
                          else f"{person.get_username()} already is {label} of {team.name}.")
        return self.back_to(team)


urlpatterns = [
    path("", TeamListView.as_view(), name="list"),
    path("<slug:slug>/", TeamDetailView.as_view(), name="detail"),
    path("<slug:slug>/members/", AddMemberView.as_view(), name="add_member"),
    path("<slug:slug>/members/<str:username>/remove/", RemoveMemberView.as_view(), name="remove_member"),
    path("<slug:slug>/members/<str:username>/role/", ChangeRoleView.as_view(), name="change_role"),
]
