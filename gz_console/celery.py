"""The Celery app. Tasks are thin: JSON arguments, an explicit name, the service imported inside."""

import os

from celery import Celery, Task

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
