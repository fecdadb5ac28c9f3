"""Quotas a completion must fit in before it reaches the upstream.

For now the concurrency quota is counted per process (a later change makes it cross-process);
a reservation is a lease that the executor always releases in `finally`.
"""

from __future__ import annotations

from collections import Counter

from django.conf import settings


class QuotaExceeded(Exception):
    code = "quota_exceeded"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class ConcurrencyQuota:
    def __init__(self):
        self._active: Counter[int] = Counter()

    def reserve(self, user_id: int) -> None:
        limit = settings.PORTAL_MAX_CONCURRENT_PER_USER
        if self._active[user_id] >= limit:
            raise QuotaExceeded(
                f"You already have {limit} answers in progress, the most allowed at once. "
                "Wait for one to finish, or stop one, then send again."
            )
        self._active[user_id] += 1

    def release(self, user_id: int) -> None:
        self._active[user_id] -= 1
        if self._active[user_id] <= 0:
            del self._active[user_id]


concurrency = ConcurrencyQuota()
