"""The compliance admin: read-only, searchable, filterable lists that stay fast at millions of rows.

At a million rows (`manage.py seed_usage --until 1000000`) the default admin spends most of a page
on queries that scan the whole table: date_hierarchy's DISTINCT over months, a model filter's
DISTINCT over model ids, the second COUNT(*) of a filtered list. So dates are filtered by range
(no query), models from the configured list (no query), and only the filtered count is shown.
"""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import Q

from audit.models import AuditEntry, UsageRecord
from gateway_portal.models import Team


class ModelFilter(admin.SimpleListFilter):
    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        return [(model, model) for model in settings.PORTAL_MODELS]

    def queryset(self, request, queryset):
        return queryset.filter(model_id=self.value()) if self.value() else queryset


class TeamFilter(admin.SimpleListFilter):
    title = "team"
    parameter_name = "team"

    def lookups(self, request, model_admin):
        return [(team.pk, team.name) for team in Team.objects.all()]

    def queryset(self, request, queryset):
        return queryset.filter(team_id=self.value()) if self.value() else queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """Compliance records are evidence: they can be read and searched, never edited here."""

    list_filter = ("status", ("timestamp", admin.DateFieldListFilter), ModelFilter)
    list_select_related = ("user", "team")
    show_full_result_count = False
    list_per_page = 50

    def get_search_results(self, request, queryset, search_term):
        # Exact, case-sensitive matches on indexed columns (the admin's own "=" prefix compares
        # UPPER() of every row): an id pasted from a log or a user name finds its rows at once.
        term = search_term.strip()
        if not term:
            return queryset, False
        users = get_user_model().objects.filter(username=term).values_list("pk", flat=True)
        match = Q(request_id=term) | Q(user_id__in=list(users))
        if hasattr(queryset.model, "audit_id"):
            match |= Q(audit_id=term)
        return queryset.filter(match), False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("audit_id", "timestamp", "user", "team", "model_id", "status", "safety_filtered", "request_id")
    list_filter = ("status", "safety_filtered", ("timestamp", admin.DateFieldListFilter), ModelFilter, TeamFilter)
    search_fields = ("audit_id", "request_id", "user__username")  # see get_search_results
    search_help_text = "Exact audit id (AUD-…), request id (req-…) or user name."


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "request_id", "timestamp", "user", "team", "model_id", "status", "input_tokens", "output_tokens", "ttft_ms",
        "latency_ms", "tokens_per_second",
    )
    list_filter = ("status", "token_source", ("timestamp", admin.DateFieldListFilter), ModelFilter, TeamFilter)
    search_fields = ("request_id", "user__username")  # see get_search_results
    search_help_text = "Exact request id (req-…) or user name."
