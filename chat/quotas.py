"""Quotas a completion must fit in before it reaches the upstream.

The concurrency quota (`concurrency_limit()` answers streaming at once per person) is a
lease: `reserve()` returns one, and the executor always gives it back with `release()` in
`finally`. With one server process the leases are counted in memory. With several (REDIS_URL,
`runportal --workers N`) they are counted in Redis, so the limit is per person, not per process;
a process that dies without releasing leaves its leases to expire after LEASE_SECONDS instead
of holding a person's slots for ever.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from django.conf import settings

from chat.errors import QuotaExceeded


def concurrency_limit(user, team=None) -> int:
    """How many answers this person may have streaming at once: the one place the policy lives
    (teams and their limits will refine it here; the backends only count)."""
    return settings.PORTAL_MAX_CONCURRENT_PER_USER


def _refusal(limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"You already have {limit} answers in progress, the most allowed at once. "
        "Wait for one to finish, or stop one, then send again."
    )


class LocalConcurrencyQuota:
    """Counted in this process's memory: right when it is the only one."""

    def __init__(self):
        self._active: Counter[int] = Counter()

    async def reserve(self, user_id: int, limit: int) -> str:
        if self._active[user_id] >= limit:
            raise _refusal(limit)
        self._active[user_id] += 1
        return ""

    async def release(self, user_id: int, lease: str) -> None:
        self._active[user_id] -= 1
        if self._active[user_id] <= 0:
            del self._active[user_id]


# Drop expired leases, then add this one if fewer than the limit remain: one atomic step, so two
# processes cannot both take the last slot.
_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisConcurrencyQuota:
    """Counted in Redis: a sorted set of leases per person, scored by when each expires."""

    # Longer than any answer can take (4,096 tokens at a slow 5 tokens/s is under 14 minutes).
    LEASE_SECONDS = 3600

    def __init__(self, url: str):
        self._url = url
        self._clients: dict[asyncio.AbstractEventLoop, object] = {}

    def _client(self):
        """(client, reserve script) for the running event loop; the script runs by its SHA."""
        import redis.asyncio

        loop = asyncio.get_running_loop()
        pair = self._clients.get(loop)
        if pair is None:
            for other in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[other]
            client = redis.asyncio.Redis.from_url(self._url)
            pair = self._clients[loop] = (client, client.register_script(_RESERVE))
        return pair

    @staticmethod
    def _key(user_id: int) -> str:
        return f"portal:quota:concurrent:{user_id}"

    async def reserve(self, user_id: int, limit: int) -> str:
        lease = uuid.uuid4().hex
        now = time.time()
        _, reserve = self._client()
        taken = await reserve(keys=[self._key(user_id)], args=[now, limit, now + self.LEASE_SECONDS, lease, self.LEASE_SECONDS])
        if not taken:
            raise _refusal(limit)
        return lease

    async def release(self, user_id: int, lease: str) -> None:
        client, _ = self._client()
        await client.zrem(self._key(user_id), lease)


@dataclass
class Lease:
    backend: LocalConcurrencyQuota | RedisConcurrencyQuota
    user_id: int
    token: str

    async def release(self) -> None:
        await self.backend.release(self.user_id, self.token)


class _Concurrency:
    """The quota for the current settings (tests switch REDIS_URL on and off)."""

    def __init__(self):
        self._local = LocalConcurrencyQuota()
        self._shared: dict[str, RedisConcurrencyQuota] = {}

    async def reserve(self, user, team=None) -> Lease:
        """A lease on one of the person's slots, or QuotaExceeded."""
        limit = concurrency_limit(user, team)
        url = settings.REDIS_URL
        if not url:
            backend = self._local
        else:
            backend = self._shared.get(url) or self._shared.setdefault(url, RedisConcurrencyQuota(url))
        return Lease(backend, user.pk, await backend.reserve(user.pk, limit))


concurrency = _Concurrency()
