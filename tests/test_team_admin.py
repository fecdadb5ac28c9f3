"""The team page: every member sees who is in the team and their role; its team admin adds,
removes and changes roles there (each change audited); the rules keep a team with an admin and
nobody without a team.

The cast (tests/helpers.py): tess is Red's team admin, alice and bob Red's members, charlie in
Blue, olivia a compliance officer.
"""

import pytest
from django.test import Client

from audit.models import AuditEntry
from chat.models import Conversation
from gateway_portal.models import Membership
from tests.helpers import make_person, team_named

pytestmark = pytest.mark.django_db


def logged_in(person) -> Client:
    client = Client()
    client.force_login(person)
    return client


def entries(action):
    return list(AuditEntry.objects.filter(action=action).order_by("seq"))


def roles_in(team_name):
    return dict(Membership.objects.filter(team=team_named(team_name)).values_list("user__username", "role"))


def test_the_teams_list_shows_each_team_with_the_persons_role(tess, alice):
    Membership.objects.create(user=alice, team=team_named("Green"), role="admin")
    page = logged_in(alice).get("/teams/").content.decode()
    assert ">Green</a></td>\n        <td>team admin</td>" in page
    assert ">Red</a></td>\n        <td>member</td>" in page
    assert "Blue" not in page


def test_every_member_sees_the_members_and_roles_but_no_forms(tess, alice, bob):
    page = logged_in(bob).get("/teams/red/").content.decode()
    for name in ("tess", "alice", "bob"):
        assert f'data-member="{name}"' in page
    assert "team admin" in page and "ask a team admin: tess" in page
    assert "Add a member" not in page and "Remove" not in page


def test_a_team_admin_adds_a_member_and_the_addition_is_audited(tess, alice, charlie):
    client = logged_in(tess)
    response = client.post("/teams/red/members/", {"username": "charlie", "role": "member"}, follow=True)
    assert "charlie joined Red as member." in response.content.decode()
    assert roles_in("Red")["charlie"] == "member"
    [entry] = entries("team.member_added")
    assert (entry.user, entry.team, entry.target, entry.details) == (tess, team_named("Red"), "user:charlie", {"role": "member"})


def test_adding_an_unknown_name_or_a_member_again_says_why_and_changes_nothing(tess, alice):
    client = logged_in(tess)
    unknown = client.post("/teams/red/members/", {"username": "zed", "role": "member"})
    assert unknown.status_code == 200 and "Nobody has the user name “zed”." in unknown.content.decode()
    again = client.post("/teams/red/members/", {"username": "alice", "role": "admin"})
    assert again.status_code == 200 and "alice is already a member of Red." in again.content.decode()
    assert roles_in("Red")["alice"] == "member"
    assert not entries("team.member_added")


def test_a_team_admin_changes_a_role_and_the_change_is_audited(tess, alice):
    client = logged_in(tess)
    response = client.post("/teams/red/members/alice/role/", {"role": "admin"}, follow=True)
    assert "alice is now team admin of Red." in response.content.decode()
    assert roles_in("Red")["alice"] == "admin"
    [entry] = entries("team.role_changed")
    assert (entry.user, entry.target, entry.details) == (tess, "user:alice", {"role": "admin", "previous_role": "member"})
    # The same role again changes nothing and records nothing.
    client.post("/teams/red/members/alice/role/", {"role": "admin"})
    assert len(entries("team.role_changed")) == 1


def test_a_removed_member_loses_the_team_and_keeps_their_conversations(tess, alice, bob):
    Membership.objects.create(user=bob, team=team_named("Green"))
    conversation = Conversation.objects.create(user=bob, team=team_named("Red"), title="Bob's notes", shared=True)
    response = logged_in(tess).post("/teams/red/members/bob/remove/", follow=True)
    assert "bob is no longer in Red; their conversations stay theirs." in response.content.decode()
    assert "bob" not in roles_in("Red") and roles_in("Green") == {"bob": "member"}
    assert Conversation.objects.get(pk=conversation.pk).user == bob
    [entry] = entries("team.member_removed")
    assert (entry.user, entry.team, entry.target, entry.details) == (tess, team_named("Red"), "user:bob", {"role": "member"})
    # bob reads his own conversation still, and no longer Red's page.
    bobs = logged_in(bob)
    assert bobs.get(f"/c/{conversation.pk}/").status_code == 200
    assert bobs.get("/teams/red/").status_code == 404


def test_someone_removed_from_their_only_team_moves_to_everyone(tess, bob):
    response = logged_in(tess).post("/teams/red/members/bob/remove/", follow=True)
    assert "It was their only team, so they are now in Everyone." in response.content.decode()
    assert list(Membership.objects.filter(user=bob).values_list("team__slug", flat=True)) == ["everyone"]
    [entry] = entries("team.member_removed")
    assert entry.details == {"role": "member", "moved_to_team": "everyone"}


def test_nobody_is_removed_from_everyone_when_it_is_their_only_team(django_user_model):
    root = django_user_model.objects.create_superuser("root", password="root-password-1")
    dave = make_person("dave")  # in Everyone only
    response = logged_in(root).post("/teams/everyone/members/dave/remove/", follow=True)
    assert "Everyone is the only team of dave. Add them to another team first" in response.content.decode()
    assert Membership.objects.filter(user=dave, team__slug="everyone").exists()
    assert not entries("team.member_removed")


def test_the_last_team_admin_can_be_neither_removed_nor_demoted(tess, alice):
    client = logged_in(tess)
    sentence = "tess is the last team admin of Red. Make someone else a team admin first."
    assert sentence in client.post("/teams/red/members/tess/role/", {"role": "member"}, follow=True).content.decode()
    assert sentence in client.post("/teams/red/members/tess/remove/", follow=True).content.decode()
    assert roles_in("Red")["tess"] == "admin"
    assert not entries("team.role_changed") and not entries("team.member_removed")

    # With a second admin, tess may step down; the page then shows her no forms.
    client.post("/teams/red/members/alice/role/", {"role": "admin"})
    page = client.post("/teams/red/members/tess/role/", {"role": "member"}, follow=True).content.decode()
    assert "tess is now member of Red." in page and "Add a member" not in page


def test_members_officers_and_outsiders_cannot_change_a_team(tess, alice, charlie, olivia):
    for person, expected in ((alice, 403), (olivia, 403), (charlie, 404)):
        client = logged_in(person)
        assert client.post("/teams/red/members/", {"username": "charlie", "role": "admin"}).status_code == expected
        assert client.post("/teams/red/members/tess/remove/").status_code == expected
        assert client.post("/teams/red/members/alice/role/", {"role": "admin"}).status_code == expected
    assert roles_in("Red") == {"tess": "admin", "alice": "member"}
    assert not AuditEntry.objects.filter(action__startswith="team.").exists()


def test_an_officer_reads_every_team_and_a_superuser_manages_every_team(tess, charlie, olivia, django_user_model):
    page = logged_in(olivia).get("/teams/blue/").content.decode()
    assert 'data-member="charlie"' in page and "as a compliance officer" in page and "Add a member" not in page
    root = django_user_model.objects.create_superuser("root", password="root-password-1")
    logged_in(root).post("/teams/blue/members/", {"username": "tess", "role": "admin"})
    assert roles_in("Blue") == {"charlie": "member", "tess": "admin"}


def test_the_changes_need_a_csrf_token(tess, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(tess)
    assert client.post("/teams/red/members/alice/remove/").status_code == 403
    assert "alice" in roles_in("Red")


def test_the_chat_page_header_links_to_the_teams(alice):
    assert 'href="/teams/"' in logged_in(alice).get("/").content.decode()


def test_an_officer_is_staff_in_the_compliance_officers_group_and_nothing_less(charlie, django_user_model):
    from gateway_portal.models import compliance_officers

    staff = django_user_model.objects.create_user("sam", password="sam-password-1", is_staff=True)
    client = logged_in(staff)
    assert client.get("/teams/blue/").status_code == 404  # staff alone reads no other team
    staff.groups.add(compliance_officers())
    assert client.get("/teams/blue/").status_code == 200
    assert client.get("/admin/audit/auditentry/").status_code == 200  # the group's view permissions
    staff.is_staff = False
    staff.save()
    assert client.get("/teams/blue/").status_code == 404  # the group without staff status is not enough


@pytest.mark.django_db(transaction=True)
def test_the_migration_makes_the_group_and_keeps_officers_who_held_the_permissions_directly(django_user_model):
    from django.contrib.auth.models import Group, Permission
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("gateway_portal", "0005_team_retention_days")])  # just before the group
    officer = django_user_model.objects.create_user("oscar", is_staff=True)
    officer.user_permissions.add(Permission.objects.get(content_type__app_label="audit", codename="view_usagerecord"))
    member = django_user_model.objects.create_user("mia")

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    group = Group.objects.get(name="Compliance officers")
    assert sorted(group.permissions.values_list("codename", flat=True)) == [
        "view_auditentry", "view_conversation", "view_message", "view_usagerecord"]
    assert list(group.user_set.values_list("username", flat=True)) == ["oscar"] and member not in group.user_set.all()
