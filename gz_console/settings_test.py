"""Test settings: only overrides of gz_console.settings."""

import os

os.environ.setdefault("GZ_ENV", "test")

from .settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
DEBUG = False
