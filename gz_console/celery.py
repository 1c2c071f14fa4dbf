"""The Celery app. Tasks are thin: JSON arguments, an explicit name, the service imported inside."""

import os

from celery import Celery, Task, states
from celery.signals import task_postrun, task_prerun, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gz_console.settings")

app = Celery("gz_console")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class CompanyTask(Task):
    """A task that runs in the schema of the company it is given.

    The first argument (or the `company_id` keyword) names the company; the body runs inside
    tenant_context(company) and the connection is returned to the public schema afterwards, so a
    worker never carries one company's search path into the next task.
    """

    abstract = True

    def __call__(self, *args, **kwargs):
        from django.db import connection
        from django_tenants.utils import tenant_context

        from companies.models import Company

        company_id = kwargs["company_id"] if "company_id" in kwargs else args[0]
        company = Company.objects.get(pk=company_id)
        try:
            with tenant_context(company):
                return super().__call__(*args, **kwargs)
        finally:
            connection.set_schema_to_public()


# Database sessions in workers. Celery's Django fixup closes the connection after every task unless
# CELERY_DB_REUSE_MAX is set (settings.py sets it), so each task would pay a new PostgreSQL session
# and a cold catalogue cache: a rollup batch names some 100 company schemas, and rebuilding their
# relation caches cost more than the batch's own work (docs/decisions.md, Issue 5 > Benchmarks).
# A worker keeps its session instead, on the same terms as a web process keeps one between
# requests, and drops it whenever it might not be sound.


WORKER_APPLICATION_NAME = "gz-console worker"


@worker_init.connect
def _worker_sessions_kept(**kwargs):
    """A worker's session lives WORKER_DB_CONN_MAX_AGE seconds (the web's DB_CONN_MAX_AGE is for
    requests) and names itself in pg_stat_activity; set before any connection opens, so pool
    processes inherit it."""
    from django.conf import settings
    from django.db import connections

    for alias in connections:
        connections.settings[alias]["CONN_MAX_AGE"] = settings.WORKER_DB_CONN_MAX_AGE
        connections.settings[alias].setdefault("OPTIONS", {}).setdefault("application_name", WORKER_APPLICATION_NAME)


def _eager(sender) -> bool:
    """A task run in the caller's process (.apply(), tests): its connection is the caller's."""
    return bool(getattr(getattr(sender, "request", None), "is_eager", False))


@task_prerun.connect
def _session_checked(sender=None, **kwargs):
    """What Django does at a request's start: close a session past its age or left unusable by an
    error, and check the next use of a kept one (CONN_HEALTH_CHECKS) before the task's first query."""
    from django.db import close_old_connections

    if not _eager(sender):
        close_old_connections()


@task_postrun.connect
def _session_dropped_after_failure(sender=None, state=None, **kwargs):
    """A task that did not succeed may have been stopped in the middle of a query (a soft time
    limit arrives as a signal), which can leave a session that looks usable and is not: close it, so
    the next task starts on a new one. Sessions are kept only after a success."""
    from django.db import DatabaseError, InterfaceError, connections

    if state == states.SUCCESS or _eager(sender):
        return
    for conn in connections.all(initialized_only=True):
        try:
            conn.close()
        except (DatabaseError, InterfaceError):
            pass  # already broken: nothing is left to close
