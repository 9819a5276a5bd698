"""Settings for Newsroom, read from the environment (django-environ).

Every setting an operator may change is listed in README.md ("Configure").
Defaults run the whole site on one machine: SQLite and a private Redis under
var/, emails written to var/mail/.
"""

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # local state: SQLite, the private Redis socket, mail, uploads
VAR_DIR.mkdir(exist_ok=True)

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY and (VAR_DIR / "secret_key").is_file():
    # The key `make run` generated: commands run beside it sign alike.
    SECRET_KEY = (VAR_DIR / "secret_key").read_text().strip()
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "Set SECRET_KEY in the environment (or in .env): a long random string. "
            "Only DEBUG=true may run without one."
        )
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

# The public address of the site: absolute links in emails and feeds, and the
# scheme decides whether cookies are marked secure and HTTP is redirected.
# Without it, the port `make run` serves on: NEWSROOM_PORT (the Makefile sets
# it from PORT, since honcho gives each of its processes a PORT of its own),
# else PORT, else 8000.
_port = env.str("NEWSROOM_PORT", default="") or env.str("PORT", default="") or "8000"
SITE_URL = env.str("SITE_URL", default=f"http://127.0.0.1:{_port}").rstrip("/")
SITE_NAME = env.str("SITE_NAME", default="Newsroom")
SITE_DESCRIPTION = env.str(
    "SITE_DESCRIPTION", default="News about the people, organisations and places that matter."
)
# An image shown instead of the site's name in the site's masthead (its alt
# text is SITE_NAME; emails keep the name set in type); empty: the name set
# in type.
SITE_LOGO_URL = env.str("SITE_LOGO_URL", default="")
_site = urlsplit(SITE_URL)
if _site.scheme not in ("http", "https") or not _site.hostname:
    raise ImproperlyConfigured(f"SITE_URL must be an absolute http(s) URL, not {SITE_URL!r}.")

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=sorted({_site.hostname, "127.0.0.1", "localhost"})
)
CSRF_TRUSTED_ORIGINS = [f"{_site.scheme}://{_site.netloc}"]

_https = _site.scheme == "https"
SESSION_COOKIE_SECURE = _https
CSRF_COOKIE_SECURE = _https
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=_https)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if _https else None
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "SAMEORIGIN"  # CKEditor's dialogs use same-origin frames.

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.sitemaps",
    "django.contrib.postgres",
    "ckeditor",
    "ckeditor_uploader",
    "anymail",
    "newsroom",
    "subscriptions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "newsroom.urls"
CSRF_FAILURE_VIEW = "newsroom.views.csrf_failure"  # The site's look, a link back to the form.
WSGI_APPLICATION = "newsroom.wsgi.application"

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
                "newsroom.views.site_context",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a Celery worker writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"}
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # No JIT compilation: PostgreSQL compiles a query whose estimated cost is
    # high, and the estimate counts branches that never run. The admin's
    # mailing list (MailingQuerySet.with_progress: a done mailing's stored
    # counts, a live count only for those in flight) runs in 2 ms and took
    # 0.6 s more to compile, on every view, over 20 mailings of 100,000
    # readers. Nothing here is a long analytical query that compiling would
    # repay. DATABASE_URL's ?options=… overrides it.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")
# Each web worker keeps its database connection between requests (opening
# one cost a subscribe POST a sixth of its time on SQLite, more on
# PostgreSQL), checked before it is reused after an error. DATABASE_URL's
# ?conn_max_age=SECONDS overrides it (0: a connection per request).
DATABASES["default"].setdefault("CONN_MAX_AGE", 600)
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: the Celery broker and the shared cache. Without REDIS_URL, the
# private server that `make run` starts on a unix socket under var/.
REDIS_SOCKET = VAR_DIR / "redis.sock"
REDIS_URL = env.str("REDIS_URL", default=f"unix://{REDIS_SOCKET}")


def _redis_db(url, db):
    """The same Redis server as `url`, another logical database."""
    if url.startswith("unix://"):
        return f"{url.split('?')[0]}?db={db}"
    parts = urlsplit(url)
    return parts._replace(path=f"/{db}").geturl()


CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": _redis_db(REDIS_URL, 1),
        "KEY_PREFIX": "newsroom",
    }
}

CELERY_BROKER_URL = (
    f"redis+socket://{REDIS_URL.removeprefix('unix://').split('?')[0]}"
    if REDIS_URL.startswith("unix://")
    else _redis_db(REDIS_URL, 0)
)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# On Redis, priority 0 is served first: the app's tasks go at 5 so that the
# sweeper (beat, priority 0) runs as soon as a worker is free, not behind a
# mailing's queued batches (a dead worker's readers wait for it).
CELERY_TASK_DEFAULT_PRIORITY = 5
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    # Scheduled articles go live within a minute of their publish time.
    "publish-due-articles": {"task": "newsroom.tasks.publish_due_articles", "schedule": 30.0},
    # A live article whose announce was lost (a process died after the commit).
    "announce-missed-articles": {
        "task": "newsroom.tasks.announce_missed_articles",
        "schedule": 60.0,
    },
    # Put back, within seconds, what a dead worker or a restarted Redis left
    # stalled (a few small queries a run). Keep it well under 80 % of
    # SUBSCRIPTIONS_HEARTBEAT; a run that waited longer than that is dropped.
    "sweep-deliveries": {
        "task": "subscriptions.tasks.sweep",
        "schedule": 3.0,
        "options": {"expires": 6.0, "priority": 0},
    },
    # Make the daily and weekly digests once their send time has come.
    "make-digests": {"task": "subscriptions.tasks.make_digests", "schedule": 300.0},
    # One reminder to addresses pending for SUBSCRIPTIONS_REMIND_AFTER; delete
    # those pending for SUBSCRIPTIONS_PENDING_MAX_AGE.
    "remind-pending": {"task": "subscriptions.tasks.remind_pending", "schedule": 3600.0},
    "delete-stale-pending": {
        "task": "subscriptions.tasks.delete_stale_pending",
        "schedule": 3600.0,
    },
}

# Email. Without EMAIL_URL every message is written as a file under
# var/mail/ (one .log file per connection), where a person can read it.
if env.str("EMAIL_BACKEND", default=""):
    # An email provider's API through django-anymail, e.g.
    # EMAIL_BACKEND=anymail.backends.postmark.EmailBackend with
    # ANYMAIL_POSTMARK_SERVER_TOKEN; its webhooks are under /anymail/.
    EMAIL_BACKEND = env.str("EMAIL_BACKEND")
elif env.str("EMAIL_URL", default=""):
    _email = env.email_url("EMAIL_URL")
    # EMAIL_URL's ?timeout=SECONDS is EMAIL_TIMEOUT (below).
    _url_timeout = _email.get("OPTIONS", {}).pop("TIMEOUT", None)
    if not _email.get("OPTIONS"):
        _email.pop("OPTIONS", None)
    vars().update(_email)
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = VAR_DIR / "mail"
# Seconds an SMTP connection waits for the server before the attempt fails
# (and is retried): a hung mail server must not hold a worker.
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=float(vars().get("_url_timeout") or 30))
# django-anymail reads ANYMAIL_<ESP>_<SETTING> settings: take them from the
# environment as they are. ANYMAIL_WEBHOOK_SECRET ("user:password") guards
# the bounce and complaint webhooks.
vars().update({k: v for k, v in env.ENVIRON.items() if k.startswith("ANYMAIL_")})
# A provider's API call gives up after as long as an SMTP reply may take,
# unless ANYMAIL_REQUESTS_TIMEOUT says otherwise.
ANYMAIL_REQUESTS_TIMEOUT = float(vars().get("ANYMAIL_REQUESTS_TIMEOUT") or EMAIL_TIMEOUT)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default=f"{SITE_NAME} <news@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"  # collectstatic, for a web server in front
STATIC_ROOT.mkdir(exist_ok=True)
# Whitenoise serves static files straight from the apps, so no collectstatic
# step is needed on one machine.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

MEDIA_URL = "/media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")
# On one machine Django serves uploads itself; behind a web server set false.
SERVE_MEDIA = env.bool("SERVE_MEDIA", default=True)

CKEDITOR_UPLOAD_PATH = "uploads/"
CKEDITOR_IMAGE_BACKEND = "pillow"
CKEDITOR_ALLOW_NONIMAGE_FILES = False
CKEDITOR_RESTRICT_BY_USER = False
CKEDITOR_CONFIGS = {
    "default": {
        "toolbar": "Custom",
        "toolbar_Custom": [
            ["Format", "Bold", "Italic", "Strike"],
            ["NumberedList", "BulletedList", "Blockquote"],
            ["Link", "Unlink", "Image", "Table", "HorizontalRule"],
            ["RemoveFormat", "Source"],
        ],
        "format_tags": "p;h2;h3;h4",
        "height": 400,
        "width": "100%",
    }
}
SILENCED_SYSTEM_CHECKS = [
    # CKEditor 4 is end-of-life. Every stored body is sanitised with nh3 on
    # save (Article.save), so nothing the editor lets through reaches readers.
    "ckeditor.W001",
]

NEWSROOM_ARTICLES_PER_PAGE = 10

# Celery's lines for each run of a task beat starts more often than once a
# minute (the sweep, every 3 s) are left out; their failures are not.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "routine_tasks": {
            "()": "newsroom.log.QuietRoutineTasks",
            "tasks": [e["task"] for e in CELERY_BEAT_SCHEDULE.values() if e["schedule"] < 60],
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        **{
            name: {"filters": ["routine_tasks"]}
            for name in ("celery.worker.strategy", "celery.app.trace", "celery.beat")
        },
    },
}

# Behind a proxy, the request header holding the client's IP for
# django-ratelimit's per-IP limits (e.g. HTTP_X_REAL_IP); unset: REMOTE_ADDR.
RATELIMIT_IP_META_KEY = env.str("RATELIMIT_IP_META_KEY", default="") or None

# The subscriptions app (defaults and meanings in subscriptions/conf.py).
# Topics readers may follow are this site's entities.
SUBSCRIPTIONS_TOPICS = "newsroom.models.subscription_topics"
SUBSCRIPTIONS_TOPIC_SEARCH = "newsroom.models.search_subscription_topics"
SUBSCRIPTIONS_POSTAL_ADDRESS = env.str("SUBSCRIPTIONS_POSTAL_ADDRESS", default="")
SUBSCRIPTIONS_REPLY_TO = env.str("SUBSCRIPTIONS_REPLY_TO", default="") or None
SUBSCRIPTIONS_UNSUBSCRIBE_MAILTO = env.str("SUBSCRIPTIONS_UNSUBSCRIBE_MAILTO", default="") or None
SUBSCRIPTIONS_EMAIL_CONTENT = env.str("SUBSCRIPTIONS_EMAIL_CONTENT", default="summary")
SUBSCRIPTIONS_MAX_RATE = env.float("SUBSCRIPTIONS_MAX_RATE", default=0) or None
# The undo window: seconds between publishing and the email going out.
SUBSCRIPTIONS_SEND_DELAY = env.float("SUBSCRIPTIONS_SEND_DELAY", default=60)
SUBSCRIPTIONS_BATCH_SIZE = env.int("SUBSCRIPTIONS_BATCH_SIZE", default=1000)
# A provider's batch API: readers per call (0: the provider's limit), API
# calls per second (0: no limit), a daily cap (0: none) and a warm-up
# ("500,1000,2000" from SUBSCRIPTIONS_WARMUP_START, "YYYY-MM-DD").
SUBSCRIPTIONS_RECIPIENTS_PER_CALL = env.int("SUBSCRIPTIONS_RECIPIENTS_PER_CALL", default=0) or None
SUBSCRIPTIONS_CALLS_PER_SECOND = env.float("SUBSCRIPTIONS_CALLS_PER_SECOND", default=0) or None
SUBSCRIPTIONS_DAILY_CAP = env.int("SUBSCRIPTIONS_DAILY_CAP", default=0) or None
SUBSCRIPTIONS_WARMUP = env.str("SUBSCRIPTIONS_WARMUP", default="") or None
SUBSCRIPTIONS_WARMUP_START = env.str("SUBSCRIPTIONS_WARMUP_START", default="") or None
SUBSCRIPTIONS_SMTP_CONNECTIONS = env.int("SUBSCRIPTIONS_SMTP_CONNECTIONS", default=4)
SUBSCRIPTIONS_SMTP_WINDOW = env.int("SUBSCRIPTIONS_SMTP_WINDOW", default=64)
SUBSCRIPTIONS_CLAIM_TIMEOUT = env.float("SUBSCRIPTIONS_CLAIM_TIMEOUT", default=300)  # seconds
SUBSCRIPTIONS_HEARTBEAT = env.float("SUBSCRIPTIONS_HEARTBEAT", default=10) or None  # s; 0: off
SUBSCRIPTIONS_RETRY_BACKOFF = env.float("SUBSCRIPTIONS_RETRY_BACKOFF", default=30)  # seconds
SUBSCRIPTIONS_RETRY_BACKOFF_MAX = env.float("SUBSCRIPTIONS_RETRY_BACKOFF_MAX", default=3600)  # s
SUBSCRIPTIONS_MAX_ATTEMPTS = env.int("SUBSCRIPTIONS_MAX_ATTEMPTS", default=8)
SUBSCRIPTIONS_HARD_BOUNCE_LIMIT = env.int("SUBSCRIPTIONS_HARD_BOUNCE_LIMIT", default=2)
SUBSCRIPTIONS_CACHE = env.str("SUBSCRIPTIONS_CACHE", default="default")
SUBSCRIPTIONS_DIGEST_HOUR = env.int("SUBSCRIPTIONS_DIGEST_HOUR", default=7)
SUBSCRIPTIONS_DIGEST_WEEKDAY = env.int("SUBSCRIPTIONS_DIGEST_WEEKDAY", default=0)
# Days after its confirmation email that a pending address gets its one
# reminder, and after which it is deleted; 0: never.
SUBSCRIPTIONS_REMIND_AFTER = (
    timedelta(days=env.float("SUBSCRIPTIONS_REMIND_AFTER_DAYS", default=3)) or None
)
SUBSCRIPTIONS_PENDING_MAX_AGE = (
    timedelta(days=env.float("SUBSCRIPTIONS_PENDING_MAX_AGE_DAYS", default=30)) or None
)
# Engagement stats: off unless asked for; per-reader only when also asked for.
SUBSCRIPTIONS_STATS = env.bool("SUBSCRIPTIONS_STATS", default=False)
SUBSCRIPTIONS_STATS_PER_READER = env.bool("SUBSCRIPTIONS_STATS_PER_READER", default=False)
