"""Each server process's pool of database connections, sized to what PostgreSQL allows.

A request, or one ORM call of an answer (chat/executor.py), borrows a connection from the pool of
its process and gives it back when it ends (Django closes it: CONN_MAX_AGE is 0, and "closing"
a pooled connection returns it). Persistent connections were wrong under ASGI: every request runs
in a thread of its own, and the connection it left behind lingered until garbage collection, so a
crowd loading pages ran PostgreSQL out of connections ("too many clients already").

A pool holds at most DB_POOL_MAX_SIZE connections; more callers wait for one (DB_POOL_TIMEOUT).
`runportal` measures what the server lets the portal's role open to its database (max_connections
less the reserved slots, the role's and the database's CONNECTION LIMIT, less what others hold
now and some spare) and gives each of its --workers processes an equal share, at most
DB_POOL_MAX_SIZE.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import connection

# Left for everything but the server processes: manage.py commands, psql, a deploy's migrate,
# the benchmark's load client.
SPARE = 10
# Below this a server process would queue requests behind the few answers being stored.
MIN_PER_PROCESS = 4


@dataclass(frozen=True)
class Allowance:
    free: int  # connections the portal may open now (after what others hold, before the spare)
    limit: int  # the tightest of the server's, the role's and the database's limits
    reason: str  # which limit that is, in words

    def per_process(self, processes: int) -> int:
        return min(settings.DB_POOL_MAX_SIZE, (self.free - SPARE) // processes)


def measure() -> Allowance:
    """What PostgreSQL lets this role open to this database now, leaving this process's pool closed."""
    connection.close()
    connection.close_pool()
    with connection.Database.connect(**connection.get_connection_params()) as probe:
        maximum, reserved, server_used, role, role_used, database, database_used = probe.execute(
            """
            SELECT current_setting('max_connections')::int,
                   current_setting('superuser_reserved_connections')::int
                     + coalesce(current_setting('reserved_connections', true)::int, 0),
                   (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                   (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user),
                   (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user),
                   (SELECT datconnlimit FROM pg_database WHERE datname = current_database()),
                   (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())
            """
        ).fetchone()
    # The probe itself is counted in each "used", and is gone when the portal serves.
    server = maximum - reserved
    limits = [(server, server - server_used + 1, f"max_connections {maximum}, {reserved} of them reserved")]
    if role >= 0:
        limits.append((role, role - role_used + 1, f"the role's CONNECTION LIMIT {role}"))
    if database >= 0:
        limits.append((database, database - database_used + 1, f"the database's CONNECTION LIMIT {database}"))
    limit, free, reason = min(limits, key=lambda entry: entry[1])
    return Allowance(free=free, limit=limit, reason=reason)


def resize(per_process: int) -> None:
    """Use pools of this size from now on in this process (runportal passes it on to its workers)."""
    connection.close()
    connection.close_pool()
    settings.DB_POOL_MAX_SIZE = per_process
    settings.DATABASES["default"]["OPTIONS"]["pool"].update(min_size=min(2, per_process), max_size=per_process)
