"""Bench companies live in the reused bench database: their schemas are dropped with them, and an
interrupted run's leftovers are removed before the next run starts."""

from django.db import connection

from companies.models import Company, User


def drop_schemas(names: list[str]) -> None:
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def remove_earlier_runs(name_prefix: str) -> None:
    """Companies named `name_prefix...` (and their schemas and users), deepest first."""
    leftovers = Company.objects.filter(name__startswith=name_prefix)
    drop_schemas(list(leftovers.values_list("schema_name", flat=True)))
    ids = list(leftovers.values_list("pk", flat=True))
    with connection.cursor() as cursor:  # in SQL: a cascade would load every row (django-tenants' delete signal)
        for table in ("usage_endpointday", "usage_endpointmonth", "usage_rollupwatermark"):
            cursor.execute(f"DELETE FROM public.{table} WHERE company_id = ANY(%s)", [ids])  # noqa: S608 - our names
    User.objects.filter(company__in=leftovers).delete()
    leftovers.order_by("-depth").delete()
