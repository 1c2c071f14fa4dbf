"""Settings, health checks and the Celery plumbing, against the real services."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection
from django_tenants.utils import tenant_context

from tests.factories import make_company

ROOT = Path(__file__).resolve().parents[2]


def _django(env_overrides: dict, *args: str) -> subprocess.CompletedProcess:
    dropped = ("SECRET_KEY", "ALLOWED_HOSTS", "CONSOLE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update({"DJANGO_SETTINGS_MODULE": "gz_console.settings", **env_overrides})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)


def test_production_refuses_to_start_without_secret_key():
    result = _django({"GZ_ENV": "production", "ALLOWED_HOSTS": "console.example.com",
                      "CONSOLE_URL": "https://console.example.com"}, "check")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_check_deploy_reports_nothing():
    result = _django({"GZ_ENV": "production", "SECRET_KEY": "x" * 30 + "-production-secret-value-0123456789",
                      "ALLOWED_HOSTS": "console.example.com", "CONSOLE_URL": "https://console.example.com"},
                     "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
def test_cache_keys_carry_the_schema(platform):
    first, second = make_company(parent=platform), make_company(parent=platform)
    with tenant_context(first):
        cache.set("greeting", "first")
    with tenant_context(second):
        assert cache.get("greeting") is None
        cache.set("greeting", "second")
    with tenant_context(first):
        assert cache.get("greeting") == "first"


@pytest.mark.django_db
def test_healthz_reports_all_three_up(client, celery_worker_process):
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert set(body) == {"postgres", "redis", "worker"}
    assert all(body[name]["ok"] is True for name in body)


@pytest.mark.django_db
def test_healthz_answers_503_when_redis_is_down(client, settings, celery_worker_process):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["redis"]["ok"] is False and "error" in body["redis"]
    assert body["postgres"]["ok"] is True


@pytest.mark.django_db(transaction=True)
def test_company_task_runs_in_the_companys_schema(platform, celery_worker_process):
    from companies.tasks import schema_census
    from usage.telemetry.models import Endpoint

    company = make_company(parent=platform)
    with tenant_context(company):
        Endpoint.objects.create(hardware_id="hw-9", hostname="srv", os_family="linux",
                                os_type="server", machine_type="virtual")
    result = schema_census.delay(company.pk).get(timeout=30)
    assert result == {"schema": company.schema_name, "endpoints": 1}
    assert connection.schema_name == "public"


def _worker_sessions() -> list[int]:
    from gz_console.celery import WORKER_APPLICATION_NAME

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                       [WORKER_APPLICATION_NAME])
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_worker_keeps_its_database_session_between_tasks_and_drops_it_after_a_failure(platform,
                                                                                        celery_worker_process):
    """Issue 5's rollup: a new session per task rebuilt the catalogue caches of every schema a batch
    names. Kept after a success; closed after a failure, which may have stopped a query halfway."""
    from companies.tasks import schema_census

    company = make_company(parent=platform)
    schema_census.delay(company.pk).get(timeout=30)
    first = _worker_sessions()
    schema_census.delay(company.pk).get(timeout=30)
    assert len(first) == 1 and _worker_sessions() == first  # the same session served both

    with pytest.raises(Exception, match="does not exist"):  # noqa: PT011 - the worker's error, rebuilt by Celery
        schema_census.delay(0).get(timeout=30)
    deadline = time.monotonic() + 10
    while first[0] in _worker_sessions():  # closed just after the failure is reported
        assert time.monotonic() < deadline, "the session outlived the failed task"
        time.sleep(0.05)
    schema_census.delay(company.pk).get(timeout=30)
    after = _worker_sessions()
    assert len(after) == 1 and after != first


@pytest.mark.django_db(transaction=True)
def test_a_kept_worker_session_that_died_while_idle_is_replaced_before_the_next_task(platform,
                                                                                    celery_worker_process):
    """A database restart or an idle timeout ends a kept session between tasks: the next task must
    not fail on it (the health check before the first query opens a new one)."""
    from companies.tasks import schema_census

    company = make_company(parent=platform)
    schema_census.delay(company.pk).get(timeout=30)
    [pid] = _worker_sessions()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + 10
    while pid in _worker_sessions():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert schema_census.delay(company.pk).get(timeout=30) == {"schema": company.schema_name, "endpoints": 0}
    assert _worker_sessions() not in ([], [pid])


def test_console_sessions_run_without_jit(db):
    """Statements over many company schemas would spend seconds compiling (docs/decisions.md)."""
    from django.db import connections

    fresh = connections.create_connection("default")  # a new session, as a web or worker process opens
    try:
        with fresh.cursor() as cursor:
            cursor.execute("SHOW jit")
            assert cursor.fetchone()[0] == "off"
    finally:
        fresh.close()
