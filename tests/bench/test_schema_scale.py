"""How far a schema per company carries (ARCHITECTURE.md, Scale).

Creates BENCH_COMPANIES companies (default 1,000) by cloning the template schema, a sample by
replaying migrations, and measures the catalog per schema and a no-op migrate_schemas over all.
"""

import os

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from tqdm import tqdm

from companies.models import Company, CompanyType
from companies.services import company_create, platform_ensure
from tests.bench.cleanup import drop_schemas

COMPANIES = int(os.environ.get("BENCH_COMPANIES", "1000"))
REPLAY_SAMPLE = min(int(os.environ.get("BENCH_REPLAY_SAMPLE", "30")), COMPANIES)

CATALOG_SIZE_SQL = """
SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pg_catalog' AND c.relkind = 'r'
"""


def _catalog_bytes() -> int:
    with connection.cursor() as cursor:
        cursor.execute("VACUUM")  # settle dead catalog tuples so the size is comparable
        cursor.execute(CATALOG_SIZE_SQL)
        return int(cursor.fetchone()[0])


def _remove_earlier_runs() -> None:
    """An interrupted run leaves its companies behind in the reused database: drop them first."""
    leftovers = Company.objects.filter(lineage__regex=r"^/\d+/\d+/", name__startswith="Clone ") | \
        Company.objects.filter(name__startswith="Replay ") | Company.objects.filter(name="Bench partner")
    drop_schemas(list(leftovers.values_list("schema_name", flat=True)))
    leftovers.order_by("-depth").delete()


@pytest.mark.django_db(transaction=True)
def test_schema_per_company_scale(stopwatch):
    platform = platform_ensure()
    _remove_earlier_runs()
    parent = company_create(parent=platform, name="Bench partner", type=CompanyType.PARTNER)
    created: list[str] = [parent.schema_name]
    try:
        catalog_before = _catalog_bytes()
        with stopwatch.measure("clone"):
            for i in tqdm(range(COMPANIES), desc="companies by template clone", unit="co"):
                created.append(company_create(parent=parent, name=f"Clone {i}",
                                              type=CompanyType.CUSTOMER).schema_name)
        catalog_after = _catalog_bytes()

        with override_settings(TENANT_CREATION_FAKES_MIGRATIONS=False, TENANT_BASE_SCHEMA=False), \
                stopwatch.measure("replay"):
            for i in tqdm(range(REPLAY_SAMPLE), desc="companies by replaying migrations", unit="co"):
                created.append(company_create(parent=parent, name=f"Replay {i}",
                                              type=CompanyType.CUSTOMER).schema_name)

        schemas = Company.objects.count()
        with stopwatch.measure("noop_migrate"):
            call_command("migrate_schemas", tenant=True, verbosity=0, interactive=False)

        with stopwatch.measure("one_column_ddl"), connection.cursor() as cursor:
            for name in tqdm(created, desc="one-column DDL per schema", unit="schema"):
                cursor.execute(f'ALTER TABLE "{name}".telemetry_endpoint ADD COLUMN bench_probe integer')
    finally:
        drop_schemas(created)

    clone = stopwatch.figures["clone"] / COMPANIES
    replay = stopwatch.figures["replay"] / REPLAY_SAMPLE
    per_schema_catalog = (catalog_after - catalog_before) / COMPANIES
    stopwatch.report("Schema per company", [
        ("companies created by cloning", f"{COMPANIES}"),
        ("time per company, template clone (baseline)", f"{clone * 1000:.1f} ms  (1.00x)"),
        ("time per company, replaying migrations", f"{replay * 1000:.1f} ms  ({replay / clone:.2f}x)"),
        ("catalog growth per company schema", f"{per_schema_catalog / 1024:.1f} KiB"),
        ("no-op migrate_schemas over all schemas",
         f"{stopwatch.figures['noop_migrate']:.1f} s for {schemas} schemas, "
         f"{stopwatch.figures['noop_migrate'] / schemas * 1000:.1f} ms per schema "
         f"({stopwatch.figures['noop_migrate'] / schemas / clone:.2f}x)"),
        ("one-column ALTER TABLE over all schemas",
         f"{stopwatch.figures['one_column_ddl']:.2f} s, "
         f"{stopwatch.figures['one_column_ddl'] / len(created) * 1000:.2f} ms per schema"),
    ])
    assert Company.objects.filter(parent=parent).count() == COMPANIES + REPLAY_SAMPLE
