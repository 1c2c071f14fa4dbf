"""The CSV export: R3 headers, rows equal to the usage rows, endpoint details, streamed with a flat
number of queries (R3, R4)."""

import csv
import datetime as dt
import io
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from licensing.entitlements import entitlements_set
from reports.builder import ReportOptions, report_build
from reports.render import report_csv_iter, report_filename
from tests.factories import make_company, make_partner
from tests.reports.fleet_setup import NOV, admin_of
from tests.reports.test_report_builder import R3_HEADERS
from tests.usage.fleet import Machine
from usage.models import CompanyMonthUsage
from usage.rollups import usage_company_rollup
from usage.selectors import NOT_ENABLED

pytestmark = pytest.mark.django_db

ADDONS = ["patch_management", "advanced_threat_security", "edr", "sve", "container_protection"]
FIGURE_COLUMNS = {"Licensed endpoints": "licensed_endpoints", "Endpoint usage": "endpoint_usage",
                  "Patch Management usage": "patch_management", "SVE: VS": "sve_vs", "SVE: VDI": "sve_vdi_hours",
                  "Container Protection Usage": "container_protection", "ATS usage": "ats",
                  "EDR usage": "edr"}


def parse(text: str):
    company_part, _, endpoint_part = text.partition("\r\n\r\n")
    companies = list(csv.DictReader(io.StringIO(company_part)))
    endpoints = list(csv.DictReader(io.StringIO(endpoint_part)))
    return companies, endpoints


def generated_fleet(platform, seed: int, customers: int = 4, per_customer: int = 12):
    """A partner with sub-partners and customers, each with a random add-on selection and fleet."""
    rng = random.Random(seed)
    top = make_partner(parent=platform, name=f"Fleet {seed}")
    entitlements_set(actor=None, company=top, purpose="resell", keys={"endpoint_security", "a_la_carte", *ADDONS})
    middle = make_partner(parent=top, name=f"Fleet {seed} reseller")
    entitlements_set(actor=None, company=middle, purpose="resell", keys={"endpoint_security", "a_la_carte", *ADDONS})
    companies = []
    for i in range(customers):
        parent = top if i % 2 else middle
        company = make_company(parent=parent, name=f"Fleet {seed} customer {i}")
        chosen = {a for a in ADDONS if rng.random() < 0.6}
        entitlements_set(actor=None, company=company, purpose="own", keys={"endpoint_security", "a_la_carte", *chosen})
        for _ in range(per_customer):
            os_type = rng.choice(["workstation", "server"])
            machine = Machine(company, os_type=os_type, machine_type=rng.choice(["physical", "virtual"]),
                              container_host=os_type == "server" and rng.random() < 0.3)
            modules = ["antimalware"] + [m for m in ("patch_management", "hyperdetect", "sandbox_analyzer", "edr",
                                                     "container_protection") if rng.random() < 0.4]
            day = dt.datetime(2026, 11, rng.randint(1, 28), 8, tzinfo=dt.UTC)
            machine.beat(day, modules=modules, scan=rng.choice(["local", "central"]), uptime=rng.randint(0, 86_400))
        companies.append(company)
    for company in (top, middle, *companies):
        usage_company_rollup(company_id=company.pk, months=[NOV])
    return top, middle, companies


def test_R3_csv_for_a_generated_fleet_matches_the_usage_rows(platform):
    top, middle, customers = generated_fleet(platform, seed=7)
    report = report_build(actor=admin_of(top), company=top, month=NOV)
    companies, endpoints = parse("".join(report_csv_iter(report)))
    assert list(companies[0].keys()) == R3_HEADERS
    by_name = {row["Company name"]: row for row in companies}
    assert set(by_name) == {top.name, middle.name, *(c.name for c in customers)}
    for company in (top, middle, *customers):
        usage = CompanyMonthUsage.objects.filter(month=NOV, company__lineage__startswith=company.lineage)
        for header, figure in FIGURE_COLUMNS.items():
            enabled = any(("sve" if figure.startswith("sve") else {"ats": "advanced_threat_security"}.get(
                figure, figure)) in u.enabled for u in usage) or figure in ("licensed_endpoints", "endpoint_usage")
            expected = str(sum(getattr(u, figure) for u in usage)) if enabled else NOT_ENABLED
            assert by_name[company.name][header] == expected, (company.name, header)
    # the endpoint details: one row per active endpoint, and the Yes columns give each customer's figures
    assert len(endpoints) == sum(u.active_endpoints for u in CompanyMonthUsage.objects.filter(
        month=NOV, company__lineage__startswith=top.lineage))
    for company in customers:
        usage = CompanyMonthUsage.objects.get(company=company, month=NOV)
        mine = [e for e in endpoints if e["Company"] == company.name and e["Licensed"] == "Yes"]
        assert len(mine) == usage.licensed_endpoints
        if "patch_management" in usage.enabled:
            assert sum(e["Patch Management"] == "Yes" for e in mine) == usage.patch_management
        if "edr" in usage.enabled:
            assert sum(e["Endpoint Detection and Response"] == "Yes" for e in mine) == usage.edr
        if "advanced_threat_security" in usage.enabled:
            assert sum(e["ATS"] == "Yes" for e in mine) == usage.ats
        if "sve" in usage.enabled:
            vdi = [e for e in mine if e["Security for Virtualized Environments"] == "Yes"
                   and e["Endpoint type"] == "Virtual" and e["OS type"] == "Workstation"]
            assert -(-sum(int(e["Uptime (seconds)"]) for e in vdi) // 3600) == usage.sve_vdi_hours
        modules = {h for h in endpoints[0] if h not in ("Company", "Endpoint", "OS type", "Endpoint type",
                                                         "Uptime (seconds)", "Licensed")}
        assert all(e[h] in ("Yes", "No") for e in mine for h in modules)


def test_R4_csv_is_streamed_with_a_flat_number_of_queries(platform):
    top, _, customers = generated_fleet(platform, seed=11, customers=2, per_customer=3)
    actor = admin_of(top)

    def queries_for_csv():
        report = report_build(actor=actor, company=top, month=NOV)
        stream = report_csv_iter(report)
        assert not isinstance(stream, list | str)  # a generator, consumed line by line
        with CaptureQueriesContext(connection) as captured:
            lines = sum(1 for _ in stream)
        return len(captured.captured_queries), lines

    small_queries, small_lines = queries_for_csv()
    for company in customers:
        for _ in range(25):
            Machine(company).beat(dt.datetime(2026, 11, 5, tzinfo=dt.UTC), modules=["antimalware", "edr"])
        usage_company_rollup(company_id=company.pk, months=[NOV])
    big_queries, big_lines = queries_for_csv()
    assert big_lines == small_lines + 50
    assert big_queries == small_queries


def test_R6_csv_for_exchange_report_and_file_names(platform):
    top, _, _ = generated_fleet(platform, seed=3, customers=1, per_customer=1)
    report = report_build(actor=admin_of(top), company=top, month=NOV, kind="exchange")
    lines = list(csv.reader(io.StringIO("".join(report_csv_iter(report)))))
    assert lines[0] == ["Path", "Company name", "License key", "Month", "Protected mailboxes"]
    assert report_filename(report, "csv") == "exchange-monthly-license-usage-fleet-3-2026-11.csv"
    details = report_build(actor=admin_of(top), company=top, month=NOV,
                           options=ReportOptions(only_endpoint_details=True))
    first = next(csv.reader(io.StringIO(next(iter(report_csv_iter(details))))))
    assert first[:3] == ["Company", "Endpoint", "OS type"]
