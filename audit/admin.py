from django.contrib import admin

from audit.models import AuditEntry, UsageRecord


class ReadOnlyAdmin(admin.ModelAdmin):
    """Compliance records are evidence: they can be read and searched, never edited here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("audit_id", "timestamp", "user", "model_id", "status", "safety_filtered", "request_id")
    list_filter = ("status", "safety_filtered", "model_id")
    list_select_related = ("user",)
    search_fields = ("audit_id", "request_id", "user__username")
    date_hierarchy = "timestamp"


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ("request_id", "timestamp", "user", "model_id", "status", "input_tokens", "output_tokens", "ttft_ms", "latency_ms", "tokens_per_second")
    list_filter = ("status", "model_id", "token_source")
    list_select_related = ("user",)
    search_fields = ("request_id", "user__username")
    date_hierarchy = "timestamp"
