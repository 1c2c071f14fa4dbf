"""Monthly License Usage report at partner scale (issue 6): the time to produce the CSV and the PDF.

Creates one partner with GZ_BENCH_REPORT_COMPANIES customers (default 1,000) holding
GZ_BENCH_REPORT_ENDPOINTS endpoints between them (default 100,000) for the current month. The data
is written straight into each company's schema with COPY (endpoints, endpoint-day and endpoint-month
rows: what the rollup leaves behind), seats in bulk, then usage_company_rollup computes each
company's usage row from them, as the worker does. Then it times, for the partner's report:

- the baseline: a plain COPY ... TO STDOUT (CSV) through psycopg2 copy_expert of the same rows (the
  company usage rows and every endpoint-month row joined to its endpoint), the least any CSV export
  could cost;
- the product's CSV: report_build + reports.render.report_csv_iter, joined (what /reports/export.csv
  streams), as a ratio of the baseline and in rows per second;
- the product's PDF: reports.render.report_pdf (WeasyPrint; company table + first 2,000 endpoints).

Printed, never asserted on time; it checks that the CSV carries every company and endpoint row.
"""

import datetime as dt
import io
import os
import random
import uuid

import pytest
from django.db import connection
from django.utils import timezone
from tqdm import tqdm

from companies.models import Company, CompanyType
from companies.services import company_create
from licensing.entitlements import entitlements_set
from licensing.models import SeatAssignment, SeatState
from licensing.seats import pool_of
from reports.builder import report_build
from reports.render import PDF_ENDPOINT_LIMIT, report_csv_iter, report_pdf
from tests.bench.cleanup import remove_earlier_runs
from tests.factories import make_user
from usage.models import CompanyMonthUsage
from usage.modules import MODULE_BITS, XDR_SENSOR_BITS
from usage.rollups import month_start, usage_company_rollup

COMPANIES = int(os.environ.get("GZ_BENCH_REPORT_COMPANIES", "1000"))
ENDPOINTS = int(os.environ.get("GZ_BENCH_REPORT_ENDPOINTS", "100000"))
NAME = "Report bench"
ADDONS = {"patch_management", "advanced_threat_security", "edr", "sve", "container_protection"}
OWN = {"endpoint_security", "a_la_carte", *ADDONS}

PROFILES = [("windows", "workstation", "physical"), ("windows", "workstation", "physical"),
            ("windows", "server", "physical"), ("linux", "server", "virtual"), ("windows", "workstation", "virtual"),
            ("macos", "workstation", "physical")]
ENDPOINT_COPY = ('COPY "{schema}".telemetry_endpoint (id, hardware_id, hostname, os_family, os_type, machine_type, '
                 "registered_at, last_seen_at) FROM STDIN")
LASTING = ("company_id, endpoint_id, {when}, modules, xdr_sensors, used_central_scan, uptime_seconds, os_family, "
           "os_type, machine_type, container_host, heartbeats, first_seen_at, last_seen_at")
DAY_COPY = "COPY public.usage_endpointday (" + LASTING.format(when="day") + ") FROM STDIN"
MONTH_COPY = "COPY public.usage_endpointmonth (" + LASTING.format(when="month") + ") FROM STDIN"
# the baseline: the same rows, straight from PostgreSQL to CSV
BASELINE_COMPANIES = """COPY (
SELECT c.lineage, c.name, c.type, c.license_key, u.product_type, u.month, u.licensed_endpoints, u.endpoint_usage,
       u.patch_management, u.sve_vs, u.sve_vdi_hours, u.container_protection, u.ats, u.edr, u.mdr_foundations,
       u.reserved_seats, u.end_date, u.auto_renew, u.minimum_usage
FROM companies_company c JOIN usage_companymonthusage u ON u.company_id = c.id AND u.month = '{month}'
WHERE c.lineage LIKE '{lineage}%' ORDER BY c.lineage) TO STDOUT WITH (FORMAT csv, HEADER)"""
BASELINE_ENDPOINT = ("SELECT {company}::bigint AS company_id, e.hostname, m.os_type, m.machine_type, m.uptime_seconds, "
                     "m.modules, m.xdr_sensors, m.used_central_scan FROM public.usage_endpointmonth m "
                     "JOIN \"{schema}\".telemetry_endpoint e ON e.id = m.endpoint_id "
                     "WHERE m.company_id = {company} AND m.month = '{month}'")


def _fill(company: Company, count: int, month: dt.date, now: dt.datetime, rng: random.Random) -> None:
    """`count` endpoints active this month: endpoint, one endpoint-day and the endpoint-month row, a
    seat (most licensed, some on trial)."""
    start = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
    span = max((now - start).total_seconds(), 3600)
    endpoints, days, months, seats = [], [], [], []
    pool = pool_of(company)
    for _ in range(count):
        endpoint_id = uuid.uuid4()
        os_family, os_type, machine_type = rng.choice(PROFILES)
        modules = MODULE_BITS["antimalware"] | MODULE_BITS["firewall"]
        for key, chance in (("patch_management", 0.5), ("edr", 0.4), ("hyperdetect", 0.3), ("sandbox_analyzer", 0.1),
                            ("container_protection", 0.05)):
            if rng.random() < chance:
                modules |= MODULE_BITS[key]
        container = os_type == "server" and bool(modules & MODULE_BITS["container_protection"])
        central = "t" if machine_type == "virtual" else "f"
        sensors = XDR_SENSOR_BITS["network"] if rng.random() < 0.02 else 0
        seen = start + dt.timedelta(seconds=rng.random() * span)
        uptime = rng.randint(600, 86_400)
        endpoints.append(f"{endpoint_id}\thw-{endpoint_id.hex}\thost-{endpoint_id.hex[:10]}\t{os_family}\t{os_type}\t"
                         f"{machine_type}\t{start.isoformat()}\t{seen.isoformat()}\n")
        lasting = (f"{company.pk}\t{endpoint_id}\t{{when}}\t{modules}\t{sensors}\t{central}\t{uptime}\t"
                   f"{os_family}\t{os_type}\t{machine_type}\t{'t' if container else 'f'}\t4\t"
                   f"{seen.isoformat()}\t{seen.isoformat()}\n")
        days.append(lasting.format(when=seen.date().isoformat()))
        months.append(lasting.format(when=month.isoformat()))
        licensed = rng.random() < 0.95
        seats.append(SeatAssignment(company=company, endpoint_id=endpoint_id, pool=pool,
                                    state=SeatState.LICENSED if licensed else SeatState.TRIAL,
                                    trial_ends_on=None if licensed else (now + dt.timedelta(days=20)).date(),
                                    first_seen_at=seen, licensed_at=start - dt.timedelta(days=1) if licensed else None))
    with connection.cursor() as cursor:
        for sql, lines in ((ENDPOINT_COPY, endpoints), (DAY_COPY, days), (MONTH_COPY, months)):
            cursor.cursor.copy_expert(sql.format(schema=company.schema_name), io.StringIO("".join(lines)))
    SeatAssignment.objects.bulk_create(seats)


def _baseline(partner: Company, companies: list[Company], month: dt.date) -> tuple[int, int]:
    """COPY the same rows to CSV; returns (bytes, rows)."""
    out = io.StringIO()
    union = " UNION ALL ".join(BASELINE_ENDPOINT.format(company=c.pk, schema=c.schema_name, month=month)
                               for c in companies)
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(BASELINE_COMPANIES.format(month=month, lineage=partner.lineage), out)
        cursor.cursor.copy_expert(f"COPY (SELECT * FROM ({union}) x ORDER BY x.company_id, x.hostname) "
                                  "TO STDOUT WITH (FORMAT csv, HEADER)", out)
    text = out.getvalue()
    return len(text.encode()), text.count("\n")


@pytest.mark.django_db(transaction=True)
def test_report_csv_and_pdf_at_partner_scale(platform, stopwatch):
    remove_earlier_runs(NAME)
    rng = random.Random(6)  # noqa: S311 - test data
    now = timezone.now()
    month = month_start(now)
    partner = company_create(parent=platform, name=f"{NAME} partner", type=CompanyType.PARTNER)
    entitlements_set(actor=None, company=partner, purpose="resell", keys=OWN)
    companies: list[Company] = []
    try:
        per_company, extra = divmod(ENDPOINTS, COMPANIES)
        with stopwatch.measure("build"):
            for i in tqdm(range(COMPANIES), desc="companies + endpoints (COPY)", unit="co"):
                company = company_create(parent=partner, name=f"{NAME} customer {i:04d}", type=CompanyType.CUSTOMER)
                entitlements_set(actor=None, company=company, purpose="own",
                                 keys=OWN if i % 3 else {"endpoint_security", "a_la_carte", "patch_management"})
                companies.append(company)
                _fill(company, per_company + (1 if i < extra else 0), month, now, rng)
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE public.usage_endpointday, public.usage_endpointmonth")
            for company in tqdm([partner, *companies], desc="rollup (usage rows)", unit="co"):
                usage_company_rollup(company_id=company.pk, months=[month])
        admin = make_user(company=partner)

        _baseline(partner, companies, month)  # warm the caches the same way for both
        with stopwatch.measure("baseline"):
            baseline_bytes, baseline_rows = _baseline(partner, companies, month)
        with stopwatch.measure("csv"):
            report = report_build(actor=admin, company=partner, month=month)
            csv_text = "".join(report_csv_iter(report))
        with stopwatch.measure("pdf"):
            report = report_build(actor=admin, company=partner, month=month)
            pdf = report_pdf(report)
        # diagnosis: the endpoint statements (one UNION ALL per 200 schemas) cost past jit_above_cost, and
        # PostgreSQL then spends seconds compiling thousands of functions per statement; the same report
        # with JIT off for this session shows what that costs
        with connection.cursor() as cursor:
            cursor.execute("SET jit = off")
        try:
            with stopwatch.measure("csv_nojit"):
                report = report_build(actor=admin, company=partner, month=month)
                assert "".join(report_csv_iter(report)) == csv_text
            with stopwatch.measure("pdf_nojit"):
                report_pdf(report_build(actor=admin, company=partner, month=month))
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET jit")

        # what was timed is the whole report: every company row and every endpoint row
        company_part, _, endpoint_part = csv_text.partition("\r\n\r\n")
        company_lines = company_part.split("\r\n")  # header, the partner, one line per company
        endpoint_rows = endpoint_part.count("\r\n") - 1  # less the header
        assert len(company_lines) == COMPANIES + 2 and endpoint_rows == ENDPOINTS
        licensed = SeatAssignment.objects.filter(company__in=companies, state=SeatState.LICENSED).count()
        partner_row = company_lines[1].split(",")
        assert int(partner_row[7]) == licensed  # Licensed endpoints: the subtree's sum (U13)
        assert CompanyMonthUsage.objects.filter(month=month, company__in=companies).count() == COMPANIES
        assert pdf.startswith(b"%PDF")
    finally:
        remove_earlier_runs(NAME)

    figures = stopwatch.figures
    rows = COMPANIES + 1 + ENDPOINTS
    baseline, csv_seconds, pdf_seconds = figures["baseline"], figures["csv"], figures["pdf"]
    stopwatch.report("Monthly License Usage report of one partner", [
        ("setup", f"1 partner, {COMPANIES:,} companies, {ENDPOINTS:,} endpoints, {os.cpu_count()} cores; "
                  f"data built in {figures['build']:.1f} s"),
        ("COPY of the same rows to CSV (baseline)", f"{baseline:.2f} s  (1.00x; {baseline_rows:,} lines, "
                                                    f"{baseline_bytes / 2**20:.1f} MiB)"),
        ("report CSV (report_build + report_csv_iter)",
         f"{csv_seconds:.2f} s  ({csv_seconds / baseline:.2f}x of COPY; {len(csv_text.encode()) / 2**20:.1f} MiB)"),
        ("CSV throughput", f"{rows / csv_seconds:,.0f} rows/s ({rows:,} rows: {COMPANIES + 1:,} company rows + "
                           f"{ENDPOINTS:,} endpoint rows); COPY {baseline_rows / baseline:,.0f} lines/s"),
        ("report PDF (report_build + report_pdf)",
         f"{pdf_seconds:.2f} s  ({len(pdf) / 2**20:.1f} MiB; {COMPANIES + 1:,} company rows, first "
         f"{min(PDF_ENDPOINT_LIMIT, ENDPOINTS):,} endpoints; {pdf_seconds / csv_seconds:.2f}x the CSV)"),
        ("report CSV, PostgreSQL JIT off (session)",
         f"{figures['csv_nojit']:.2f} s  ({figures['csv_nojit'] / baseline:.2f}x of COPY; "
         f"{rows / figures['csv_nojit']:,.0f} rows/s)"),
        ("report PDF, PostgreSQL JIT off (session)", f"{figures['pdf_nojit']:.2f} s"),
    ])
