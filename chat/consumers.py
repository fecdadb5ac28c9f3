"""The chat websocket (`/ws/chat/`): validates frames, starts generations, relays their events.

A thin caller of the executor: every step of a completion happens in chat/executor.py. The frame
schema is documented in README.md ("Websocket protocol").
"""

from __future__ import annotations

import asyncio
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from chat import access, answer_bus, generations, recovery, socket_sessions
from chat.actions import ConversationTranscript
from chat.completion import BROWSER, CompletionRequest
from chat.errors import BadFrame, NotFound, NotRunning, PortalError, Unauthenticated
from chat.frames import error_frame, frame_for, snapshot_frame, stored_final_frame
from chat.generations import Generation
from chat.models import Message
from gateway_portal.models import current_team, teams_of

log = logging.getLogger(__name__)

UNAUTHENTICATED_CLOSE_CODE = 4401
# The largest frame the server accepts (runportal gives it to Daphne): a message of the longest
# content allowed (PORTAL_MAX_MESSAGE_CHARS, 32,000 by default) fits several times over, even
# escaped. A bigger frame closes the socket with 1009, invalid UTF-8 with 1007 (README.md).
MAX_FRAME_BYTES = 1024 * 1024


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        self.user = self.scope.get("user")
        if self.user is None or not self.user.is_authenticated:
            await self.send_error(Unauthenticated())
            await self.close(code=UNAUTHENTICATED_CLOSE_CODE)
            return
        self.relays: set[asyncio.Task] = set()
        self.teams = None  # team id -> Team, read on the first question
        self.current_team_id = None
        self.groups_joined = [socket_sessions.person_group(self.user.pk)]
        session_key = getattr(self.scope.get("session"), "session_key", None)
        if session_key:
            self.groups_joined.append(socket_sessions.session_group(session_key))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        # Answers another process forwards to this socket: message id -> that process's channel,
        # and the timers that give up on a follow nobody answered.
        self.remote: dict[int, str] = {}
        self.follow_timers: dict[int, asyncio.TimerHandle] = {}
        self.orphan_checks: dict[int, asyncio.TimerHandle] = {}  # end_orphan()

    async def disconnect(self, code):
        # The generations go on without us (they belong to their process); only stop relaying.
        for relay in getattr(self, "relays", ()):
            relay.cancel()
        for timer in [*getattr(self, "follow_timers", {}).values(), *getattr(self, "orphan_checks", {}).values()]:
            timer.cancel()
        for owner_channel in set(getattr(self, "remote", {}).values()):
            await answer_bus.unfollow(owner_channel, reply_to=self.channel_name)
        for group in getattr(self, "groups_joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def session_ended(self, event):
        """Logged out, deactivated or the password changed: this socket may start nothing more."""
        await self.send_error(Unauthenticated())
        await self.close(code=UNAUTHENTICATED_CLOSE_CODE)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = self.parse(text_data)
            if frame["type"] == "send":
                await self.start(frame)
            elif frame["type"] == "resume":
                await self.resume(frame)
            else:
                await self.stop(frame)
        except PortalError as exc:
            await self.send_error(exc)

    def parse(self, text_data) -> dict:
        if text_data is None:
            raise BadFrame("Frames must be JSON text, not binary.")
        try:
            frame = json.loads(text_data)
        except ValueError:
            raise BadFrame("That frame is not valid JSON.") from None
        except RecursionError:  # nested deeper than Python's stack: no frame of ours looks like that
            raise BadFrame("That frame is nested too deeply to be read.") from None
        if not isinstance(frame, dict) or frame.get("type") not in ("send", "stop", "resume"):
            raise BadFrame('Every frame needs a "type": "send", "stop" or "resume".')
        if frame["type"] == "stop":
            if not _is_id(frame.get("message")):
                raise BadFrame('"stop" needs the "message" id of the answer to stop.')
            return frame
        if frame["type"] == "resume":
            if not _is_id(frame.get("message")):
                raise BadFrame('"resume" needs the "message" id of the answer to follow.')
            return frame
        conversation = frame.get("conversation")
        if conversation is not None and not _is_id(conversation):
            raise BadFrame('"conversation" must be a conversation id or null.')
        team = frame.get("team")
        if team is not None and not _is_id(team):
            raise BadFrame('"team" must be the id of one of your teams, or left out.')
        if not isinstance(frame.get("content"), str):
            raise BadFrame('"send" needs the "content" of the message as text.')
        model = frame.get("model", settings.PORTAL_DEFAULT_MODEL)
        if not isinstance(model, str):
            raise BadFrame('"model" must be a model id.')
        for name in ("temperature", "max_tokens"):
            if name in frame and (isinstance(frame[name], bool) or not isinstance(frame[name], (int, float))):
                raise BadFrame(f'"{name}" must be a number.')
        return frame

    async def start(self, frame: dict):
        max_tokens = frame.get("max_tokens", settings.PORTAL_DEFAULT_MAX_TOKENS)
        request = CompletionRequest(
            user=self.user,
            team=await self.team_for(frame.get("team")),
            messages=[{"role": "user", "content": frame["content"]}],
            model_id=frame.get("model", settings.PORTAL_DEFAULT_MODEL),
            temperature=frame.get("temperature", settings.PORTAL_DEFAULT_TEMPERATURE),
            max_tokens=int(max_tokens) if isinstance(max_tokens, float) and max_tokens.is_integer() else max_tokens,
            client=BROWSER,
        )
        transcript = ConversationTranscript(frame.get("conversation"), process_channel=await answer_bus.process_channel())
        generation = Generation(request, transcript)
        self.follow(generation, generation.first_reader)

    async def team_for(self, wanted: int | None):
        """The team a new question is asked for: the one the page picked, else the person's
        current one. Memberships are read once per socket, and again for a team not seen yet."""
        if self.teams is None or (wanted is not None and wanted not in self.teams):
            self.teams, self.current_team_id = await self.memberships()
        team = self.teams.get(wanted if wanted is not None else self.current_team_id)
        if team is None:
            if not self.teams:
                raise NotFound("You are not in any team yet, so you cannot chat. Ask a team admin to add you to one.")
            raise NotFound("You are not a member of that team. Pick one of yours.")
        return team

    @database_sync_to_async
    def memberships(self):
        current = current_team(self.user)
        return {team.pk: team for team in teams_of(self.user)}, current.pk if current else None

    async def resume(self, frame: dict):
        """Follow an answer again after a reconnect or reload: the text so far, then live deltas."""
        message_id = frame["message"]
        generation = generations.find(message_id, self.user.pk)
        if generation is not None:
            reader = generation.subscribe()
            seq, text = generation.snapshot()
            await self.send_frame(snapshot_frame(message_id, seq, text))
            self.follow(generation, reader)
            return
        message = await self.stored_answer(message_id)
        if message is None:
            await self.send_error(NotFound("That answer does not exist or is not yours."), message=message_id)
        elif message.status != Message.Status.STREAMING:
            await self.send_final(message)
        elif not message.process_channel:
            # Made by a portal of one process, and not running in this one: that process is gone.
            await self.end_orphan(message_id, at_once=True)
        elif await answer_bus.follow(message.process_channel, message_id=message_id, user_id=self.user.pk, reply_to=self.channel_name):
            # Another process generates it: it sends the snapshot and the rest (answer_frame below).
            # A repeated resume restarts the forwarding there; only the newest timer counts.
            self.remote[message_id] = message.process_channel
            if (earlier := self.follow_timers.pop(message_id, None)) is not None:
                earlier.cancel()
            self.follow_timers[message_id] = asyncio.get_running_loop().call_later(
                answer_bus.FOLLOW_TIMEOUT, lambda: asyncio.ensure_future(self.answer_gone({"message": message_id}))
            )
        else:
            await self.end_orphan(message_id)

    async def end_orphan(self, message_id: int, *, at_once: bool = False):
        """No process runs this streaming answer: store it as interrupted (chat/recovery.py) and
        show that. Unless `at_once`, only once its heartbeat has stopped for the cut-off: a process
        that is merely slow to answer the answer bus may still finish it."""
        stale_before = timezone.now() if at_once else None
        await database_sync_to_async(recovery.interrupt_orphans)(stale_before=stale_before, only=message_id)
        message = await self.stored_answer(message_id)
        if message is not None and message.status != Message.Status.STREAMING:
            await self.send_final(message)
            return
        await self.send_not_running(message_id)
        if message is not None and not at_once and message_id not in self.orphan_checks:
            # Look once more when its heartbeat would be past the cut-off, so this page learns how
            # it ended without a reload.
            beat = message.checkpoint_at or message.created_at
            wait = (beat - timezone.now()).total_seconds() + settings.PORTAL_INTERRUPTED_AFTER_SECONDS + 1
            self.orphan_checks[message_id] = asyncio.get_running_loop().call_later(
                max(wait, 1.0), lambda: asyncio.ensure_future(self.end_orphan(message_id, at_once=False))
            )

    async def answer_frame(self, event):
        """A frame of an answer another process generates (answer.frame on the channel layer)."""
        frame = event["frame"]
        timer = self.follow_timers.pop(frame["message"], None)
        if timer is not None:
            timer.cancel()
        if frame["type"] in ("done", "error"):
            self.remote.pop(frame["message"], None)
        await self.send_frame(frame)

    async def answer_gone(self, event):
        """The process we asked no longer runs the answer (or never answered): say how it ended."""
        message_id = event["message"]
        timer = self.follow_timers.pop(message_id, None)
        if timer is not None:
            timer.cancel()
        self.remote.pop(message_id, None)
        await self.end_orphan(message_id)

    async def send_final(self, message: Message):
        await self.send_frame(stored_final_frame(message.to_dict()))

    async def send_not_running(self, message_id: int):
        # The process that generated it stopped without storing an outcome.
        await self.send_error(NotRunning(), message=message_id)

    @database_sync_to_async
    def stored_answer(self, message_id, *, own=False):
        answers = access.answers_of(self.user) if own else access.answers_visible_to(self.user)
        return answers.filter(pk=message_id).first()

    def follow(self, generation: Generation, reader):
        relay = asyncio.create_task(self.relay(generation, reader))
        self.relays.add(relay)
        relay.add_done_callback(self.relays.discard)

    async def relay(self, generation: Generation, reader):
        try:
            async for event in generation.events(reader):
                await self.send_frame(frame_for(event))
        except Exception as exc:
            # The browser went away between two frames (the server refuses sends on a closed
            # socket). The answer goes on without this reader; nothing here is worth a traceback.
            log.info("stopped relaying answer %s: %s", generation.message_id, exc)

    async def stop(self, frame: dict):
        message_id = frame["message"]
        generation = generations.find(message_id, self.user.pk)
        if generation is not None:
            generation.stop()
            return
        message = await self.stored_answer(message_id, own=True)
        if message is not None and message.status == Message.Status.STREAMING:
            if await answer_bus.stop(message.process_channel, message_id=message_id, user_id=self.user.pk):
                return
        # Finished already, never existed, or not yours: all look the same from outside.
        await self.send_error(NotRunning(), message=message_id)

    async def send_error(self, error: PortalError, *, message: int | None = None):
        await self.send_frame(error_frame(error.code, error.detail, error.retryable, message=message))

    async def send_frame(self, frame: dict):
        try:
            text = json.dumps(frame, ensure_ascii=False)
            text.encode()
        except UnicodeEncodeError:  # a lone surrogate echoed back: escaped, it is still valid JSON
            text = json.dumps(frame)
        await self.send(text_data=text)


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
