"""Secrets encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256).

The key is FIELD_ENCRYPTION_KEY when set (a Fernet key: 32 url-safe base64 bytes), otherwise one
derived from SECRET_KEY. Changing either makes stored PSA keys unreadable: the partner re-enters them.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet() -> Fernet:
    key = getattr(settings, "FIELD_ENCRYPTION_KEY", "") or ""
    if not key:
        digest = hashlib.sha256(b"gz-console field encryption:" + settings.SECRET_KEY.encode()).digest()
        key = base64.urlsafe_b64encode(digest).decode()
    return Fernet(key.encode() if isinstance(key, str) else key)


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


class SecretUnreadable(Exception):
    """The stored secret was encrypted with another key."""


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("The stored key cannot be read; enter the keys again.") from None
