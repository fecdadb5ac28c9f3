from django.contrib import admin

from chat.api.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Read-only: keys are made and revoked by their owners (Settings → API keys) or `manage.py apikey`."""

    list_display = ("name", "prefix", "user", "team", "created_at", "last_used_at", "expires_at", "revoked_at")
    list_filter = ("team",)
    search_fields = ("=prefix", "=user__username")
    list_select_related = ("user", "team")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
