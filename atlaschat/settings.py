"""AtlasChat settings: one file, every knob an environment variable with a safe default.

The README's configuration table lists each variable. Readers live in `atlaschat.env`
and reject a malformed value with a message naming the variable.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from atlaschat.env import (
    envbool,
    envchoice,
    envfloat,
    envint,
    envlist,
    envrate,
    envregexlist,
    envstr,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(envstr("ATLASCHAT_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = envbool("DEBUG", False)

SECRET_KEY = envstr("SECRET_KEY", "")
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "insecure-debug-only-key-never-use-in-production"  # noqa: S105
    elif "PYTEST_VERSION" in os.environ:
        # pytest sets PYTEST_VERSION before it loads any plugin or conftest, so a bare
        # `pytest` works without the caller exporting a key. The key is random per process:
        # nothing signed with it outlives the test run.
        SECRET_KEY = secrets.token_urlsafe(50)
    else:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (`make run` generates one in .secret_key)"
        )

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_htmx",
    "axes",
    "accounts",
    "execution",
]

MIDDLEWARE = [
    # First: a request id for every request, and its JSON log line (execution/monitoring/logs.py).
    "execution.monitoring.logs.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Content-Security-Policy on every response (the policy and why: atlaschat/csp.py).
    "atlaschat.csp.ContentSecurityPolicyMiddleware",
    # Turns a login locked out by django-axes into its 429 (accounts/lockout.py).
    "axes.middleware.AxesMiddleware",
    # Last: the stack above runs in one thread under daphne (why: atlaschat/middleware.py).
    "atlaschat.middleware.SynchronousStack",
]

ROOT_URLCONF = "atlaschat.urls"
WSGI_APPLICATION = "atlaschat.wsgi.application"
ASGI_APPLICATION = "atlaschat.asgi.application"

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

# --- Database: SQLite embedded; DATABASE_URL (PostgreSQL) in production ---
DATABASE_URL = envstr("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            # Django's, with a health check for a kept connection (see its docstring).
            "ENGINE": "atlaschat.sqlite3_backend",
            "NAME": str(VAR_DIR / "db.sqlite3"),
            # Streaming output writes while pages read: wait for the lock, don't fail.
            # WAL lets readers and the writer proceed together, and with synchronous=NORMAL
            # a commit no longer waits for an fsync: a run stores each batch of output as
            # it comes, so this is the difference between ~100 ms and ~15 ms per run. (A
            # power cut may lose the last commits, never corrupt the file; WAL needs a
            # local filesystem, which an embedded SQLite has.)
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
            },
            # Tests get a file per test process rather than Django's shared-cache in-memory
            # database, whose table locks fail at once instead of waiting: runs stream from
            # worker threads while the test reads, as in production.
            "TEST": {
                "NAME": str(Path(tempfile.gettempdir()) / f"atlaschat-test-{os.getpid()}.sqlite3")
            },
        }
    }
# Request threads are pooled (atlaschat/request_threads.py), so a connection serves request
# after request for up to CONN_MAX_AGE seconds; checked before reuse, so one the database
# dropped is replaced rather than failing a request.
DATABASES["default"]["CONN_MAX_AGE"] = 60
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Idle request threads kept per worker process, each with its database connection.
REQUEST_THREADS = envint("REQUEST_THREADS", 16, min_value=1)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer: in-memory embedded; REDIS_URL in production ---
REDIS_URL = envstr("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # A consumer's receive blocks on Redis for up to 5 s; redis-py's own read
                # timeout must be longer, or an idle socket errors out under load.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "capacity": 1000,
                "expiry": 60,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Accounts ---
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Password guessing (accounts/lockout.py): django-axes checks every authenticate() first.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# LOGIN_FAILURE_LIMIT failed logins for one username, or from one client IP, lock that
# username or IP out for LOGIN_LOCKOUT_MINUTES; a success resets the username's count.
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 10, min_value=1)
AXES_COOLOFF_TIME = timedelta(minutes=envint("LOGIN_LOCKOUT_MINUTES", 15, min_value=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "execution.caller.client_ip"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON nested without bound would exhaust the parser's recursion (a 500): see parsers.py.
    "DEFAULT_PARSER_CLASSES": [
        "execution.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    # JSON as ASCII with \u escapes: output may hold lone surrogates, which a UTF-8 body
    # cannot carry but a JSON escape can (clients decode them back exactly).
    "UNICODE_JSON": False,
    # One error shape for every API answer: {"error": {"code", "message", "details"}}.
    "EXCEPTION_HANDLER": "execution.api.exceptions.api_exception_handler",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=envint("JWT_ACCESS_MINUTES", 15, min_value=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=envint("JWT_REFRESH_DAYS", 7, min_value=1)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "AtlasChat code execution API",
    "DESCRIPTION": "Run Python, JavaScript, TypeScript and Bash in sandboxes, with files, "
    "packages, live output and an audit trail.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from the drf-spectacular-sidecar package's static files: the API
    # docs work offline and no page of ours loads a script from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Internationalization ---
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media files ---
STATIC_URL = "static/"
STATIC_ROOT = Path(envstr("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# Front-end packages come from npm (scripts/setup-frontend.sh, package.json) into
# node_modules/; only the built directory of each is published, as static/vendor/<package>/,
# so collectstatic never copies a package's sources, tests or its own node_modules.
FRONTEND_VENDOR_DIRS = {
    "htmx.org": "dist",
    "monaco-editor": "min",
    # The workspace's output and terminal (static/js/output.js, static/js/terminal.js) and
    # the staff dashboard's charts (static/js/dashboard.js).
    "@xterm/xterm": "",
    "@xterm/addon-fit": "lib",
    "ansi_up": "",
    "katex": "dist",
    "marked": "lib",
    "dompurify": "dist",
    "chart.js": "dist",
}
STATICFILES_DIRS = [
    BASE_DIR / "static",
    *(
        (f"vendor/{package}", BASE_DIR / "node_modules" / package / subdir)
        for package, subdir in FRONTEND_VENDOR_DIRS.items()
    ),
]
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(Path(envstr("MEDIA_ROOT", str(VAR_DIR / "media"))))},
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Security headers (behind TLS termination set SECURE_* via a proxy) ---
SESSION_COOKIE_HTTPONLY = True
# Cookies only over HTTPS: turn on when the site is served through TLS.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = envbool("SECURE_COOKIES", False)
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Sandboxes: which server the e2b SDK talks to ---
# No E2B_API_KEY: the bundled sandboxd on loopback. E2B_API_KEY set: E2B's cloud, or a
# self-hosted E2B at E2B_DOMAIN.
E2B_API_KEY = envstr("E2B_API_KEY", "")
E2B_DOMAIN = envstr("E2B_DOMAIN", "")
# How the execution services reach sandboxes (execution/sandbox/): the e2b SDK in production;
# "execution.sandbox.memory.MemoryBackend" only in the fast test tier.
SANDBOX_BACKEND = envstr("SANDBOX_BACKEND", "execution.sandbox.e2b.E2BBackend")
# Background work (execution/services/runtime.py, workers.py): each server process renews its
# worker lease this often; a worker silent for the lease (or whose process on this host is
# gone) is dead, and the others mark its queued/running executions and installs.
EXECUTION_WORKER_HEARTBEAT_SECONDS = envint("EXECUTION_WORKER_HEARTBEAT_SECONDS", 10, min_value=1)
EXECUTION_WORKER_LEASE_SECONDS = envint("EXECUTION_WORKER_LEASE_SECONDS", 45, min_value=3)
SANDBOXD_URL = envstr("SANDBOXD_URL", "http://127.0.0.1:49982")
SANDBOXD_API_KEY = envstr("SANDBOXD_API_KEY", "")
SANDBOX_TEMPLATE = envstr("SANDBOX_TEMPLATE", "code-interpreter-v1")
SANDBOX_TIMEOUT_SECONDS = envint("SANDBOX_TIMEOUT_SECONDS", 600, min_value=30)
SANDBOX_IDLE_SECONDS = envint("SANDBOX_IDLE_SECONDS", 1800, min_value=60)

# --- Execution policy and quotas (used by execution/services) ---
EXECUTION_DEFAULT_TIMEOUT = envfloat("EXECUTION_DEFAULT_TIMEOUT", 60.0, min_value=1.0)
EXECUTION_MAX_TIMEOUT = envfloat("EXECUTION_MAX_TIMEOUT", 300.0, min_value=1.0)
EXECUTION_MAX_CODE_BYTES = envint("EXECUTION_MAX_CODE_BYTES", 256 * 1024, min_value=1)
EXECUTION_MAX_OUTPUT_BYTES = envint("EXECUTION_MAX_OUTPUT_BYTES", 1024 * 1024, min_value=1024)
# Rich results (images, HTML, …) of one run, together: a result that does not fit is stored
# as a placeholder naming its MIME types and size, and the run is flagged truncated.
EXECUTION_MAX_RESULT_BYTES = envint("EXECUTION_MAX_RESULT_BYTES", 32 * 1024 * 1024, min_value=1024)
EXECUTION_MAX_FILE_BYTES = envint("EXECUTION_MAX_FILE_BYTES", 10 * 1024 * 1024, min_value=1)
# The largest request body read into memory: a file of EXECUTION_MAX_FILE_BYTES sent as
# base64 in JSON (4/3 of it) plus room for the JSON around it. Django's own 2.5 MiB default
# would refuse a write-file of 2 MiB with a 413 long before the file-size limit applies.
EXECUTION_MAX_BODY_BYTES = EXECUTION_MAX_FILE_BYTES * 4 // 3 + 64 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = EXECUTION_MAX_BODY_BYTES
EXECUTION_SYNC_MAX_FILES = envint("EXECUTION_SYNC_MAX_FILES", 200, min_value=0)
# Fair use (execution/services/quotas.py): runs in flight per user and in all, live
# sandboxes per user, open websockets per user and server process. The global default
# matches sandboxd's capacity (SANDBOXD max_sandboxes, 16): every run needs a sandbox.
EXECUTION_USER_CONCURRENCY = envint("EXECUTION_USER_CONCURRENCY", 4, min_value=1)
EXECUTION_GLOBAL_CONCURRENCY = envint("EXECUTION_GLOBAL_CONCURRENCY", 16, min_value=1)
SANDBOX_USER_LIMIT = envint("SANDBOX_USER_LIMIT", 4, min_value=1)
SANDBOX_GLOBAL_LIMIT = envint("SANDBOX_GLOBAL_LIMIT", 16, min_value=1)
WEBSOCKET_USER_LIMIT = envint("WEBSOCKET_USER_LIMIT", 20, min_value=1)
# Threads that carry the websockets' database work, shared by every socket of a process:
# the most database connections sockets hold at once, however many are open.
WEBSOCKET_DB_THREADS = envint("WEBSOCKET_DB_THREADS", 4, min_value=1)
EXECUTION_DANGEROUS_PATTERNS = envregexlist("EXECUTION_DANGEROUS_PATTERNS", [])
# Windows executables and scripts have no use in a Linux workspace; their arrival is audited.
EXECUTION_SUSPICIOUS_EXTENSIONS = envlist(
    "EXECUTION_SUSPICIOUS_EXTENSIONS",
    [".exe", ".dll", ".bat", ".cmd", ".com", ".scr", ".msi", ".ps1", ".vbs"],
)
PACKAGE_DENY_LIST = envlist("PACKAGE_DENY_LIST", [])
# Files synced back after a run: at most EXECUTION_SYNC_MAX_FILES files of at most
# EXECUTION_MAX_FILE_BYTES each and EXECUTION_SYNC_MAX_BYTES together; the rest is reported.
EXECUTION_SYNC_MAX_BYTES = envint("EXECUTION_SYNC_MAX_BYTES", 50 * 1024 * 1024, min_value=0)
# DRF throttle rates ("N/second|minute|hour|day") per user, for runs and for installs.
EXECUTION_THROTTLE_RATE = envrate("EXECUTION_THROTTLE_RATE", "120/minute")
INSTALL_THROTTLE_RATE = envrate("INSTALL_THROTTLE_RATE", "20/minute")
# Seconds a client is told to wait (Retry-After) when a concurrency cap is reached.
EXECUTION_CONCURRENCY_RETRY_AFTER = envint("EXECUTION_CONCURRENCY_RETRY_AFTER", 2, min_value=1)
# Repeats of one refusal (same kind, code, user, source, IP) within this many seconds count up
# on one SecurityEvent row instead of adding rows: the audit trail cannot be flooded.
SECURITY_EVENT_WINDOW_SECONDS = envint("SECURITY_EVENT_WINDOW_SECONDS", 60, min_value=1)
# Time allowed for one pip/npm install inside the sandbox.
PACKAGE_INSTALL_TIMEOUT = envint("PACKAGE_INSTALL_TIMEOUT", 300, min_value=10)

# LOG_FORMAT=json: one JSON object per line, one line per request and per run with their ids
# (execution/monitoring/logs.py); text (default): plain lines.
LOG_FORMAT = envchoice("LOG_FORMAT", "text", ("text", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "execution.monitoring.logs.JsonFormatter"},
        "text": {"format": "%(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {
        "handlers": ["console"],
        "level": envchoice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    },
    # httpx logs every request it makes at INFO: three or four lines per run (the SDK's calls
    # to the sandbox), which cost CPU on the run path and bury the service's own log lines.
    "loggers": {"httpx": {"level": "WARNING"}},
}

# --- Monitoring (execution/monitoring) ---
# A bearer token that lets a Prometheus server scrape /metrics (staff sessions may too);
# empty: only staff sessions. Never public.
METRICS_TOKEN = envstr("METRICS_TOKEN", "")
# Daily budgets per user (UTC days; 0: no limit), overridable per user in the admin
# (execution/monitoring/budgets.py). Over budget, runs get 429 saying when it resets.
USER_DAILY_RUNS = envint("USER_DAILY_RUNS", 0, min_value=0)
USER_DAILY_CPU_SECONDS = envint("USER_DAILY_CPU_SECONDS", 0, min_value=0)
# Under pytest, metrics use prometheus_client's multiprocess mode as `make run` does, in a
# directory of this test process's own (it must be set before prometheus_client is imported).
if "PYTEST_VERSION" in os.environ and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="atlaschat-metrics-")
