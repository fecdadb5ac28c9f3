"""Quotas a completion must fit in before it reaches the upstream.

The concurrency quota (PORTAL_MAX_CONCURRENT_PER_USER answers streaming at once per person) is a
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


class QuotaExceeded(Exception):
    code = "quota_exceeded"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def _refusal(limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"You already have {limit} answers in progress, the most allowed at once. "
        "Wait for one to finish, or stop one, then send again."
    )


class LocalConcurrencyQuota:
    """Counted in this process's memory: right when it is the only one."""

    def __init__(self):
        self._active: Counter[int] = Counter()

    async def reserve(self, user_id: int) -> str:
        limit = settings.PORTAL_MAX_CONCURRENT_PER_USER
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

    async def reserve(self, user_id: int) -> str:
        limit = settings.PORTAL_MAX_CONCURRENT_PER_USER
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

    async def reserve(self, user_id: int) -> Lease:
        url = settings.REDIS_URL
        if not url:
            backend = self._local
        else:
            backend = self._shared.get(url) or self._shared.setdefault(url, RedisConcurrencyQuota(url))
        return Lease(backend, user_id, await backend.reserve(user_id))


concurrency = _Concurrency()
