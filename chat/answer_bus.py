"""Reaching an answer that another server process is generating.

An answer belongs to the process that runs it (`Generation` in chat/generations.py). With several
processes (REDIS_URL and `runportal --workers N`) a browser may reconnect to another one, and its
Stop may arrive there. So each process listens on a channel of its own in the channel layer,
stored with every answer it starts (`Message.process_channel`), and the others send it:

    answer.follow {message, user, reply_to}  the owner subscribes a reader and takes the snapshot
        in the same step (nothing lost, nothing twice), then forwards the snapshot frame and every
        later frame, in order, to reply_to (the asking socket's channel); or answers answer.gone
    answer.unfollow {reply_to}               that socket went away: stop forwarding to it
    answer.stop {message, user}              Stop, if that user may (chat/access.py)

With the default in-memory channel layer there is one process, everything is local and no
listener runs.
"""

from __future__ import annotations

import asyncio
import logging

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer, get_channel_layer

from chat import generations
from chat.frames import frame_for, snapshot_frame

log = logging.getLogger(__name__)

# How long a socket waits for the owning process to answer a follow before it says the answer is
# not running (that process stopped or crashed).
FOLLOW_TIMEOUT = 5.0

_channels: dict[asyncio.AbstractEventLoop, asyncio.Future] = {}
_tasks: set[asyncio.Task] = set()  # listeners and forwards: referenced so they are not collected


def shared_layer():
    """The channel layer when other processes can be reached through it, else None."""
    layer = get_channel_layer()
    return None if layer is None or isinstance(layer, InMemoryChannelLayer) else layer


async def process_channel() -> str:
    """This process's channel-layer channel for answers ("" with one process); starts its listener on first use."""
    loop = asyncio.get_running_loop()
    future = _channels.get(loop)
    if future is None:
        future = _channels[loop] = loop.create_future()
        layer = shared_layer()
        # The default prefix on purpose: channels_redis reads one process-local prefix at a time,
        # so a channel of its own prefix would starve the sockets' channels (or be starved).
        name = await layer.new_channel() if layer is not None else ""
        if name:
            _spawn(_listen(layer, name))
        future.set_result(name)
    return await future


async def follow(owner_channel: str, *, message_id: int, user_id: int, reply_to: str) -> bool:
    """Ask the process generating an answer to forward it to `reply_to`; False if none can be asked."""
    layer = shared_layer()
    if layer is None or not owner_channel or owner_channel == await process_channel():
        return False
    await layer.send(owner_channel, {"type": "answer.follow", "message": message_id, "user": user_id, "reply_to": reply_to})
    return True


async def unfollow(owner_channel: str, *, reply_to: str) -> None:
    layer = shared_layer()
    if layer is not None and owner_channel:
        await layer.send(owner_channel, {"type": "answer.unfollow", "reply_to": reply_to})


async def stop(owner_channel: str, *, message_id: int, user_id: int) -> bool:
    """Send Stop to the process generating an answer; False if none can be asked."""
    layer = shared_layer()
    if layer is None or not owner_channel or owner_channel == await process_channel():
        return False
    await layer.send(owner_channel, {"type": "answer.stop", "message": message_id, "user": user_id})
    return True


def _spawn(coroutine) -> asyncio.Task:
    task = asyncio.ensure_future(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


async def _listen(layer, name: str) -> None:
    forwards: dict[tuple[str, int], asyncio.Task] = {}
    while True:
        try:
            message = await layer.receive(name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the answer bus could not receive; trying again in a second")
            await asyncio.sleep(1)
            continue
        try:
            _handle(layer, message, forwards)
        except Exception:
            log.exception("the answer bus could not handle a %r message", message.get("type"))


def _handle(layer, message: dict, forwards: dict) -> None:
    kind = message.get("type")
    if kind == "answer.unfollow":
        for key in [key for key in forwards if key[0] == message["reply_to"]]:
            forwards.pop(key).cancel()
        return
    message_id, user_id = message["message"], message["user"]
    generation = generations.find(message_id, user_id)
    if kind == "answer.stop":
        if generation is not None:
            generation.stop()
    elif kind == "answer.follow":
        reply_to = message["reply_to"]
        if generation is None:
            _spawn(layer.send(reply_to, {"type": "answer.gone", "message": message_id}))
            return
        key = (reply_to, message_id)
        earlier = forwards.pop(key, None)
        if earlier is not None:  # the same socket asked again: one forward, from a new snapshot
            earlier.cancel()
        reader = generation.subscribe()
        seq, text = generation.snapshot()
        task = _spawn(_forward(layer, generation, reader, reply_to, snapshot_frame(message_id, seq, text), earlier))
        forwards[key] = task
        task.add_done_callback(lambda done, key=key: forwards.get(key) is done and forwards.pop(key))


async def _forward(layer, generation, reader, reply_to: str, first: dict, earlier: asyncio.Task | None) -> None:
    this_task = asyncio.current_task()
    try:
        if earlier is not None:
            await asyncio.wait([earlier])  # its last send goes out before this snapshot
        await layer.send(reply_to, {"type": "answer.frame", "frame": first})
        async for event in generation.events(reader):
            if this_task.cancelling():
                # Replaced or unfollowed while a send was in flight: the Redis client can absorb
                # the CancelledError there (the send completes), the request stays counted.
                return
            await layer.send(reply_to, {"type": "answer.frame", "frame": frame_for(event)})
    except ChannelFull:
        log.info("stopped forwarding answer %s: nobody reads %s any more", first["message"], reply_to)
    finally:
        generation.unsubscribe(reader)
