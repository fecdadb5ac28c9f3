from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from chat import access
from chat.models import Conversation, Message


def transcript_link(conversation_id: int):
    """The officer's transcript of the conversation (audit/transcripts.py: read-only, audited)."""
    return format_html('<a href="{}">open transcript</a>', reverse("admin:audit_auditentry_transcript", args=[conversation_id]))


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("role", "status", "model_id", "content", "finish_reason", "error_code", "filters", "created_at", "purged_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "team", "shared", "created_at", "updated_at", "transcript")
    list_filter = ("team", "shared")
    list_select_related = ("user", "team")
    search_fields = ("title", "user__username")
    date_hierarchy = "updated_at"
    readonly_fields = ("transcript", "user", "team", "shared", "title", "created_at", "updated_at")
    inlines = [MessageInline]

    def get_queryset(self, request):
        return access.transcripts_visible_to(request.user)

    @admin.display(description="transcript")
    def transcript(self, conversation):
        return transcript_link(conversation.pk)

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

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return queryset if access.is_officer(request.user) else queryset.none()

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
