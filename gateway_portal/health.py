"""Health for load balancers: /healthz (this process answers) and /readyz (it can serve a chat).

/readyz checks, each within PORTAL_READY_TIMEOUT seconds and all at once: the database answers a
query, Redis answers PING (when REDIS_URL is set), and an upstream access token can be had (the
process's token manager: usually its cached token, no request). It answers 200 when all pass and
503 otherwise, with each check's result in JSON, so a balancer takes a process out that could only
show errors, and a person reading the body sees which part is down. No secret is in the answer.
Neither endpoint needs a log-in: the balancer has none.
"""

from __future__ import annotations

import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse

log = logging.getLogger(__name__)


def healthz(request):
    """Alive: answers without touching the database or anything else."""
    return JsonResponse({"status": "ok"})


async def readyz(request):
    names = ["database", "redis", "upstream"] if settings.REDIS_URL else ["database", "upstream"]
    checks = {"database": _database, "redis": _redis, "upstream": _upstream}
    results = await asyncio.gather(*(_timed(name, checks[name]) for name in names))
    ready = all(result["ok"] for result in results)
    body = {"status": "ready" if ready else "not ready", "checks": dict(zip(names, results, strict=True))}
    return JsonResponse(body, status=200 if ready else 503)


async def _timed(name, check) -> dict:
    began = time.monotonic()
    try:
        await asyncio.wait_for(check(), settings.PORTAL_READY_TIMEOUT)
        result = {"ok": True}
    except TimeoutError:
        result = {"ok": False, "error": f"no answer within {settings.PORTAL_READY_TIMEOUT:g} s"}
    except Exception as exc:
        result = {"ok": False, "error": _sentence(exc)}
    result["ms"] = int((time.monotonic() - began) * 1000)
    if not result["ok"]:
        log.warning("readiness check %s failed: %s", name, result["error"])
    return result


def _sentence(exc: Exception) -> str:
    # The portal's own errors carry a sentence for people; others are named by their class and
    # first line (a connection refused, a timeout), never with a URL that could hold a password.
    lines = str(exc).splitlines()
    detail = getattr(exc, "detail", None) or (lines[0] if lines else "")
    return f"{type(exc).__name__}: {detail}"[:300] if detail else type(exc).__name__


def _query_database():
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # back to the pool: this thread is not the request's


async def _database():
    # Not thread-sensitive: a database that hangs must not hold the one thread the rest of the
    # process's ORM calls run in.
    await sync_to_async(_query_database, thread_sensitive=False)()


async def _redis():
    import redis.asyncio

    timeout = settings.PORTAL_READY_TIMEOUT
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _upstream():
    from chat.upstream.genesys import get_client

    await get_client().tokens.get()
