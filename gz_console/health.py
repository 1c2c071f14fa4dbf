"""Liveness of the three things the product cannot work without: PostgreSQL, Redis, a worker."""

import time

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse


def _timed(check):
    started = time.monotonic()
    try:
        detail = check()
        ok = True
    except Exception as exc:  # noqa: BLE001 - any failure means "down", reported by name
        detail = {"error": f"{type(exc).__name__}: {exc}"}
        ok = False
    return {"ok": ok, "ms": round((time.monotonic() - started) * 1000, 1), **(detail or {})}


def check_postgres():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version')")
        return {"version": cursor.fetchone()[0]}


def check_redis():
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
        return {"version": client.info("server").get("redis_version")}
    finally:
        client.close()


def check_worker():
    from gz_console.celery import app

    replies = app.control.ping(timeout=1.0, limit=1)
    if not replies:
        raise RuntimeError("no Celery worker answered a ping within 1 s")
    return {"workers": sorted(name for reply in replies for name in reply)}


def healthz(request):
    states = {
        "postgres": _timed(check_postgres),
        "redis": _timed(check_redis),
        "worker": _timed(check_worker),
    }
    status = 200 if all(state["ok"] for state in states.values()) else 503
    return JsonResponse(states, status=status)
