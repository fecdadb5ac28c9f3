"""The chat page: the sidebar of the person's conversations and the open conversation.

Everything live (sending, streaming, stop, errors) goes over the websocket at /ws/chat/ and is
drawn by the scripts in static/chat/ (docs/ARCHITECTURE.md); this view only renders the page and
hands the stored conversation to them as a json_script payload (id "chat-data"), each message in
the shape of `Message.to_dict()`. Besides the session and user: the sidebar's two lists, the
person's teams, and the open conversation with its messages.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.views import View
from django.views.generic import TemplateView

from audit.actions import do_record_event
from audit.models import Action
from chat import access
from chat.models import Message
from gateway_portal.models import choose_team, current_team, teams_of
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
    """`/` is a new chat (for the person's current team); `/c/<pk>/` opens a conversation they may
    read: their own, or one a teammate shared with their team (read-only); anything else is 404."""

    template_name = "chat/chat.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        user = self.request.user
        pk = self.kwargs.get("pk")

        sidebar = list(
            access.own_conversations(user)
            .only("id", "title", "updated_at")
            .order_by("-updated_at", "-id")[:SIDEBAR_LIMIT]
        )
        shared = list(
            access.shared_with(user)
            .select_related("user", "team")
            .only("id", "title", "updated_at", "user__username", "team__name")
            .order_by("-updated_at", "-id")[:SIDEBAR_LIMIT]
        )
        conversation = None
        messages = []
        if pk is not None:
            conversation = get_object_or_404(
                access.conversations_visible_to(user).distinct().select_related("team", "user"), pk=pk
            )
            messages = [
                message.to_dict()
                for message in Message.objects.filter(conversation_id=conversation.pk)
                .exclude(role=Message.Role.SYSTEM)
                .order_by("created_at", "id")
                .defer("request_id", "process_channel", "created_at", "completed_at")
            ]

        teams = list(teams_of(user))
        team = current_team(user)
        read_only = conversation is not None and conversation.user_id != user.pk
        context.update(
            conversation=conversation,
            conversation_groups=group_by_day(sidebar),
            shared_conversations=shared,
            teams=teams,
            current_team=team,
            read_only=read_only,
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


class ShareView(LoginRequiredMixin, View):
    """POST /c/<pk>/share/ with shared=1 or 0: the owner shares a conversation with its team
    (read-only for teammates) or stops sharing it, which takes effect at once. Each change is
    audited (conversation.shared / unshared) in the same transaction; asking for the state it
    already has changes nothing and records nothing."""

    def post(self, request, pk):
        conversation = access.own_conversations(request.user).select_related("team").filter(pk=pk).first()
        if conversation is None:
            raise Http404
        shared = request.POST.get("shared") == "1"
        if shared != conversation.shared:
            conversation.shared = shared
            do_record_event(
                Action.CONVERSATION_SHARED if shared else Action.CONVERSATION_UNSHARED,
                actor=request.user, team=conversation.team_id, target=f"conversation:{conversation.pk}",
                conversation_id=conversation.pk,
                also=lambda now: conversation.save(update_fields=["shared"]),
            )
        if conversation.shared:
            flash.success(request, f"Shared with {conversation.team.name}: its members can read it, not write in it.")
        else:
            flash.success(request, "No longer shared: only you can open it.")
        return redirect(conversation)


class ChooseTeamView(LoginRequiredMixin, View):
    """POST /team/ with team=<id>: chat for that team from now on (remembered) in a new chat."""

    def post(self, request):
        try:
            team = choose_team(request.user, int(request.POST.get("team", "")))
        except ValueError:
            team = None
        if team is None:
            flash.error(request, "You are not a member of that team.")
        else:
            flash.success(request, f"New questions are asked for {team.name}.")
        return redirect("chat:index")
