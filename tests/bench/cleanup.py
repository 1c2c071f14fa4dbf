"""Bench companies live in the reused bench database: their schemas are dropped with them, and an
interrupted run's leftovers are removed before the next run starts."""

from django.db import connection

from companies.models import Company, User

LASTING = ("usage_endpointday", "usage_endpointmonth", "usage_rollupwatermark")


def lasting_rows_delete(company_ids: list[int], *, tables: tuple[str, ...] = LASTING) -> None:
    """The companies' rows in the public tables the rollup writes, in SQL: an ORM cascade would load every
    row (django-tenants' delete signal)."""
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"DELETE FROM public.{table} WHERE company_id = ANY(%s)", [company_ids])  # noqa: S608 - our names


def drop_schemas(names: list[str]) -> None:
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def remove_earlier_runs(name_prefix: str) -> None:
    """Companies named `name_prefix...` (and their schemas and users), deepest first."""
    leftovers = Company.objects.filter(name__startswith=name_prefix)
    drop_schemas(list(leftovers.values_list("schema_name", flat=True)))
    lasting_rows_delete(list(leftovers.values_list("pk", flat=True)))
    User.objects.filter(company__in=leftovers).delete()
    leftovers.order_by("-depth").delete()
