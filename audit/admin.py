"""The compliance admin: read-only, searchable, filterable lists that stay fast at millions of rows.

At a million rows (`manage.py seed_usage --until 1000000`) the default admin spends most of a page
on queries that scan the whole table: date_hierarchy's DISTINCT over months, a model filter's
DISTINCT over model ids, the second COUNT(*) of a filtered list. So dates are filtered by range
(no query), models from the configured list (no query), and only the filtered count is shown.
"""

import base64
import binascii
import functools

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from audit import webhooks
from audit.models import AuditEntry, EventType, UsageRecord, WebhookAttempt, WebhookDelivery, WebhookEndpoint
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


# --- Webhooks ----------------------------------------------------------------------------------


class SuperuserOnly:
    """Endpoints hold signing secrets and decide where data goes: superusers only."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request, *args):
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser


class WebhookEndpointForm(forms.ModelForm):
    event_types = forms.MultipleChoiceField(
        choices=EventType.choices, widget=forms.CheckboxSelectMultiple,
        initial=[EventType.COMPLETION_SUCCEEDED, EventType.COMPLETION_FAILED, EventType.COMPLETION_CANCELLED],
        help_text="completion.refused is sent once refusals by a limit are audited.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("url", "description", "event_types", "secret", "is_active")
        field_classes = {"url": functools.partial(forms.URLField, assume_scheme="https")}  # Django 6's default, today

    def clean_secret(self):
        secret = self.cleaned_data["secret"].strip()
        if secret:  # blank: generated on save
            try:
                key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
            except binascii.Error:
                key = b""
            if not secret.startswith("whsec_") or not 24 <= len(key) <= 64:
                raise forms.ValidationError(
                    "A Standard Webhooks secret: whsec_ and the base64 of 24 to 64 bytes. Leave blank to generate one."
                )
        return secret


def disabled_warning(endpoint: WebhookEndpoint) -> str:
    return (
        f"Webhook endpoint {endpoint.url} was disabled on {endpoint.disabled_at:%Y-%m-%d %H:%M} UTC: "
        f"{endpoint.disabled_reason} Fix the receiver, then tick “active” (or use “Enable again”)."
    )


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(SuperuserOnly, admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "description", "events", "is_active", "health", "from_settings")
    list_filter = ("is_active",)
    readonly_fields = ("from_settings", "failing_since", "disabled_at", "disabled_reason", "created", "updated")
    actions = ("enable_again",)

    @admin.display(description="events")
    def events(self, endpoint):
        return ", ".join(endpoint.event_types)

    @admin.display(description="health")
    def health(self, endpoint):
        if endpoint.disabled_at and not endpoint.is_active:
            return mark_safe('<strong style="color:#ba2121">disabled after failing</strong>')
        if endpoint.failing_since:
            return format_html('<span style="color:#ba2121">failing since {}</span>', f"{endpoint.failing_since:%Y-%m-%d %H:%M}")
        return "ok"

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.from_settings:  # the environment is its source of truth
            return ("url", "secret", "event_types", "description", *self.readonly_fields)
        return self.readonly_fields

    def changelist_view(self, request, extra_context=None):
        for endpoint in WebhookEndpoint.objects.filter(is_active=False).exclude(disabled_at=None):
            messages.warning(request, disabled_warning(endpoint))
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        endpoint = self.get_object(request, object_id)
        if request.method == "GET" and endpoint is not None and not endpoint.is_active and endpoint.disabled_at:
            messages.warning(request, disabled_warning(endpoint))
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        if obj.is_active and "is_active" in form.changed_data:
            obj.failing_since = obj.disabled_at = None
            obj.disabled_reason = ""
        super().save_model(request, obj, form, change)

    @admin.action(description="Enable again (deliveries from now on)")
    def enable_again(self, request, queryset):
        for endpoint in queryset:
            endpoint.is_active, endpoint.failing_since, endpoint.disabled_at, endpoint.disabled_reason = True, None, None, ""
            endpoint.save()
        self.message_user(request, f"{queryset.count()} endpoint(s) enabled. Re-send what they missed from Webhook deliveries.")


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ("number", "at", "status_code", "latency_ms", "error", "worker")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(SuperuserOnly, admin.ModelAdmin):
    list_display = ("event_id", "created", "event_type", "endpoint", "status", "attempts", "next_attempt_at", "last_error", "audit_id")
    list_filter = ("status", "event_type", ("created", admin.DateFieldListFilter), "endpoint")
    list_select_related = ("endpoint",)
    search_fields = ("event_id", "audit_id")
    search_help_text = "Exact event id (msg_…) or audit id (AUD-…)."
    show_full_result_count = False
    list_per_page = 50
    fields = ("event_id", "endpoint", "event_type", "audit_id", "status", "attempts", "created", "retry_until", "next_attempt_at",
              "delivered_at", "last_error", "body")
    readonly_fields = fields
    inlines = (WebhookAttemptInline,)
    actions = ("resend",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()  # exact matches on indexed columns, as the audit lists
        if not term:
            return queryset, False
        return queryset.filter(Q(event_id=term) | Q(audit_id=term)), False

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # the action below is the one change: re-send

    def has_resend_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    @admin.action(description="Re-send selected deliveries (same event id, new signature)", permissions=["resend"])
    def resend(self, request, queryset):
        sent, skipped = webhooks.resend(queryset)
        self.message_user(request, f"{sent} deliveries queued to be sent again.")
        if skipped:
            messages.warning(request, f"{skipped} skipped: still being retried, or their endpoint is inactive.")
