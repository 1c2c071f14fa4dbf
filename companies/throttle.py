"""Failures counted in a fixed window, in the Django cache (Redis), so every web worker sees them.

A window starts at the first failure and lasts `window` seconds; when it ends the count starts
again from nothing.

The counters belong to an email, a network address or an account, never to a company: they use
the default cache's Redis with a key function that leaves out the schema the project's
KEY_FUNCTION puts in front of every key. Otherwise a check made in a company's schema (a signed-in
request) and one made in public (sign-in, a task) would count the same failures in two places.
"""

import functools
import hashlib
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache.backends.base import BaseCache
from django.http import HttpRequest
from django.utils.module_loading import import_string

SIGN_IN_ACCOUNT = "sign-in-account"
SIGN_IN_ADDRESS = "sign-in-address"


@dataclass(frozen=True)
class Lockout:
    retry_at: float  # Unix time at which the window ends

    @property
    def minutes_left(self) -> int:
        return max(1, math.ceil((self.retry_at - time.time()) / 60))

    @property
    def try_again(self) -> str:
        minutes = self.minutes_left
        return "in about a minute" if minutes == 1 else f"in about {minutes} minutes"


def _counter_key(key: str, key_prefix: str, version: int) -> str:
    return f"{key_prefix}:{version}:{key}"


@functools.cache
def _counters() -> BaseCache:
    """The default cache's backend and server, with the schema-free key function."""
    params = settings.CACHES["default"].copy()
    backend = import_string(params.pop("BACKEND"))
    location = params.pop("LOCATION", "")
    params.pop("REVERSE_KEY_FUNCTION", None)
    return backend(location, {**params, "KEY_FUNCTION": _counter_key})


def _keys(scope: str, value: str) -> tuple[str, str]:
    # hashed: emails and addresses do not sit in Redis in clear, and any value makes a valid key
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    base = f"throttle:{scope}:{digest}"
    return f"{base}:count", f"{base}:since"


def failure_record(*, scope: str, value: str, window: int) -> int:
    """Count one failure; returns the count in the current window."""
    count_key, since_key = _keys(scope, value)
    cache = _counters()
    cache.add(since_key, time.time(), timeout=window)
    cache.add(count_key, 0, timeout=window)
    try:
        # INCR is atomic and keeps the key's expiry, so concurrent failures are all counted
        return cache.incr(count_key)
    except ValueError:  # the window ended between add() and incr()
        cache.set(since_key, time.time(), timeout=window)
        cache.set(count_key, 1, timeout=window)
        return 1


def lockout_check(*, scope: str, value: str, limit: int, window: int) -> Lockout | None:
    """A lockout when `limit` failures or more were counted in the current window."""
    count_key, since_key = _keys(scope, value)
    found = _counters().get_many([count_key, since_key])
    if int(found.get(count_key, 0)) < limit:
        return None
    since = found.get(since_key) or time.time()
    return Lockout(retry_at=since + window)


def failures_clear(*, scope: str, value: str) -> None:
    _counters().delete_many(list(_keys(scope, value)))


# --- sign-in ---------------------------------------------------------------------------------------

def client_address(request: HttpRequest | None) -> str:
    # REMOTE_ADDR, not X-Forwarded-For: a client can write any forwarded header it likes
    return request.META.get("REMOTE_ADDR", "") if request is not None else ""


def _account(email: str) -> str:
    return (email or "").strip().lower()


def sign_in_lockout_message(*, email: str, address: str) -> str | None:
    """Why a sign-in is refused before its password is checked, or None when it may proceed.

    The account limit applies to any email typed, whether an account has it or not, so the
    message says nothing about which emails exist.
    """
    window = settings.SIGN_IN_FAILURE_WINDOW_SECONDS
    lockout = lockout_check(scope=SIGN_IN_ACCOUNT, value=_account(email),
                            limit=settings.SIGN_IN_MAX_FAILURES_PER_ACCOUNT, window=window)
    if lockout is not None:
        return ("Too many failed sign-ins for this account, so sign-in is paused to protect it. "
                f"Try again {lockout.try_again}.")
    if address:
        lockout = lockout_check(scope=SIGN_IN_ADDRESS, value=address,
                                limit=settings.SIGN_IN_MAX_FAILURES_PER_ADDRESS, window=window)
        if lockout is not None:
            return ("Too many failed sign-ins from your network address, so sign-in from it is "
                    f"paused. Try again {lockout.try_again}.")
    return None


def sign_in_failure_record(*, email: str, address: str) -> None:
    window = settings.SIGN_IN_FAILURE_WINDOW_SECONDS
    failure_record(scope=SIGN_IN_ACCOUNT, value=_account(email), window=window)
    if address:
        failure_record(scope=SIGN_IN_ADDRESS, value=address, window=window)
