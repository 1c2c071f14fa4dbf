"""The lasting rows of the telemetry path (endpoint-day, endpoint-month, the rollup watermark) are
company-scoped rows in the public schema (docs/decisions.md, "Lasting rows out of the company
schemas"): every reader names the company (C6), and an installation upgraded from rows kept in each
company's schema keeps every row (usage migration 0006)."""

import datetime as dt
import importlib
import uuid

import pytest
from django.db import connection
from django_tenants.utils import tenant_context

from licensing.seats import seat_assign
from tests.usage.fleet import Machine
from tests.usage.test_rollups import ALL_ADDONS, DAY, NOV, company_with, usage
from usage.models import EndpointDay, EndpointMonth, RollupWatermark
from usage.rollups import heartbeats_pending, usage_company_rollup
from usage.telemetry.models import Endpoint

pytestmark = pytest.mark.django_db


def test_C6_U1_the_same_endpoint_id_in_two_companies_counts_apart(platform):
    """Endpoint ids come from the agent API, but an import or a cloned disk can bring the same id into
    two companies: each company's rows and figures are its own, whatever the other runs."""
    a = company_with(platform, *ALL_ADDONS)
    b = company_with(platform, *ALL_ADDONS)
    shared = Machine(a)
    with tenant_context(b):
        Endpoint.objects.create(id=shared.id, hardware_id="clone", hostname="clone", os_family="windows",
                                os_type="workstation", machine_type="physical")
    seat_assign(company=b, endpoint_id=shared.id)
    clone = Machine(b)
    clone.id = shared.id
    for hour in range(3):
        shared.beat(DAY + dt.timedelta(hours=hour), modules=("antimalware", "patch_management"), uptime=100)
    clone.beat(DAY, uptime=7)

    assert usage(a).patch_management == 1
    assert heartbeats_pending(company=b) == 1  # a's rollup merged nothing of b's
    assert not EndpointDay.objects.filter(company=b).exists()
    figures_b = usage(b)
    assert (figures_b.endpoint_usage, figures_b.patch_management) == (1, 0)
    days = {row.company_id: (row.heartbeats, row.uptime_seconds)
            for row in EndpointDay.objects.filter(endpoint_id=shared.id, day=DAY.date())}
    assert days == {a.pk: (3, 300), b.pk: (1, 7)}
    assert set(EndpointMonth.objects.filter(endpoint_id=shared.id, month=NOV).values_list("company_id", flat=True)) \
        == {a.pk, b.pk}
    assert usage(a).patch_management == 1  # b's rows never reach a's figures either


def test_T4_the_watermark_is_the_companys_own(platform):
    a = company_with(platform, *ALL_ADDONS)
    b = company_with(platform, *ALL_ADDONS)
    Machine(a).beat(DAY)
    Machine(b).beat(DAY).beat(DAY + dt.timedelta(hours=1))
    usage_company_rollup(company_id=a.pk)
    assert RollupWatermark.objects.filter(company=b).count() == 0
    assert (heartbeats_pending(company=a), heartbeats_pending(company=b)) == (0, 2)
    usage_company_rollup(company_id=b.pk)
    assert heartbeats_pending(company=b) == 0
    assert EndpointDay.objects.get(company=b).heartbeats == 2
    assert EndpointDay.objects.get(company=a).heartbeats == 1


OLD_TABLES = """
CREATE TABLE {s}.telemetry_endpointday (id bigserial PRIMARY KEY, endpoint_id uuid NOT NULL, day date NOT NULL,
    modules int NOT NULL, xdr_sensors smallint NOT NULL, used_central_scan bool NOT NULL,
    uptime_seconds bigint NOT NULL, os_family varchar(16) NOT NULL, os_type varchar(16) NOT NULL,
    machine_type varchar(16) NOT NULL,
    container_host bool NOT NULL, heartbeats int NOT NULL, first_seen_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL);
CREATE TABLE {s}.telemetry_endpointmonth (LIKE {s}.telemetry_endpointday INCLUDING DEFAULTS);
ALTER TABLE {s}.telemetry_endpointmonth RENAME COLUMN day TO month;
CREATE TABLE {s}.telemetry_rollupwatermark (id smallint PRIMARY KEY, seq bigint NOT NULL);
"""
OLD_ROW = ("(%s, %s, 5, 2, true, 3600, 'windows', 'workstation', 'virtual', false, 4, "
           "'2026-10-03T01:00:00Z', '2026-10-03T05:00:00Z')")


def test_T4_U12_an_upgrade_keeps_every_lasting_row_of_the_company_schemas(platform):
    """usage 0006 copies each company schema's endpoint-day, endpoint-month and watermark rows into the
    company-scoped rows before telemetry 0004 drops the old tables; a company whose schema never had
    them (created after the change) is passed over."""
    migration = importlib.import_module("usage.migrations.0006_lasting_rows_public")
    old = [company_with(platform, *ALL_ADDONS) for _ in range(2)]
    newer = company_with(platform, *ALL_ADDONS)
    endpoint = uuid.uuid4()
    with connection.cursor() as cursor:
        for n, company in enumerate(old):
            schema = connection.ops.quote_name(company.schema_name)
            cursor.execute(OLD_TABLES.format(s=schema))
            cursor.execute(f"INSERT INTO {schema}.telemetry_endpointday (endpoint_id, day, modules, xdr_sensors, "  # noqa: S608
                           "used_central_scan, uptime_seconds, os_family, os_type, machine_type, container_host, "
                           f"heartbeats, first_seen_at, last_seen_at) VALUES {OLD_ROW}, {OLD_ROW}",
                           [endpoint, dt.date(2026, 10, 3), endpoint, dt.date(2026, 10, 4)])
            cursor.execute(f"INSERT INTO {schema}.telemetry_endpointmonth (endpoint_id, month, modules, xdr_sensors, "  # noqa: S608
                           "used_central_scan, uptime_seconds, os_family, os_type, machine_type, container_host, "
                           f"heartbeats, first_seen_at, last_seen_at) VALUES {OLD_ROW}",
                           [endpoint, dt.date(2026, 10, 1)])
            cursor.execute(f"INSERT INTO {schema}.telemetry_rollupwatermark VALUES (1, %s)", [40 + n])  # noqa: S608
    with connection.schema_editor() as editor:
        migration.copy_from_company_schemas(None, editor)

    for n, company in enumerate(old):
        days = EndpointDay.objects.filter(company=company).order_by("day")
        assert [(d.endpoint_id, d.day, d.uptime_seconds, d.heartbeats, d.machine_type) for d in days] == [
            (endpoint, dt.date(2026, 10, 3), 3600, 4, "virtual"), (endpoint, dt.date(2026, 10, 4), 3600, 4, "virtual")]
        month = EndpointMonth.objects.get(company=company)
        assert (month.month, month.modules, month.used_central_scan) == (dt.date(2026, 10, 1), 5, True)
        assert RollupWatermark.objects.get(company=company).seq == 40 + n
    assert not EndpointDay.objects.filter(company=newer).exists()
    assert not RollupWatermark.objects.filter(company=newer).exists()
