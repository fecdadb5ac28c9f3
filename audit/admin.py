"""The compliance admin: read-only, searchable, filterable lists that stay fast at millions of rows.

At a million rows (`manage.py seed_usage --until 1000000`) the default admin spends most of a page
on queries that scan the whole table: date_hierarchy's DISTINCT over months, a model filter's
DISTINCT over model ids, the COUNT(*) of every matching row. So dates are filtered by range (no
query), models, actions, clients and safety filters from fixed lists (no query), people typed in,
and a list counts its rows up to 10,000 only (CappedCountPaginator). Each filter has an index.

The officer's other views hang off these lists: the transcript of a conversation
(audit/transcripts.py, audited) and the CSV export of the filtered selection (audit/exports.py,
streamed, audited). Which rows anyone may see is asked of chat/access.py.
"""

import base64
import binascii
import functools

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.main import PAGE_VAR
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import Q
from django.urls import path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from audit import exports, transcripts, webhooks
from audit.actions import do_record_event
from audit.models import Action, AuditEntry, EventType, LegalHold, UsageRecord, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from chat import access
from chat.completion import API, BROWSER, COMMAND
from chat.filters import FILTERS
from gateway_portal.models import Team


class CappedCountPaginator(Paginator):
    """Counts the rows of a list up to CAP and no further: the admin's paginator counts every
    matching row on each page view, which for the unfiltered list is the whole table. Past CAP the
    list says "more than 10,000" and pages up to there; filters narrow it down."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        counted = self.object_list[: self.CAP + 1].count()  # COUNT(*) over a LIMITed subquery
        self.capped = counted > self.CAP
        return min(counted, self.CAP)

    capped = False

    @property
    def cap_text(self) -> str:
        return f"{self.CAP:,}"


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


class ActionFilter(admin.SimpleListFilter):
    title = "action"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        return Action.choices

    def queryset(self, request, queryset):
        return queryset.filter(action=self.value()) if self.value() else queryset


class ClientFilter(admin.SimpleListFilter):
    """Where a completion came from: details->>'client' (an expression index answers it)."""

    title = "client"
    parameter_name = "client"

    def lookups(self, request, model_admin):
        return [(BROWSER, "browser"), (API, "API"), (COMMAND, "command")]

    def queryset(self, request, queryset):
        return queryset.filter(details__client=self.value()) if self.value() else queryset


class FiredFilter(admin.SimpleListFilter):
    """Which safety filter changed the answer: any, none, or one by name (a GIN index on filters)."""

    title = "safety filters fired"
    parameter_name = "fired"

    def lookups(self, request, model_admin):
        return [("any", "any"), ("none", "none"), *[(name, name) for name in FILTERS]]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "any":
            return queryset.filter(safety_filtered=True)
        if value == "none":
            return queryset.filter(safety_filtered=False)
        if value:
            return queryset.filter(filters__contains=[{"filter": value}])
        return queryset


class InputFilter(admin.SimpleListFilter):
    """A filter typed in rather than picked from a list (a list of every person would be a query
    over all users on each page): a small GET form that keeps the other filters."""

    template = "admin/audit/input_filter.html"
    placeholder = ""

    def lookups(self, request, model_admin):
        return ()

    def has_output(self):
        return True

    def choices(self, changelist):
        keep = [
            (name, value) for name, values in changelist.params.items()
            if name not in (self.parameter_name, PAGE_VAR) for value in (values if isinstance(values, list) else [values])
        ]
        yield {
            "name": self.parameter_name, "value": self.value() or "", "keep": keep, "placeholder": self.placeholder,
            "clear_url": changelist.get_query_string(remove=[self.parameter_name]),
        }


class UserFilter(InputFilter):
    title = "person (user name)"
    parameter_name = "user"
    placeholder = "exact user name"

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        return queryset.filter(user_id__in=list(get_user_model().objects.filter(username=self.value()).values_list("pk", flat=True)))


DATE_FILTER = ("timestamp", admin.DateFieldListFilter)  # links to ranges, no query; ?timestamp__gte=&timestamp__lt= take any


class ReadOnlyAdmin(admin.ModelAdmin):
    """Compliance records are evidence: they can be read and searched, never edited here."""

    list_filter = ("status", DATE_FILTER, ModelFilter)
    list_select_related = ("user", "team")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice: a scan of the table each
    paginator = CappedCountPaginator
    list_per_page = 50
    change_list_template = "admin/audit/change_list_export.html"
    export_label = ""

    def get_search_results(self, request, queryset, search_term):
        # Exact, case-sensitive matches on indexed columns (the admin's own "=" prefix compares
        # UPPER() of every row): an id pasted from a log or a user name finds its rows at once.
        term = search_term.strip()
        if not term:
            return queryset, False
        users = get_user_model().objects.filter(username=term).values_list("pk", flat=True)
        match = Q(request_id=term) | Q(user_id__in=list(users))
        if hasattr(queryset.model, "audit_id"):
            match |= Q(audit_id=term) | Q(target=term)
        return queryset.filter(match), False

    def get_urls(self):
        opts = self.opts
        return [
            path("export.csv", self.admin_site.admin_view(self.export_view), name=f"{opts.app_label}_{opts.model_name}_export"),
            *super().get_urls(),
        ]

    def export_view(self, request):
        return exports.export(request, self)

    def changelist_view(self, request, extra_context=None):
        query = request.GET.copy()
        query.pop(PAGE_VAR, None)
        export_url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_export")
        extra_context = {"export_url": f"{export_url}?{query.urlencode()}".rstrip("?"), **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def transcript_url(conversation_id: int) -> str:
    return reverse("admin:audit_auditentry_transcript", args=[conversation_id])


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = (
        "audit_id", "timestamp", "action", "user", "team", "target", "model_id", "status", "safety_filtered", "client",
        "request_id", "transcript",
    )
    list_filter = (ActionFilter, "status", DATE_FILTER, ModelFilter, TeamFilter, ClientFilter, FiredFilter, UserFilter)
    search_fields = ("audit_id", "request_id", "user__username", "target")  # see get_search_results
    search_help_text = "Exact audit id (AUD-…), request id (req-…), user name or target (conversation:42, team:red)."
    readonly_fields = ("transcript",)

    def get_queryset(self, request):
        return access.audit_entries_visible_to(request.user)

    def get_urls(self):
        return [
            path(
                "transcript/<int:conversation_id>/", self.admin_site.admin_view(self.transcript_view),
                name="audit_auditentry_transcript",
            ),
            *super().get_urls(),
        ]

    def transcript_view(self, request, conversation_id):
        return transcripts.transcript(request, conversation_id, admin_site=self.admin_site)

    @admin.display(description="client")
    def client(self, entry):
        return (entry.details or {}).get("client", "")

    @admin.display(description="transcript")
    def transcript(self, entry):
        if not entry.conversation_id:
            return ""
        return format_html('<a href="{}">open transcript</a>', transcript_url(entry.conversation_id))


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "request_id", "timestamp", "user", "team", "model_id", "status", "input_tokens", "output_tokens", "ttft_ms",
        "latency_ms", "tokens_per_second",
    )
    list_filter = ("status", "token_source", DATE_FILTER, ModelFilter, TeamFilter, UserFilter)
    search_fields = ("request_id", "user__username")  # see get_search_results
    search_help_text = "Exact request id (req-…) or user name."

    def get_queryset(self, request):
        return access.usage_visible_to(request.user)


# --- Legal holds ------------------------------------------------------------------------------


class LegalHoldForm(forms.ModelForm):
    class Meta:
        model = LegalHold
        fields = ("team", "user", "reason")

    def clean(self):
        data = super().clean()
        if bool(data.get("team")) == bool(data.get("user")):
            raise forms.ValidationError("Choose either a team or a person: a hold is on one of them (set two holds for both).")
        return data


@admin.register(LegalHold)
class LegalHoldAdmin(admin.ModelAdmin):
    """Superusers set and release holds (each audited); officers may read them. A hold is never
    deleted: released ones stay, the record of when content was kept and why."""

    form = LegalHoldForm
    list_display = ("__str__", "reason", "set_by", "set_at", "active", "released_by", "released_at")
    list_filter = ("released_at",)
    list_select_related = ("team", "user", "set_by", "released_by")
    actions = ("release",)

    @admin.display(boolean=True, description="in force")
    def active(self, hold):
        return hold.active

    def get_readonly_fields(self, request, obj=None):
        return ("team", "user", "reason", "set_by", "set_at", "released_by", "released_at") if obj else ()

    def has_module_permission(self, request):
        return access.is_officer(request.user)

    def has_view_permission(self, request, obj=None):
        return access.is_officer(request.user)

    def has_add_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_release_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def save_model(self, request, obj, form, change):
        obj.set_by = request.user

        def save(now):
            obj.set_at = now
            obj.save()

        do_record_event(
            Action.LEGAL_HOLD_SET, actor=request.user, team=obj.team, target=obj.target,
            details={"reason": obj.reason}, also=save,
        )

    @admin.action(description="Release the selected holds (their content may be purged again)", permissions=["release"])
    def release(self, request, queryset):
        released = 0
        for hold in queryset.filter(released_at__isnull=True).select_related("team", "user"):
            do_record_event(
                Action.LEGAL_HOLD_RELEASED, actor=request.user, team=hold.team, target=hold.target,
                details={"reason": hold.reason, "set_at": hold.set_at.isoformat()},
                also=lambda now, pk=hold.pk: LegalHold.objects.filter(pk=pk).update(released_at=now, released_by=request.user),
            )
            released += 1
        self.message_user(request, f"{released} legal hold(s) released.")


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
