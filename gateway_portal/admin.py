"""Teams and their members for superusers (team admins use the portal's team page,
gateway_portal/team_pages.py), and the user list: a person with audit entries or usage records
cannot be deleted (PROTECT keeps the trail whole), and the admin says so in a sentence instead of
Django's list of protected objects (which would also collect every one of a busy person's
entries, millions of rows, to draw that list)."""

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.shortcuts import redirect
from django.urls import reverse

from audit.models import AuditEntry, UsageRecord
from gateway_portal.models import Membership, Team

User = get_user_model()

KEEP_THE_TRAIL = (
    "This person ({name}) has audit entries, so they cannot be deleted: the trail is kept whole. "
    "Deactivate them instead (untick “Active” and save): they can no longer log in, and the record stays."
)


class MembershipInline(admin.TabularInline):
    model = Membership
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)
    autocomplete_fields = ("user",)
    extra = 0


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "retention_days", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MembershipInline]


def has_audit_trail(user_ids) -> set[int]:
    """Which of these people an audit entry or usage record names: an EXISTS probe of the (user,
    time) indexes per person, never a count of their rows."""
    return {
        pk for pk in user_ids
        if AuditEntry.objects.filter(user_id=pk).exists() or UsageRecord.objects.filter(user_id=pk).exists()
    }


admin.site.unregister(User)


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    def delete_view(self, request, object_id, extra_context=None):
        user = self.get_object(request, object_id)
        if user is not None and has_audit_trail([user.pk]):
            self.message_user(request, KEEP_THE_TRAIL.format(name=user.get_username()), messages.ERROR)
            return redirect(reverse("admin:auth_user_change", args=[user.pk]))
        return super().delete_view(request, object_id, extra_context)

    def get_deleted_objects(self, objs, request):
        """The bulk "delete selected" action: people with a trail are listed as protected, each
        with the sentence, without collecting their entries."""
        objs = list(objs)
        kept = has_audit_trail(o.pk for o in objs)
        if kept:
            protected = [KEEP_THE_TRAIL.format(name=o.get_username()) for o in objs if o.pk in kept]
            return [], {}, set(), protected
        return super().get_deleted_objects(objs, request)
