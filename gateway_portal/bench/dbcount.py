"""Scenario 5: database work per completion, counted in this process around the executor.

The executor is run exactly as the consumer runs it (`ChatExecutor().stream(...)`), against the
bench's emulator, with a counter on every database connection of the process: Django's
`execute_wrapper` sees each SQL statement; `commit` and the connection health check (Django's, or
the pool's on each borrow) are counted too, because each is a round trip to Postgres that
`execute_wrapper` does not see (and so is the BEGIN psycopg sends before a transaction's first
statement: one per commit).
"""

from __future__ import annotations

import asyncio
import threading

from django.conf import settings
from django.db import connections
from django.db.backends.signals import connection_created

from chat.actions import ConversationTranscript
from chat.completion import CompletionRequest, Delta, Done, Failed
from chat.executor import ChatExecutor
from chat.upstream import genesys
from gateway_portal.models import current_team


class DatabaseCounter:
    """Counts statements, commits and health checks on every connection it is attached to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.statements: list[str] = []
            self.commits = 0
            self.health_checks = 0

    def __call__(self, execute, sql, params, many, context):
        with self.lock:
            self.statements.append(_describe(sql))
        return execute(sql, params, many, context)

    def attach(self, connection) -> None:
        if self in connection.execute_wrappers:
            return
        connection.execute_wrappers.append(self)
        commit, is_usable = connection.commit, connection.is_usable

        def counted_commit():
            with self.lock:
                self.commits += 1
            return commit()

        def counted_is_usable():
            with self.lock:
                self.health_checks += 1
            return is_usable()

        # Instance attributes shadow the methods on this connection object only.
        connection.commit, connection.is_usable = counted_commit, counted_is_usable
        self.attach_to_pool(connection.pool)

    def attach_to_pool(self, pool) -> None:
        """With a connection pool (gateway_portal/db_pool.py) the health check is the pool's: an
        empty query on every borrow, which neither execute_wrapper nor is_usable sees. psycopg_pool
        keeps that callback in `_check`; it is wrapped once per pool."""
        if pool is None or pool._check is None or getattr(pool, "_bench_counter", None) is self:
            return
        check = getattr(pool, "_bench_uncounted_check", pool._check)

        def counted_check(conn):
            with self.lock:
                self.health_checks += 1
            return check(conn)

        pool._bench_uncounted_check, pool._check, pool._bench_counter = check, counted_check, self

    def on_connection_created(self, sender, connection, **kwargs) -> None:
        self.attach(connection)

    def attach_to_this_thread(self) -> None:
        for connection in connections.all(initialized_only=True):
            self.attach(connection)


def _describe(sql: str) -> str:
    """`INSERT chat_message`, `UPDATE chat_message`, … (verb and first table), for the report."""
    words = sql.replace('"', "").split()
    upper = [word.upper() for word in words]
    for i, word in enumerate(upper[:-1]):
        if word in ("INTO", "FROM") or (i == 0 and word == "UPDATE"):
            return f"{upper[0]} {words[i + 1]}"
    return upper[0] if upper else "?"


def measure(emulator_url: str, user, sizes: list[int], repeats: int = 3) -> dict:
    """Statements per completion for replies of each size (tokens asked of the emulator)."""
    settings.EMULATOR_URL = emulator_url
    genesys._client = None  # a client for the bench's emulator, not whatever was configured
    counter = DatabaseCounter()
    connection_created.connect(counter.on_connection_created)
    try:
        counter.attach_to_this_thread()
        return asyncio.run(_measure(counter, user, sizes, repeats))
    finally:
        connection_created.disconnect(counter.on_connection_created)


async def _measure(counter: DatabaseCounter, user, sizes: list[int], repeats: int) -> dict:
    from channels.db import database_sync_to_async

    # The executor's ORM calls run in asgiref's worker thread: attach to its open connections too.
    await database_sync_to_async(counter.attach_to_this_thread)()
    team = await database_sync_to_async(current_team)(user)  # the consumer reads it once per socket
    await _complete(user, team, 10)  # warm-up: the upstream token and connections, not counted
    rows = []
    for size in sizes:
        runs = []
        for _ in range(repeats):
            counter.reset()
            outcome = await _complete(user, team, size)
            with counter.lock:
                runs.append({**outcome, "statements": len(counter.statements), "commits": counter.commits,
                             "health_checks": counter.health_checks, "sql": list(counter.statements)})
        rows.append({"size": size, "runs": runs})
    return {"rows": rows, "max_tokens": settings.PORTAL_MAX_TOKENS_LIMIT}


async def _complete(user, team, tokens: int) -> dict:
    max_tokens = settings.PORTAL_MAX_TOKENS_LIMIT
    content = f"Database work [[emulator ttft_ms=0 rate=0 tokens={tokens} chunk_tokens=1]]"
    request = CompletionRequest(
        user=user, team=team, messages=[{"role": "user", "content": content}],
        model_id=settings.PORTAL_DEFAULT_MODEL, temperature=0.7, max_tokens=max_tokens,
    )
    deltas, outcome = 0, {}
    async for event in ChatExecutor().stream(request, ConversationTranscript()):
        if isinstance(event, Delta):
            deltas += 1
        elif isinstance(event, Done):
            outcome = {"status": event.outcome.status, "tokens": event.outcome.output_tokens, "finish": event.outcome.finish_reason}
        elif isinstance(event, Failed):
            outcome = {"status": "error", "tokens": 0, "finish": event.code, "detail": event.detail}
    return {**outcome, "deltas": deltas}
