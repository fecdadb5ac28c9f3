"""The limits a completion must fit in before it reaches the upstream (README.md, "Limits").

    concurrent_per_person   answers streaming at once, per person        (a lease)
    concurrent_per_team     answers streaming at once, per team          (a lease)
    concurrent_global       answers streaming at once, whole portal      (a lease)
    requests_per_minute     completions started per person per minute    (a counter)
    tokens_per_minute       tokens per team per minute                   (a reservation)
    tokens_per_month        tokens per team per calendar month (UTC)     (a reservation)

Values: the settings' defaults (PORTAL_..., 0 = no limit), and a team's own values
(gateway_portal.models.TeamLimits, set by its admin). `limits.reserve()` checks every limit and
takes what the completion needs in one step: one Lua script in Redis (REDIS_URL, several server
processes) or one in-memory check (a single process: runportal's default). It returns a
`Reservation` that the executor always settles in `finally`: the leases are given back and the
token reservations (max_tokens plus the estimated input) become the real count, so a hundred
answers streaming at once cannot overspend a budget.

A process that dies cannot settle. Its leases and token reservations carry an expiry
(PORTAL_LEASE_SECONDS) that a background task renews while the answer runs, so a dead process's
slots and reserved tokens come back within minutes. Minute windows are fixed (the current UTC
minute); a refusal says how many seconds remain of the window, the month or, for a concurrency
limit, a short wait. Redis down: PortalUnavailable (retryable), nothing taken.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from django.conf import settings

from chat.errors import PortalUnavailable, QuotaExceeded

log = logging.getLogger(__name__)

# The order the Lua script checks them in (its index + 1 is what it answers on a refusal).
NAMES = (
    "concurrent_global", "concurrent_per_team", "concurrent_per_person",
    "requests_per_minute", "tokens_per_minute", "tokens_per_month",
)
TEAM_VALUES = ("concurrent_per_person", "concurrent_per_team", "requests_per_minute", "tokens_per_minute", "tokens_per_month")
# No one can know when an answer ends: a refused concurrency slot suggests a short wait.
CONCURRENCY_RETRY_SECONDS = 5
TEAM_CACHE_SECONDS = 10  # a team's own values reach the other processes within this


@dataclass(frozen=True)
class Limits:
    concurrent_global: int = 0
    concurrent_per_team: int = 0
    concurrent_per_person: int = 0
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    tokens_per_month: int = 0

    @classmethod
    def defaults(cls) -> Limits:
        return cls(
            concurrent_global=settings.PORTAL_MAX_CONCURRENT_TOTAL,
            concurrent_per_team=settings.PORTAL_MAX_CONCURRENT_PER_TEAM,
            concurrent_per_person=settings.PORTAL_MAX_CONCURRENT_PER_USER,
            requests_per_minute=settings.PORTAL_REQUESTS_PER_MINUTE_PER_USER,
            tokens_per_minute=settings.PORTAL_TOKENS_PER_MINUTE_PER_TEAM,
            tokens_per_month=settings.PORTAL_TOKENS_PER_MONTH_PER_TEAM,
        )

    def values(self) -> list[int]:
        return [getattr(self, name) for name in NAMES]

    @property
    def any(self) -> bool:
        return any(self.values())


def concurrency_limit(user, team=None) -> int:
    """How many answers this person may have streaming at once (the defaults only)."""
    return settings.PORTAL_MAX_CONCURRENT_PER_USER


# --- a team's own values ----------------------------------------------------------------------

_team_values: dict[int, tuple[float, dict]] = {}


def _read_team_values(team_id: int) -> dict:
    from gateway_portal.models import TeamLimits

    row = TeamLimits.objects.filter(team_id=team_id).values(*TEAM_VALUES).first() or {}
    return {name: value for name, value in row.items() if value is not None}


def forget_team(team_id: int) -> None:
    """A team's values changed in this process: the next completion reads them again."""
    _team_values.pop(team_id, None)


def effective_limits(team_id: int | None, own: dict | None = None) -> Limits:
    """The defaults with the team's own values over them; the team limits are off without a team."""
    values = {**Limits.defaults().__dict__, **(own or {})}
    if team_id is None:
        values.update(concurrent_per_team=0, tokens_per_minute=0, tokens_per_month=0)
    return Limits(**values)


async def limits_for(team_id: int | None) -> Limits:
    """The limits of a completion for this team, its values cached for TEAM_CACHE_SECONDS."""
    if team_id is None:
        return effective_limits(None)
    cached = _team_values.get(team_id)
    if cached is None or cached[0] < time.monotonic():
        from chat.actions import run_in_thread

        cached = _team_values[team_id] = (time.monotonic() + TEAM_CACHE_SECONDS, await run_in_thread(_read_team_values)(team_id))
    return effective_limits(team_id, cached[1])


# --- time windows ---------------------------------------------------------------------------


def _minute(now: float) -> tuple[int, int]:
    """(this minute's number, seconds left of it, at least 1)."""
    return int(now // 60), max(1, int(60 - now % 60 + 0.999))


def _month(now: float) -> tuple[str, int]:
    """(this UTC month as YYYYMM, seconds left of it)."""
    moment = datetime.fromtimestamp(now, timezone.utc)
    days = calendar.monthrange(moment.year, moment.month)[1]
    end = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp() + days * 86400
    return moment.strftime("%Y%m"), max(1, int(end - now + 0.999))


def month_used_in_database(team_id: int, month: str) -> int:
    """Tokens the team's completions used this month, as recorded: a budget's starting point when
    its counter is missing (a new month, Redis restarted, a new process)."""
    from django.db.models import F, Sum

    from audit.models import UsageRecord

    start = datetime(int(month[:4]), int(month[4:]), 1, tzinfo=timezone.utc)
    return UsageRecord.objects.filter(team_id=team_id, timestamp__gte=start).aggregate(
        n=Sum(F("input_tokens") + F("output_tokens"))
    )["n"] or 0


# --- refusals ---------------------------------------------------------------------------------


def refusal(name: str, value: int, retry_after: int | None, *, need: int = 0, used: int = 0) -> QuotaExceeded:
    """The error for a limit reached: which one, its value, when to try again, in a sentence."""
    # When to try again is retry_after (the page counts it down), not in the sentence.
    if name == "concurrent_per_person":
        text = (f"You already have {value} answers in progress, the most allowed at once. "
                "Wait for one to finish, or stop one, then send again.")
    elif name == "concurrent_per_team":
        text = f"Your team already has {value} answers in progress, the most it may have at once."
    elif name == "concurrent_global":
        text = f"The portal is answering {value} questions at once, the most it allows. Please wait a moment."
    elif name == "requests_per_minute":
        text = f"You have sent {value} messages this minute, the most allowed per minute."
    elif name == "tokens_per_minute":
        if need > value:
            text = (f"This request may need up to {need:,} tokens (max tokens plus the conversation), more than "
                    f"your team's limit of {value:,} tokens a minute. Lower max tokens, or start a new chat.")
            retry_after = None
        else:
            text = (f"Your team has used {used:,} of its {value:,} tokens for this minute; this request may need "
                    f"up to {need:,}.")
    else:
        text = (f"Your team has used {used:,} of its monthly budget of {value:,} tokens; this request may need up to "
                f"{need:,}. Lower max tokens, or ask your team admin.")
    error = QuotaExceeded(text, limit=name, value=value, retry_after=retry_after)
    if name == "tokens_per_month":
        error.code = "budget_exhausted"
    return error


# --- the reservation --------------------------------------------------------------------------


@dataclass
class Reservation:
    """What a completion took; `settle()` gives it back (once), with `used` tokens as the real count."""

    backend: object
    lease: str
    user_id: int
    team_id: int | None
    need: int
    limits: Limits
    minute: int
    month: str
    used: int = 0
    _renewal: asyncio.Task | None = field(default=None, repr=False)
    _settled: bool = False

    async def settle(self) -> None:
        if self._settled:
            return
        self._settled = True
        if self._renewal is not None:
            self._renewal.cancel()
        await self.backend.settle(self)


class _Nothing:
    """No limit is on: nothing to take or give back."""

    async def settle(self, reservation: Reservation) -> None:
        return None


class LocalLimits:
    """Counted in this process's memory: right when it is the only one (nothing to expire)."""

    def __init__(self):
        self.active: dict[str, Counter] = {"global": Counter(), "team": Counter(), "person": Counter()}
        self.requests: Counter = Counter()  # (user, minute) -> completions started
        self.tokens: Counter = Counter()  # (team, minute) -> tokens reserved or used
        self.month: dict[tuple[int, str], int] = {}  # (team, YYYYMM) -> tokens reserved or used
        self._minute = 0

    def _scopes(self, user_id, team_id):
        return (("global", 0, "concurrent_global"), ("team", team_id, "concurrent_per_team"),
                ("person", user_id, "concurrent_per_person"))

    async def reserve(self, user_id: int, team_id: int | None, need: int, limits: Limits, now: float) -> Reservation:
        minute, minute_left = _minute(now)
        month, month_left = _month(now)
        if minute != self._minute:  # old windows are never read again
            self._minute = minute
            for counter in (self.requests, self.tokens):
                for key in [k for k in counter if k[1] < minute]:
                    del counter[key]
        if limits.tokens_per_month and (team_id, month) not in self.month:
            from chat.actions import run_in_thread

            used = await run_in_thread(month_used_in_database)(team_id, month)
            self.month.setdefault((team_id, month), used)
        for scope, key, name in self._scopes(user_id, team_id):
            value = getattr(limits, name)
            if value and self.active[scope][key] >= value:
                raise refusal(name, value, CONCURRENCY_RETRY_SECONDS)
        if limits.requests_per_minute and self.requests[user_id, minute] >= limits.requests_per_minute:
            raise refusal("requests_per_minute", limits.requests_per_minute, minute_left)
        used = self.tokens[team_id, minute]
        if limits.tokens_per_minute and used + need > limits.tokens_per_minute:
            raise refusal("tokens_per_minute", limits.tokens_per_minute, minute_left, need=need, used=used)
        used = self.month.get((team_id, month), 0)
        if limits.tokens_per_month and used + need > limits.tokens_per_month:
            raise refusal("tokens_per_month", limits.tokens_per_month, month_left, need=need, used=used)
        for scope, key, name in self._scopes(user_id, team_id):
            if getattr(limits, name):
                self.active[scope][key] += 1
        if limits.requests_per_minute:
            self.requests[user_id, minute] += 1
        if limits.tokens_per_minute:
            self.tokens[team_id, minute] += need
        if limits.tokens_per_month:
            self.month[team_id, month] += need
        return Reservation(self, "", user_id, team_id, need, limits, minute, month)

    async def settle(self, r: Reservation) -> None:
        for scope, key, name in self._scopes(r.user_id, r.team_id):
            if getattr(r.limits, name):
                self.active[scope][key] -= 1
                if self.active[scope][key] <= 0:
                    del self.active[scope][key]
        if r.limits.tokens_per_minute and (r.team_id, r.minute) in self.tokens:
            self.tokens[r.team_id, r.minute] += r.used - r.need
        if r.limits.tokens_per_month and (r.team_id, r.month) in self.month:
            self.month[r.team_id, r.month] += r.used - r.need

    def usage(self, user_id: int, team_id: int, now: float) -> dict:
        minute, _ = _minute(now)
        month, _ = _month(now)
        used = self.month.get((team_id, month))
        return {
            "concurrent_global": self.active["global"][0],
            "concurrent_per_team": self.active["team"][team_id],
            "concurrent_per_person": self.active["person"][user_id],
            "requests_per_minute": self.requests[user_id, minute],
            "tokens_per_minute": self.tokens[team_id, minute],
            "tokens_per_month": used if used is not None else month_used_in_database(team_id, month),
        }


# KEYS: 1-3 the leases (sorted sets scored by expiry) of the portal, the team, the person; 4 the
# person's requests this minute; 5 the team's tokens this minute; 6 the team's tokens this month
# (used + reserved); 7 its reservations (sorted set by expiry); 8 their amounts (hash).
# ARGV: now, lease, expires, lease ttl, tokens needed, seconds left of the minute, of the month,
# concurrency retry, then the six limits in NAMES order (0 = off).
# Answers {1} taken, {0, limit index, retry after, used} refused, {-1} the month's counter is
# missing (the caller seeds it from the database and asks again). Checks first, then takes: all
# or nothing, in one step, so two processes cannot both take the last slot or token.
_RESERVE = """
local now, lease, expires, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local need, minute_left, month_left, wait = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local function limit(i) return tonumber(ARGV[8 + i]) end
for i = 1, 3 do
    if limit(i) > 0 then
        redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
        local n = redis.call('ZCARD', KEYS[i])
        if n >= limit(i) then return {0, i, wait, n} end
    end
end
if limit(4) > 0 then
    local n = tonumber(redis.call('GET', KEYS[4]) or '0')
    if n >= limit(4) then return {0, 4, minute_left, n} end
end
if limit(5) > 0 then
    local used = tonumber(redis.call('GET', KEYS[5]) or '0')
    if used + need > limit(5) then return {0, 5, minute_left, used} end
end
if limit(6) > 0 then
    local dead = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now)
    for _, id in ipairs(dead) do
        local amount = redis.call('HGET', KEYS[8], id)
        if amount and redis.call('EXISTS', KEYS[6]) == 1 then redis.call('DECRBY', KEYS[6], amount) end
        redis.call('HDEL', KEYS[8], id)
        redis.call('ZREM', KEYS[7], id)
    end
    local used = redis.call('GET', KEYS[6])
    if not used then return {-1} end
    if tonumber(used) + need > limit(6) then return {0, 6, month_left, tonumber(used)} end
end
for i = 1, 3 do
    if limit(i) > 0 then
        redis.call('ZADD', KEYS[i], expires, lease)
        redis.call('EXPIRE', KEYS[i], ttl)
    end
end
if limit(4) > 0 then redis.call('INCR', KEYS[4]); redis.call('EXPIRE', KEYS[4], 120) end
if limit(5) > 0 then redis.call('INCRBY', KEYS[5], need); redis.call('EXPIRE', KEYS[5], 120) end
if limit(6) > 0 then
    redis.call('INCRBY', KEYS[6], need)
    redis.call('ZADD', KEYS[7], expires, lease)
    redis.call('HSET', KEYS[8], lease, need)
    redis.call('EXPIRE', KEYS[7], month_left + 86400)
    redis.call('EXPIRE', KEYS[8], month_left + 86400)
end
return {1}
"""

# KEYS as _RESERVE's 1-3 and 5-8 (the minute's tokens key is the one the reservation was made in).
# ARGV: lease, tokens reserved for the minute (0: none), tokens used, whether the month was reserved.
_SETTLE = """
local lease, minute_need, used, month = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
for i = 1, 3 do redis.call('ZREM', KEYS[i], lease) end
if minute_need > 0 and redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCRBY', KEYS[4], used - minute_need) end
if month and redis.call('EXISTS', KEYS[5]) == 1 then
    local amount = redis.call('HGET', KEYS[7], lease)
    -- expired meanwhile (this process stalled): the reservation was already given back
    redis.call('INCRBY', KEYS[5], used - tonumber(amount or '0'))
    redis.call('HDEL', KEYS[7], lease)
    redis.call('ZREM', KEYS[6], lease)
end
return 1
"""

# KEYS: the sorted sets holding the lease. ARGV: lease, new expiry, key ttl. XX: a lease already
# settled (or expired and swept) is not brought back.
_RENEW = """
for i = 1, #KEYS do
    if redis.call('ZADD', KEYS[i], 'XX', 'CH', ARGV[2], ARGV[1]) == 1 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end
end
return 1
"""


def _keys(user_id: int, team_id: int | None, minute: int, month: str) -> list[str]:
    team = team_id if team_id is not None else "none"
    return [
        "portal:limits:concurrent:all",
        f"portal:limits:concurrent:team:{team}",
        f"portal:limits:concurrent:user:{user_id}",
        f"portal:limits:rpm:{user_id}:{minute}",
        f"portal:limits:tpm:{team}:{minute}",
        f"portal:limits:month:{team}:{month}",
        f"portal:limits:month:{team}:{month}:held",
        f"portal:limits:month:{team}:{month}:amounts",
    ]


class RedisLimits:
    """Counted in Redis, shared by every server process: one script call per completion."""

    def __init__(self, url: str):
        self._url = url
        self._clients: dict[asyncio.AbstractEventLoop, tuple] = {}

    def _client(self):
        """(client, reserve, settle, renew) for the running event loop; scripts run by their SHA."""
        import redis.asyncio

        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is None:
            for other in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[other]
            client = redis.asyncio.Redis.from_url(self._url, socket_timeout=5, socket_connect_timeout=2)
            found = self._clients[loop] = (client, *(client.register_script(s) for s in (_RESERVE, _SETTLE, _RENEW)))
        return found

    async def reserve(self, user_id: int, team_id: int | None, need: int, limits: Limits, now: float) -> Reservation:
        lease_seconds = settings.PORTAL_LEASE_SECONDS
        lease = uuid.uuid4().hex
        minute, minute_left = _minute(now)
        month, month_left = _month(now)
        keys = _keys(user_id, team_id, minute, month)
        args = [now, lease, now + lease_seconds, math.ceil(lease_seconds), need, minute_left, month_left, CONCURRENCY_RETRY_SECONDS,
                *limits.values()]
        client, reserve, _, _ = self._client()
        answer = await reserve(keys=keys, args=args)
        if answer[0] == -1:
            from chat.actions import run_in_thread

            used = await run_in_thread(month_used_in_database)(team_id, month)
            await client.set(keys[5], used, nx=True, ex=month_left + 86400)
            answer = await reserve(keys=keys, args=args)
        if answer[0] != 1:
            _, index, retry_after, used = answer
            name = NAMES[index - 1]
            raise refusal(name, getattr(limits, name), int(retry_after), need=need, used=int(used))
        reservation = Reservation(self, lease, user_id, team_id, need, limits, minute, month)
        reservation._renewal = asyncio.create_task(self._renew_while_running(reservation, lease_seconds))
        return reservation

    async def _renew_while_running(self, r: Reservation, lease_seconds: float) -> None:
        """Push the lease's expiry on while the answer runs, four times per lease time."""
        keys = _keys(r.user_id, r.team_id, r.minute, r.month)
        held = [keys[i] for i, name in enumerate(NAMES[:3]) if getattr(r.limits, name)]
        if r.limits.tokens_per_month:
            held.append(keys[6])
        while held:
            await asyncio.sleep(lease_seconds / 4)
            try:
                _, _, _, renew = self._client()
                await renew(keys=held, args=[r.lease, time.time() + lease_seconds, math.ceil(lease_seconds)])
            except Exception:  # the next turn tries again; the lease lasts three more
                log.warning("could not renew limit lease %s", r.lease, exc_info=True)

    async def settle(self, r: Reservation) -> None:
        keys = _keys(r.user_id, r.team_id, r.minute, r.month)
        _, _, settle, _ = self._client()
        await settle(
            keys=[*keys[:3], *keys[4:]],
            args=[r.lease, r.need if r.limits.tokens_per_minute else 0, r.used, "1" if r.limits.tokens_per_month else "0"],
        )

    def usage(self, user_id: int, team_id: int, now: float) -> dict:
        import redis

        minute, _ = _minute(now)
        month, _ = _month(now)
        keys = _keys(user_id, team_id, minute, month)
        client = redis.Redis.from_url(self._url, socket_timeout=5, socket_connect_timeout=2)
        try:
            pipe = client.pipeline(transaction=False)
            for key in keys[:3]:
                pipe.zcount(key, now, "+inf")
            for key in keys[3:6]:
                pipe.get(key)
            counts = pipe.execute()
        finally:
            client.close()
        month_used = counts[5]
        return {
            **dict(zip(NAMES[:3], counts[:3])),
            "requests_per_minute": int(counts[3] or 0),
            "tokens_per_minute": int(counts[4] or 0),
            "tokens_per_month": int(month_used) if month_used is not None else month_used_in_database(team_id, month),
        }


class _Limits:
    """The limits for the current settings (tests switch REDIS_URL on and off)."""

    def __init__(self):
        self.local = LocalLimits()
        self._shared: dict[str, RedisLimits] = {}

    def backend(self):
        url = settings.REDIS_URL
        if not url:
            return self.local
        return self._shared.get(url) or self._shared.setdefault(url, RedisLimits(url))

    async def reserve(self, user_id: int, team_id: int | None, need: int) -> Reservation:
        """Take what a completion needs under every limit (`need`: its max_tokens plus its
        estimated input), or raise QuotaExceeded naming the limit, or PortalUnavailable."""
        try:
            limits = await limits_for(team_id)
            if not limits.any:
                return Reservation(_Nothing(), "", user_id, team_id, need, limits, 0, "")
            return await self.backend().reserve(user_id, team_id, need, limits, time.time())
        except QuotaExceeded:
            raise
        except Exception as exc:
            log.exception("could not check the limits (Redis down?)")
            raise PortalUnavailable() from exc

    def usage(self, user_id: int, team_id: int) -> dict:
        """What is used now under each limit, for the limits page (sync: called from a view)."""
        return self.backend().usage(user_id, team_id, time.time())


limits = _Limits()
