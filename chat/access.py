"""Who may see and do what with conversations and answers: the one gate.

Every page, socket action and the answer bus ask here; none filters by owner itself. What is not
visible to someone does not exist for them: callers answer 404 or "not found", never "forbidden",
so an id reveals nothing. Teams, sharing and the compliance officer's read-everything role change
these functions only.
"""

from __future__ import annotations

from django.db.models import QuerySet

from chat.models import Conversation, Message


def conversations_visible_to(user) -> QuerySet[Conversation]:
    """The conversations this person may open and read."""
    return Conversation.objects.filter(user=user)


def conversations_writable_by(user) -> QuerySet[Conversation]:
    """The conversations this person may send into (their own)."""
    return Conversation.objects.filter(user=user)


def answers_visible_to(user) -> QuerySet[Message]:
    """The answers this person may read, follow after a reload, and see the end of."""
    return Message.objects.filter(role=Message.Role.ASSISTANT, conversation__in=conversations_visible_to(user))


def may_steer_answer(user_id: int, owner_id: int) -> bool:
    """Whether a person may Stop, or follow live, an answer that `owner_id` started."""
    return user_id == owner_id
