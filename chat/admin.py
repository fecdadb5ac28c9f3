from django.contrib import admin

from chat.models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("role", "status", "model_id", "content", "finish_reason", "error_code", "filters", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "team", "shared", "created_at", "updated_at")
    list_filter = ("team", "shared")
    list_select_related = ("user", "team")
    search_fields = ("title", "user__username")
    date_hierarchy = "updated_at"
    readonly_fields = ("user", "team", "shared", "title", "created_at", "updated_at")
    inlines = [MessageInline]

    def has_add_permission(self, request):
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "role", "status", "model_id", "request_id", "created_at")
    list_filter = ("role", "status", "model_id")
    list_select_related = ("conversation",)
    search_fields = ("request_id", "content")
    readonly_fields = [f.name for f in Message._meta.fields]
    # What the person saw beside what the model wrote, when a safety filter changed it.
    fields = [
        ("content", "upstream_text") if f.name == "content" else f.name
        for f in Message._meta.fields
        if f.name not in ("id", "upstream_text")
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
