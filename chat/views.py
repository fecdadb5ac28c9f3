"""The chat page: the sidebar of the person's conversations and the open conversation.

Everything live (sending, streaming, stop, errors) goes over the websocket at /ws/chat/ and is
drawn by the scripts in static/chat/ (docs/ARCHITECTURE.md); this view only renders the page and
hands the stored conversation to them as a json_script payload (id "chat-data"), each message in
the shape of `Message.to_dict()`. Two queries per page besides the session and user: the sidebar
list and the open conversation's messages.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.mixins import LoginRequiredMixin
from django.shortcuts import get_object_or_404, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.views.generic import TemplateView

from chat import access
from chat.models import Message
from chat.validation import TEMPERATURE_MAX, TEMPERATURE_MIN

SIDEBAR_LIMIT = 200
WS_PATH = "/ws/chat/"

def group_by_day(conversations, now=None):
    """Split conversations (newest first) into Today / Yesterday / Previous 7 days / Older.

    Days are counted in the portal's time zone (settings.TIME_ZONE). Empty groups are left out.
    """
    now = timezone.localtime(now or timezone.now())
    today = now.date()
    labels = ("Today", "Yesterday", "Previous 7 days", "Older")
    groups = {label: [] for label in labels}
    for conversation in conversations:
        day = timezone.localtime(conversation.updated_at).date()
        age = (today - day).days
        if age <= 0:
            label = "Today"
        elif age == 1:
            label = "Yesterday"
        elif age <= 7:
            label = "Previous 7 days"
        else:
            label = "Older"
        groups[label].append(conversation)
    return [{"label": label, "conversations": groups[label]} for label in labels if groups[label]]


def _conversation_url_template() -> str:
    # The script fills in the id of a conversation the server created for the first question.
    marker = 987654321
    return reverse("chat:conversation", args=[marker]).replace(str(marker), "{id}")


class ChatView(LoginRequiredMixin, TemplateView):
    """`/` is a new chat; `/c/<pk>/` opens one of the person's own conversations (404 otherwise)."""

    template_name = "chat/chat.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        user = self.request.user
        pk = self.kwargs.get("pk")

        sidebar = list(
            access.conversations_visible_to(user)
            .only("id", "title", "updated_at")
            .order_by("-updated_at", "-id")[:SIDEBAR_LIMIT]
        )
        conversation = None
        messages = []
        if pk is not None:
            conversation = next((c for c in sidebar if c.pk == pk), None)
            if conversation is None:  # older than the sidebar's window, or not this person's
                conversation = get_object_or_404(
                    access.conversations_visible_to(user).only("id", "title", "updated_at"), pk=pk
                )
            messages = [
                message.to_dict()
                for message in Message.objects.filter(conversation_id=conversation.pk)
                .exclude(role=Message.Role.SYSTEM)
                .order_by("created_at", "id")
                .defer("request_id", "process_channel", "created_at", "completed_at")
            ]

        context.update(
            conversation=conversation,
            conversation_groups=group_by_day(sidebar),
            has_messages=bool(messages),
            chat_data={
                "conversation": conversation.pk if conversation else None,
                "messages": messages,
                "models": list(settings.PORTAL_MODELS),
                "defaults": {
                    "model": settings.PORTAL_DEFAULT_MODEL,
                    "temperature": settings.PORTAL_DEFAULT_TEMPERATURE,
                    "temperature_min": TEMPERATURE_MIN,
                    "temperature_max": TEMPERATURE_MAX,
                    "max_tokens": settings.PORTAL_DEFAULT_MAX_TOKENS,
                    "max_tokens_limit": settings.PORTAL_MAX_TOKENS_LIMIT,
                    "max_message_chars": settings.PORTAL_MAX_MESSAGE_CHARS,
                },
                "ws_path": WS_PATH,
                "conversation_url": _conversation_url_template(),
                "new_chat_url": reverse("chat:index"),
                "login_url": resolve_url(settings.LOGIN_URL),
            },
        )
        return context
