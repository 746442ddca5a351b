"""
Settings for videogen.

The service's configuration is read from the environment once, here; only
what must be known before Django starts is read elsewhere: the web server's
processes and log format (videogen/gunicorn.py) and a worker's GPU
(generation/devices.py, before torch loads). With nothing set, the
service runs embedded: SQLite and django-q2's ORM broker under ./var, the
`tiny-random` model, so a fresh clone works with no server. docs/configuration.md
lists every variable.
"""

import os
import socket
import warnings
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envstr(name: str, default: str) -> str:
    # Empty counts as unset, as it does for the other helpers.
    return os.environ.get(name) or default


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def envfloat(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}")


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def envlist(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def envmap(name: str) -> dict[str, str]:
    """"a=x,b=y" as {"a": "x", "b": "y"}."""
    mapping = {}
    for item in envlist(name, []):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ImproperlyConfigured(f"{name} must look like 'name=value,name=value', got {item!r}")
        mapping[key.strip()] = value.strip()
    return mapping


DATA_DIR = Path(envstr("VIDEOGEN_DATA_DIR", str(BASE_DIR / "var")))

DEBUG = envbool("VIDEOGEN_DEBUG", False)
# The default is fine for a laptop; the admin's sessions are signed with it,
# so set a real one anywhere other people can reach the server (docker/ does).
SECRET_KEY = envstr("VIDEOGEN_SECRET_KEY", "videogen-insecure-development-key")
ALLOWED_HOSTS = envlist("VIDEOGEN_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = envlist("VIDEOGEN_CSRF_TRUSTED_ORIGINS", [])
# Behind a proxy that ends TLS, the links the API builds from the request
# (Location, result, video_url) say https only if the proxy's word is taken;
# set it only where the proxy always sets X-Forwarded-Proto itself.
if envbool("VIDEOGEN_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Before django_q: its `qcluster` command replaces django-q2's with one
    # that stops gracefully (generation/management/commands/qcluster.py).
    "generation",
    "django_q",
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files under gunicorn (docker/); `make run`
    # uses runserver --insecure for the same.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "jobs.api.middleware.JsonApiErrorsMiddleware",
]

ROOT_URLCONF = "videogen.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

WSGI_APPLICATION = "videogen.wsgi.application"
ASGI_APPLICATION = "videogen.asgi.application"

# --- Database -----------------------------------------------------------------
# SQLite by default. The API and the worker are separate processes writing the
# same file, so WAL lets readers go on while a write happens, busy_timeout makes
# a writer wait for the lock instead of failing, and IMMEDIATE transactions take
# the write lock up front (a deferred transaction that upgrades later can fail
# with "database is locked" without waiting).
_sqlite_path = DATA_DIR / "db.sqlite3"
DATABASE_URL = envstr("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=envint("VIDEOGEN_DB_CONN_MAX_AGE", 60, minimum=0),
            conn_health_checks=True,
        )
    }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend, minus a health check per request on a busy
        # connection, plus prepared statements for the hot paths' few
        # statements (videogen/postgresql/base.py). Off for a pooler that
        # cannot keep a prepared statement on the connection that prepared it.
        DATABASES["default"]["ENGINE"] = "videogen.postgresql"
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
            5 if envbool("VIDEOGEN_DB_PREPARED_STATEMENTS", True) else None
        )
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _sqlite_path}}

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
    # Tests start real qcluster processes, which cannot see an in-memory
    # database: the test database is a file next to the real one.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Static and media ---------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# collectstatic fills it for gunicorn; it must exist even before that, or
# WhiteNoise warns on every start.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = Path(envstr("VIDEOGEN_MEDIA_ROOT", str(DATA_DIR / "media")))
# Media is never served from MEDIA_URL: videos go out through the download
# view, which checks ownership and honours HTTP Range.
MEDIA_URL = "media/"

# Videos, posters and previews go to Django's default storage: files under
# MEDIA_ROOT, or an S3-compatible bucket (AWS, MinIO, Ceph, R2) when
# AWS_STORAGE_BUCKET_NAME is set, which several hosts can share. Credentials
# come from boto3's usual chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
# (/ AWS_SESSION_TOKEN), AWS_PROFILE, or an instance role.
AWS_STORAGE_BUCKET_NAME = envstr("AWS_STORAGE_BUCKET_NAME", "")
# On S3 the file views redirect (302) to a presigned URL valid this many
# seconds, so the bytes never pass through the API; false streams them
# through the API instead (Range and all), for clients that cannot reach the
# bucket. SigV4 presigned URLs live at most 7 days.
VIDEOGEN_S3_REDIRECT = envbool("VIDEOGEN_S3_REDIRECT", bool(AWS_STORAGE_BUCKET_NAME))
VIDEOGEN_S3_URL_EXPIRY = envint("VIDEOGEN_S3_URL_EXPIRY", 600, minimum=1)
if VIDEOGEN_S3_URL_EXPIRY > 7 * 24 * 3600:
    raise ImproperlyConfigured(f"VIDEOGEN_S3_URL_EXPIRY is at most 604800 (7 days), got {VIDEOGEN_S3_URL_EXPIRY}")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if AWS_STORAGE_BUCKET_NAME:
    _s3_options = {
        "bucket_name": AWS_STORAGE_BUCKET_NAME,
        # Unset: AWS itself. MinIO, Ceph, R2: their URL, e.g. http://minio:9000.
        "endpoint_url": envstr("AWS_S3_ENDPOINT_URL", "") or None,
        "region_name": envstr("AWS_S3_REGION_NAME", "") or None,
        # A key prefix, so one bucket can hold several deployments.
        "location": envstr("AWS_LOCATION", "").strip("/"),
        # botocore picks path-style for a custom endpoint; "virtual" or "path" to force.
        "addressing_style": envstr("AWS_S3_ADDRESSING_STYLE", "") or None,
        "signature_version": envstr("AWS_S3_SIGNATURE_VERSION", "s3v4"),
        # django-storages overwrites an existing key by default. A job run
        # twice (a worker thought dead finishing late) would then overwrite,
        # and on losing the race delete, the other run's video: pick a free
        # name instead, as FileSystemStorage does.
        "file_overwrite": False,
        # Objects stay private (the bucket's own policy); the API hands out
        # presigned URLs only after checking ownership.
        "default_acl": None,
        "querystring_auth": True,
        "querystring_expire": VIDEOGEN_S3_URL_EXPIRY,
    }
    STORAGES["default"] = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": _s3_options}
    # Presigned URLs are signed for the host a browser will use: the same
    # endpoint, unless the API and workers reach the bucket at an internal
    # address (http://minio:9000 in compose) that clients cannot.
    _public_endpoint = envstr("VIDEOGEN_S3_PUBLIC_ENDPOINT_URL", "") or _s3_options["endpoint_url"]
    STORAGES["presign"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {**_s3_options, "endpoint_url": _public_endpoint},
    }

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- API ----------------------------------------------------------------------
# Bodies larger than this are refused with a JSON 413 before they are parsed
# (jobs.api.middleware.body_limit); a submit's may also carry its images.
VIDEOGEN_MAX_BODY_BYTES = envint("VIDEOGEN_MAX_BODY_BYTES", 64 * 1024, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["jobs.api.parsers.SafeJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "jobs.api.http.JsonFirstNegotiation",
    # The seed contract: no authentication, user_id is trusted from the request.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "jobs.api.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "videogen",
    "DESCRIPTION": "Text to video: submit a prompt, poll the job, download the MP4.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "PREPROCESSING_HOOKS": ["jobs.api.schema.hide_trailing_slash_aliases", "jobs.api.schema.hide_paths_outside_the_api"],
    # Swagger UI's files from the drf-spectacular-sidecar package, served by
    # this server: no CDN, so /docs works offline and runs no third-party script.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"JobStatusEnum": "jobs.models.Status"},
}

# --- Image inputs ------------------------------------------------------------
# An input image (image, last_image) over this many bytes is a 413.
VIDEOGEN_MAX_IMAGE_BYTES = envint("VIDEOGEN_MAX_IMAGE_BYTES", 10 * 1024 * 1024, minimum=1024)
# Pixels an input image may have, checked from its header before it is
# decoded (a small file can claim to be gigapixels: a decompression bomb).
VIDEOGEN_MAX_IMAGE_PIXELS = envint("VIDEOGEN_MAX_IMAGE_PIXELS", 40_000_000, minimum=1)
# Seconds a submit may spend fetching one image URL, redirects included.
VIDEOGEN_IMAGE_FETCH_TIMEOUT = envfloat("VIDEOGEN_IMAGE_FETCH_TIMEOUT", 10.0)
# Hosts image URLs may point at although they resolve to private addresses
# (or over http://): an internal asset server, a test server.
VIDEOGEN_IMAGE_ALLOWED_HOSTS = [host.lower() for host in envlist("VIDEOGEN_IMAGE_ALLOWED_HOSTS", [])]
# Django's own cap on a body it reads, behind jobs.api.middleware.body_limit's
# per path: the largest, a submit with two images as base64.
DATA_UPLOAD_MAX_MEMORY_SIZE = VIDEOGEN_MAX_BODY_BYTES + 2 * (VIDEOGEN_MAX_IMAGE_BYTES * 4 // 3 + 4)

# --- Auth and rate limits -----------------------------------------------------
# "none": the inherited contract, user_id trusted from the request. "api_key":
# every /api/v1/ endpoint but /health wants `Authorization: Bearer <key>`, and
# a key acts as its own user_id (jobs/api/auth.py).
VIDEOGEN_AUTH = envstr("VIDEOGEN_AUTH", "none")
if VIDEOGEN_AUTH not in ("none", "api_key"):
    raise ImproperlyConfigured(f"VIDEOGEN_AUTH must be none or api_key, got {VIDEOGEN_AUTH!r}")
if VIDEOGEN_AUTH == "api_key":
    REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = ["jobs.api.auth.ApiKeyAuthentication"]
    REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"] = ["rest_framework.permissions.IsAuthenticated"]
    # drf-spectacular serves /schema and /docs to anyone unless told otherwise.
    SPECTACULAR_SETTINGS["SERVE_AUTHENTICATION"] = REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]
    SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"] = REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"]


def envrate(name: str) -> str | None:
    """A DRF throttle rate, "60/min": a count, a slash, s/sec/m/min/h/hour/d/day."""
    raw = envstr(name, "").strip()
    if not raw:
        return None
    count, sep, period = raw.partition("/")
    if not sep or not count.isascii() or not count.isdigit() or int(count) < 1 or period not in (
        "s", "sec", "second", "m", "min", "minute", "h", "hour", "d", "day",
    ):
        raise ImproperlyConfigured(f"{name} must look like 60/min (per s, min, hour or day), got {raw!r}")
    return raw


# Seconds a process trusts a key it has checked before checking the database
# again: a key revoked in the admin is refused everywhere within this time.
# 0: the database on every request (one more query each).
VIDEOGEN_API_KEY_CACHE_SECONDS = envint("VIDEOGEN_API_KEY_CACHE_SECONDS", 2, minimum=0)

# Requests per key (per user_id in none mode): POST /generate, and every other
# endpoint but /health. Unset: no limit.
VIDEOGEN_RATE_LIMIT_SUBMIT = envrate("VIDEOGEN_RATE_LIMIT_SUBMIT")
VIDEOGEN_RATE_LIMIT_READ = envrate("VIDEOGEN_RATE_LIMIT_READ")
if VIDEOGEN_RATE_LIMIT_SUBMIT or VIDEOGEN_RATE_LIMIT_READ:
    REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = ["jobs.api.auth.SubmitThrottle", "jobs.api.auth.ReadThrottle"]

VIDEOGEN_PAGE_SIZE = envint("VIDEOGEN_PAGE_SIZE", 20, minimum=1)
VIDEOGEN_MAX_PAGE_SIZE = envint("VIDEOGEN_MAX_PAGE_SIZE", 100, minimum=1)
VIDEOGEN_MAX_PROMPT_LENGTH = envint("VIDEOGEN_MAX_PROMPT_LENGTH", 2000, minimum=1)
# Pending + running jobs one user may have at once; more is a 429.
VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER = envint("VIDEOGEN_MAX_ACTIVE_JOBS_PER_USER", 20, minimum=1)
# How long an Idempotency-Key names the job it created.
VIDEOGEN_IDEMPOTENCY_TTL_HOURS = envint("VIDEOGEN_IDEMPOTENCY_TTL_HOURS", 24, minimum=1)

# --- Webhooks and retention ---------------------------------------------------
# The key deliveries are signed with (Standard Webhooks: "whsec_" and base64).
# Unset, this server sends no webhooks and refuses a webhook_url at submit.
VIDEOGEN_WEBHOOK_SECRET = envstr("VIDEOGEN_WEBHOOK_SECRET", "")
if VIDEOGEN_WEBHOOK_SECRET:
    import base64
    import binascii

    try:
        if not VIDEOGEN_WEBHOOK_SECRET.startswith("whsec_") or not base64.b64decode(
            VIDEOGEN_WEBHOOK_SECRET[len("whsec_"):], validate=True
        ):
            raise ValueError
    except (ValueError, binascii.Error):
        raise ImproperlyConfigured("VIDEOGEN_WEBHOOK_SECRET must be 'whsec_' followed by base64, e.g. whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
# Hosts a webhook_url may name although they resolve to loopback, private,
# link-local or reserved addresses (an internal receiver), and the only hosts
# a plain http:// URL may name.
VIDEOGEN_WEBHOOK_ALLOWED_HOSTS = [host.lower() for host in envlist("VIDEOGEN_WEBHOOK_ALLOWED_HOSTS", [])]
# A PEM file of CA certificates https deliveries trust besides the system's
# (a receiver whose certificate an internal CA issued).
VIDEOGEN_WEBHOOK_CA_BUNDLE = envstr("VIDEOGEN_WEBHOOK_CA_BUNDLE", "")
if VIDEOGEN_WEBHOOK_CA_BUNDLE and not os.path.isfile(VIDEOGEN_WEBHOOK_CA_BUNDLE):
    raise ImproperlyConfigured(f"VIDEOGEN_WEBHOOK_CA_BUNDLE: no such file {VIDEOGEN_WEBHOOK_CA_BUNDLE!r}")
# Seconds one delivery attempt may take, connecting included.
VIDEOGEN_WEBHOOK_TIMEOUT = envfloat("VIDEOGEN_WEBHOOK_TIMEOUT", 10.0)
# Retries: the n-th waits a random time up to base * 2**(n-1) seconds (at most
# an hour, at least half of that), until this many hours after the event.
VIDEOGEN_WEBHOOK_RETRY_BASE = envfloat("VIDEOGEN_WEBHOOK_RETRY_BASE", 5.0)
VIDEOGEN_WEBHOOK_RETRY_HOURS = envfloat("VIDEOGEN_WEBHOOK_RETRY_HOURS", 24.0)
# The base URL of links in webhook payloads (video_url ...), e.g.
# https://videos.example.com; unset, the links are paths.
VIDEOGEN_PUBLIC_URL = envstr("VIDEOGEN_PUBLIC_URL", "").rstrip("/")
# Days a finished job's video, poster and preview are kept; unset: forever.
VIDEOGEN_RETENTION_DAYS = envint("VIDEOGEN_RETENTION_DAYS", 0, minimum=1) or None
# Rows created before jobs had owners get this user_id in the backfill migration.
VIDEOGEN_LEGACY_USER_ID = envstr("VIDEOGEN_LEGACY_USER_ID", "anonymous")

# --- Generation ---------------------------------------------------------------
# The model settings below are the deployment's policy; jobs/scheduling/deployment.py
# turns them and the catalogue (generation/registry.py) into served models,
# queues and time limits.
VIDEOGEN_DEFAULT_MODEL = envstr("VIDEOGEN_DEFAULT_MODEL", "tiny-random")
# The models this deployment serves; the catalogue knows more. A real model
# needs its weights on disk or in the HF cache.
# Unset with a tiny default model (a laptop, a fresh clone), the tiny image
# models come too, so every generation mode works without configuration.
TINY_IMAGE_MODELS = ["tiny-random-i2v", "tiny-random-wan-flf2v"]
VIDEOGEN_MODELS = envlist(
    "VIDEOGEN_MODELS",
    list(dict.fromkeys([VIDEOGEN_DEFAULT_MODEL, *(TINY_IMAGE_MODELS if VIDEOGEN_DEFAULT_MODEL.startswith("tiny-") else [])])),
)
# A JSON file that changes built-in model specs or adds new ones (see
# generation.registry.catalogue).
VIDEOGEN_MODELS_FILE = envstr("VIDEOGEN_MODELS_FILE", "")
# Where one model's weights are: VIDEOGEN_MODEL_SOURCE_<NAME>=directory or HF
# repo id, <NAME> the model's name upper-cased with "-" and "." as "_"
# (VIDEOGEN_MODEL_SOURCE_COGVIDEOX_2B). Kept here by that <NAME>.
_SOURCE_PREFIX = "VIDEOGEN_MODEL_SOURCE_"
VIDEOGEN_MODEL_SOURCES = {
    name.removeprefix(_SOURCE_PREFIX): value
    for name, value in os.environ.items()
    if name.startswith(_SOURCE_PREFIX) and value
}
# "model=queue,...": jobs for these models go to their own django-q2 queue, so
# a fleet can pin workers to models (start them with Q_CLUSTER_NAME=queue).
VIDEOGEN_MODEL_QUEUES = envmap("VIDEOGEN_MODEL_QUEUES")
# "auto": the spec's dtype on CUDA (bf16 falls back to fp16 where the GPU
# lacks it), float32 on the CPU. Or force float32, float16, bfloat16.
VIDEOGEN_DTYPE = envstr("VIDEOGEN_DTYPE", "auto")
# Pipelines one worker process keeps loaded; more than one only makes sense
# when they fit in GPU memory together.
VIDEOGEN_MAX_LOADED_MODELS = envint("VIDEOGEN_MAX_LOADED_MODELS", 1, minimum=1)
# GiB of GPU memory a job may use. Set on the API, a request that no such GPU
# could hold is refused at submit (400); on a worker it replaces the device's
# own size when jobs are planned (VAE tiling, CPU offload, or refusal).
VIDEOGEN_GPU_MEMORY_GB = envfloat("VIDEOGEN_GPU_MEMORY_GB", None)
# Seconds between progress writes to the job row while a job denoises.
VIDEOGEN_PROGRESS_INTERVAL = envfloat("VIDEOGEN_PROGRESS_INTERVAL", 0.5)

# --- Events (docs/events.md) --------------------------------------------------
# The longest `Prefer: wait=N` honoured on GET /job and POST /generate, in seconds.
VIDEOGEN_MAX_WAIT = envint("VIDEOGEN_MAX_WAIT", 60, minimum=0)
# Open event streams and waiting answers one web process holds at most; past it, a 503.
VIDEOGEN_MAX_STREAMS = envint("VIDEOGEN_MAX_STREAMS", 10_000, minimum=1)
# A running job's live preview (live_preview_url) is redrawn every this many
# denoising steps; 0 turns live previews off.
VIDEOGEN_PREVIEW_EVERY = envint("VIDEOGEN_PREVIEW_EVERY", 5, minimum=0)


def envseconds_or_off(name: str, default: float) -> float | None:
    raw = os.environ.get(name, "")
    if raw.lower() == "off":
        return None
    value = envfloat(name, default)
    if value < 0:
        raise ImproperlyConfigured(f"{name} must be a number of seconds (0 or more) or off, got {raw!r}")
    return value


# A running job saves its denoising state at most this often, so a worker
# lost or stopped mid-job costs at most this much work (docs/checkpoints.md);
# off: never.
VIDEOGEN_CHECKPOINT_SECONDS = envseconds_or_off("VIDEOGEN_CHECKPOINT_SECONDS", 60.0)
# A high-priority job that has waited this long while every worker of its
# model runs lower-priority work preempts one of them: it checkpoints and
# goes back to pending (jobs/scheduling/queue.py); off: never.
VIDEOGEN_PREEMPT_AFTER = envseconds_or_off("VIDEOGEN_PREEMPT_AFTER", 30.0)

# --- Worker (django-q2) -------------------------------------------------------
# The devices this qcluster serves, one worker process each: by default every
# GPU the host shows (CUDA_VISIBLE_DEVICES when set), else the CPU. Found
# without initialising CUDA, which the qcluster parent must never do.
# VIDEOGEN_DEVICE (one device) is the older spelling, still honoured.
def _devices() -> list[str]:
    from generation.devices import default_devices

    legacy = os.environ.get("VIDEOGEN_DEVICE", "")
    if legacy and legacy != "auto":
        return [legacy]
    return default_devices()


VIDEOGEN_DEVICES = envlist("VIDEOGEN_DEVICES", []) or _devices()
VIDEOGEN_WORKERS = envint("VIDEOGEN_WORKERS", len(VIDEOGEN_DEVICES), minimum=1)


def _slot_devices() -> list[str]:
    from generation.devices import DeviceError, binding_for, slot_devices, visible_gpus

    try:
        devices = slot_devices(VIDEOGEN_DEVICES, VIDEOGEN_WORKERS)
        for device in devices:
            binding_for(device, visible_gpus())
    except DeviceError as exc:
        raise ImproperlyConfigured(f"VIDEOGEN_DEVICES / VIDEOGEN_WORKERS: {exc}")
    return devices


# Worker slot i owns VIDEOGEN_SLOT_DEVICES[i] (generation/worker.py).
VIDEOGEN_SLOT_DEVICES = _slot_devices()
# A worker is named host:pid (plus its slot and device) on the job it runs.
# Its process is looked up only on its own host; elsewhere only its heartbeat
# says it is alive. Give each host a distinct name.
VIDEOGEN_WORKER_HOST = envstr("VIDEOGEN_WORKER_HOST", socket.gethostname())
if any(char.isspace() or char == ":" for char in VIDEOGEN_WORKER_HOST):
    raise ImproperlyConfigured(f"VIDEOGEN_WORKER_HOST must have no spaces or colons, got {VIDEOGEN_WORKER_HOST!r}")
# torch threads per worker process: the cores divided among the workers, so
# two workers on a 2-core box don't each start two threads and thrash.
VIDEOGEN_TORCH_THREADS = envint(
    "VIDEOGEN_TORCH_THREADS", max(1, (os.cpu_count() or 1) // VIDEOGEN_WORKERS), minimum=1
)
VIDEOGEN_JOB_TIMEOUT = envint("VIDEOGEN_JOB_TIMEOUT", 3600, minimum=10)
REDIS_URL = envstr("REDIS_URL", "")
VIDEOGEN_QUEUE_RETRY = envint("VIDEOGEN_QUEUE_RETRY", 300, minimum=5)
# A running job's worker refreshes its heartbeat this often; a job whose
# heartbeat is older than the timeout (or whose worker process on this host is
# gone) is lost, and the reaper queues it again, up to VIDEOGEN_MAX_ATTEMPTS
# runs in all, then fails it as worker_lost.
VIDEOGEN_HEARTBEAT_INTERVAL = envfloat("VIDEOGEN_HEARTBEAT_INTERVAL", 10.0)
VIDEOGEN_HEARTBEAT_TIMEOUT = envfloat("VIDEOGEN_HEARTBEAT_TIMEOUT", 60.0)
VIDEOGEN_MAX_ATTEMPTS = envint("VIDEOGEN_MAX_ATTEMPTS", 2, minimum=1)
# On SIGTERM a worker hands its job back at the next denoising step; past this
# many seconds the job's process is killed and the job handed back anyway.
VIDEOGEN_SHUTDOWN_TIMEOUT = envfloat("VIDEOGEN_SHUTDOWN_TIMEOUT", 30.0)
# Seconds between reaps by the qcluster parent, which runs no jobs, so
# recovery never waits for a worker to be free.
VIDEOGEN_REAPER_INTERVAL = envfloat("VIDEOGEN_REAPER_INTERVAL", 30.0)
# Fair share (jobs/scheduling/queue.py): a free worker serves the user who used the
# least worker time over this many seconds, divided by their weight.
VIDEOGEN_FAIR_WINDOW = envint("VIDEOGEN_FAIR_WINDOW", 3600, minimum=1)
# Tests only: a worker pauses after storing a job's files, before the job's
# final write, for as long as this file exists (a kill can then land there).
VIDEOGEN_TEST_PAUSE_AFTER_STORING = envstr("VIDEOGEN_TEST_PAUSE_AFTER_STORING", "")

Q_CLUSTER = {
    "name": envstr("VIDEOGEN_QUEUE_NAME", "videogen"),
    "workers": VIDEOGEN_WORKERS,
    # One job at a time per worker; a worker process keeps its pipeline loaded,
    # so recycling it would reload the model: only do it rarely.
    "recycle": 1000,
    # django-q2 raises TimeoutException (a SystemExit) in the task after
    # `timeout` seconds; the task marks the job failed before re-raising.
    "timeout": VIDEOGEN_JOB_TIMEOUT,
    # A dequeued task stays locked for `retry` seconds, then the ORM broker
    # delivers it again, whether or not its first delivery still runs.
    # django-q2's advice is retry > timeout, to avoid running a task twice.
    # Our claim (UPDATE ... WHERE status='pending') already makes a second
    # delivery a logged no-op, so we choose the opposite: a short retry, so
    # that tasks prefetched by a cluster that died (SIGKILL, OOM, a lost
    # machine) are delivered again within minutes instead of hours. The cost
    # is one no-op delivery per `retry` seconds of a long-running job.
    "queue_limit": VIDEOGEN_WORKERS,
    "retry": VIDEOGEN_QUEUE_RETRY,
    # The task records failures on the job itself; never let the broker re-run
    # a task blindly (the original retried out-of-memory errors three times).
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 1000,
    "catch_up": False,
    "poll": envfloat("VIDEOGEN_QUEUE_POLL", 0.2),
    "label": "Task queue",
    # Workers pinned to a model's queue run with Q_CLUSTER_NAME=<queue>
    # (VIDEOGEN_MODEL_QUEUES); django-q2 then requires this, even empty.
    "ALT_CLUSTERS": {},
}
# Webhook deliveries wait in a queue of their own, served by a second
# cluster (`Q_CLUSTER_NAME=videogen-webhooks manage.py qcluster`, started by
# `make run` and docker/): a delivery never waits behind a generation, and a
# slow receiver never holds a GPU worker. Its workers only make HTTP calls.
VIDEOGEN_WEBHOOK_QUEUE = envstr("VIDEOGEN_WEBHOOK_QUEUE", "videogen-webhooks")
VIDEOGEN_WEBHOOK_WORKERS = envint("VIDEOGEN_WEBHOOK_WORKERS", 4, minimum=1)
Q_CLUSTER["ALT_CLUSTERS"][VIDEOGEN_WEBHOOK_QUEUE] = {
    "workers": VIDEOGEN_WEBHOOK_WORKERS,
    # Short tasks: one attempt (10 s at most) plus, for the first retries, a
    # few seconds' backoff in the worker; later retries are rescheduled.
    "timeout": 120,
    "retry": 180,
    "queue_limit": VIDEOGEN_WEBHOOK_WORKERS * 2,
    "recycle": 500,
}
# django-q2 warns at import when retry < timeout; see "retry" above for why
# that is deliberate here.
warnings.filterwarnings("ignore", message="Retry and timeout are misconfigured")

if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Metrics ------------------------------------------------------------------
# GET /metrics in the Prometheus text format (jobs/metrics/), guarded by a
# bearer token when one is set. HTTP counters are summed over the gunicorn
# processes through prometheus_client's multiprocess mode: its files live in
# PROMETHEUS_MULTIPROC_DIR (default $VIDEOGEN_DATA_DIR/prometheus), which
# every web process of a host must share; empty it when the server restarts.
VIDEOGEN_METRICS = envbool("VIDEOGEN_METRICS", False)
VIDEOGEN_METRICS_TOKEN = envstr("VIDEOGEN_METRICS_TOKEN", "")
if VIDEOGEN_METRICS:
    # Before anything imports prometheus_client, which reads it at import.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(DATA_DIR / "prometheus"))
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    MIDDLEWARE.insert(0, "jobs.metrics.http.MetricsMiddleware")

# --- Caches -------------------------------------------------------------------
# The rate limits' history must be shared by every gunicorn process (and
# host): Redis when there is one, else a table in the database (created by
# migration 0014_api_keys_and_metrics). "default" stays Django's per-process memory cache.
THROTTLE_CACHE_TABLE = "videogen_throttle_cache"
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "videogen-throttle"}
        if REDIS_URL
        else {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": THROTTLE_CACHE_TABLE,
            # Culling drops a third of the entries, limits included: keep it rare.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    ),
}

# --- Logging ------------------------------------------------------------------
# "text" for people (client-supplied values quoted, see videogen/logformat.py),
# "json" for log pipelines: one object per line.
VIDEOGEN_LOG_FORMAT = envstr("VIDEOGEN_LOG_FORMAT", "text")
if VIDEOGEN_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"VIDEOGEN_LOG_FORMAT must be text or json, got {VIDEOGEN_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"()": "videogen.logformat.TextFormatter"},
        "json": {"()": "videogen.logformat.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": VIDEOGEN_LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": envstr("VIDEOGEN_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
    },
}
