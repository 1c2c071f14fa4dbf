"""All settings come from the environment through one `env` object.

GZ_ENV selects the deployment shape: "development" (default), "test" or "production". In production
a missing required variable stops start-up with a message that names it.
"""

import urllib.parse
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
GZ_ENV = env.str("GZ_ENV", default="development")
if GZ_ENV not in {"development", "test", "production"}:
    raise ImproperlyConfigured(f"GZ_ENV must be development, test or production, not {GZ_ENV!r}")
PRODUCTION = GZ_ENV == "production"


def _required(name: str, dev_default: str) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured(f"The environment variable {name} is required in production.")
    return dev_default


SECRET_KEY = _required("SECRET_KEY", "dev-only-insecure-key-do-not-use-in-production-0123456789")
# PSA keys are encrypted at rest with this Fernet key; without it, a key derived from SECRET_KEY
FIELD_ENCRYPTION_KEY = env.str("FIELD_ENCRYPTION_KEY", default="")
# The PSA site a partner enters is called by the server: in production only public addresses, so a
# partner cannot make the console reach services on its own machine or network
PSA_ALLOW_PRIVATE_ADDRESSES = env.bool("PSA_ALLOW_PRIVATE_ADDRESSES", default=not PRODUCTION)
DEBUG = env.bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if PRODUCTION else ["*"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("The environment variable ALLOWED_HOSTS is required in production.")
CONSOLE_URL = _required("CONSOLE_URL", "http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = [CONSOLE_URL]

# --- Tenancy -------------------------------------------------------------------------------------
# Public schema: the company tree, accounts, licensing, usage rollups (with the company-scoped
# endpoint-day and endpoint-month rows), reports, integrations, the audit log and beat schedules.
# Tenant schemas: one company's own network data (usage.telemetry: endpoints, raw heartbeats, mailboxes).
SHARED_APPS = [
    "django_tenants",
    "companies",  # before django_tenants' commands so our `migrate` (template schema) wins
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_countries",
    "rest_framework",
    "drf_spectacular",
    "django_celery_beat",
    "licensing",
    "usage",
    "reports",
    "integrations",
    "gz_console",
]
TENANT_APPS = [
    "usage.telemetry",
]
INSTALLED_APPS = ["companies"] + [a for a in SHARED_APPS if a != "companies"] + [
    a for a in TENANT_APPS if a not in SHARED_APPS
]
TENANT_MODEL = "companies.Company"
TENANT_DOMAIN_MODEL = "companies.Domain"
TENANT_BASE_SCHEMA = "gz_template"
TENANT_CREATION_FAKES_MIGRATIONS = True
TENANT_LIMIT_SET_CALLS = True
PUBLIC_SCHEMA_NAME = "public"
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)

# --- Database, cache, broker ---------------------------------------------------------------------
DATABASE_URL = _required("DATABASE_URL", "")
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. Start the product with `make run` (it starts an embedded "
        "PostgreSQL) or point DATABASE_URL at a PostgreSQL server."
    )
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
DATABASES["default"]["ENGINE"] = "django_tenants.postgresql_backend"
# a unix socket directory arrives percent-encoded in the host part (postgres://user@%2Fsock/db)
DATABASES["default"]["HOST"] = urllib.parse.unquote(DATABASES["default"]["HOST"])
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = _required("REDIS_URL", "")
if not REDIS_URL:
    raise ImproperlyConfigured(
        "REDIS_URL is not set. Start the product with `make run` (it starts an embedded Redis) "
        "or point REDIS_URL at a Redis server."
    )


def _kombu_url(url: str) -> str:
    # redis-py names a unix socket unix://, kombu names it redis+socket://
    return "redis+socket://" + url[len("unix://"):] if url.startswith("unix://") else url


CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # every cache key carries the schema of the company it was written for
        "KEY_FUNCTION": "django_tenants.cache.make_key",
        "REVERSE_KEY_FUNCTION": "django_tenants.cache.reverse_key",
    }
}

CELERY_BROKER_URL = _kombu_url(REDIS_URL)
CELERY_RESULT_BACKEND = _kombu_url(REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=360)
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# workers keep their database session between tasks (gz_console/celery.py): Celery's fixup recycles it
# after this many tasks, and a session lives WORKER_DB_CONN_MAX_AGE seconds
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
WORKER_DB_CONN_MAX_AGE = env.int("WORKER_DB_CONN_MAX_AGE", default=600)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# --- Email ---------------------------------------------------------------------------------------
EMAIL_URL = env.str("EMAIL_URL", default="consolemail://")
vars().update(env.email_url_config(EMAIL_URL))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="GZ Console <console@localhost>")
# R5: a report email that fails is retried with back-off: base, 2x, 4x ... for this many attempts in all
REPORT_SEND_ATTEMPTS = env.int("REPORT_SEND_ATTEMPTS", default=5)
REPORT_SEND_RETRY_SECONDS = env.int("REPORT_SEND_RETRY_SECONDS", default=60)
# a scheduled report waits for its month's close (U12) and looks again this often
REPORT_MONTH_CLOSE_WAIT_SECONDS = env.int("REPORT_MONTH_CLOSE_WAIT_SECONDS", default=600)

# --- Django --------------------------------------------------------------------------------------
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # after authentication: the tenant of a request is the signed-in user's company
    "companies.middleware.CompanyTenantMiddleware",
    "companies.twofactor.TwoFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "gz_console.urls"
PUBLIC_SCHEMA_URLCONF = "gz_console.urls"
WSGI_APPLICATION = "gz_console.wsgi.application"
AUTH_USER_MODEL = "companies.User"
LOGIN_URL = "accounts:sign-in"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "accounts:sign-in"
SESSION_ENGINE = "django.contrib.sessions.backends.db"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator",
     "OPTIONS": {"user_attributes": ["email", "full_name"]}},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

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
                "companies.context_processors.navigation",
            ],
        },
    }
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# outside production whitenoise serves straight from the app and project folders (no collectstatic)
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / ".local" / "media")))

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}
SPECTACULAR_SETTINGS = {"TITLE": "GZ Console API", "VERSION": "1.0.0"}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Production hardening (`manage.py check --deploy` reports nothing) ----------------------------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_REFERRER_POLICY = "same-origin"
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
AUTHENTICATION_BACKENDS = ["companies.backends.CompanyUserBackend"]

# --- Sign-in security -------------------------------------------------------------------------------
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)  # a working day
SESSION_SAVE_EVERY_REQUEST = True  # idle expiry: the clock restarts with each request
SESSION_COOKIE_HTTPONLY = True
SIGN_IN_MAX_FAILURES_PER_ACCOUNT = env.int("SIGN_IN_MAX_FAILURES_PER_ACCOUNT", default=100)
SIGN_IN_MAX_FAILURES_PER_ADDRESS = env.int("SIGN_IN_MAX_FAILURES_PER_ADDRESS", default=300)
SIGN_IN_FAILURE_WINDOW_SECONDS = 3600
LOGO_MAX_BYTES = 1024 * 1024
LANGUAGES = [("en", "English"), ("fr", "Français"), ("de", "Deutsch"), ("es", "Español"), ("ro", "Română")]

# --- Schedules (django-celery-beat's DatabaseScheduler copies these into the database at start) ---
from celery.schedules import crontab  # noqa: E402

CELERY_BEAT_SCHEDULE = {
    # S3, S4, L4: renewals, suspensions and trials, once a day just after midnight UTC
    "licensing-daily": {"task": "licensing.daily", "schedule": crontab(hour=0, minute=15)},
    # telemetry -> usage: companies with new heartbeats, every minute
    "usage-rollup-fanout": {"task": "usage.rollup_fanout", "schedule": 60.0},
    # seats and entitlements change the open month without new heartbeats
    "usage-refresh-open-month": {"task": "usage.refresh_open_month", "schedule": crontab(minute=5)},
    # U12: finalize the previous month on the 1st, after the licensing run; hourly after that, so a close
    # that some company's failing rollup left unfinished completes once it succeeds (a closed month: no-op)
    "usage-month-close": {"task": "usage.month_close", "schedule": crontab(minute=30)},
    # raw heartbeats outlive the open month by the 35-day late window
    "usage-purge-heartbeats": {"task": "usage.purge_heartbeats", "schedule": crontab(hour=3, minute=0)},
    # B3: ConnectWise additions, hourly after the rollups (each company at most every four hours)
    "integrations-sync-due": {"task": "integrations.sync_due", "schedule": crontab(minute=20)},
    # H5: a moved company's addition in its former partner's PSA, set to 0 where the first try failed
    "integrations-zero-left-behind": {"task": "integrations.zero_left_behind", "schedule": crontab(minute=25)},
}
