"""Rollup cost and telemetry storage (ARCHITECTURE.md, Telemetry path).

Creates BENCH_ROLLUP_COMPANIES companies (default 40; the issue's target run is 1,000) and COPYs
BENCH_ROLLUP_HEARTBEATS heartbeats (default 200,000; target 1,000,000) into their schemas, with
licensed seats, in two shapes (BENCH_ROLLUP_SHAPES): "cadence", each endpoint reporting every 15
minutes as agents do, and "spread", the same number of heartbeats at random over the month so far
(about one endpoint-day row per two heartbeats: the most rows they can make). Then it times:

- the baseline: ONE hand-written SQL aggregate over the same rows (per company: endpoints, endpoints
  with antimalware, with Patch Management, with EDR, VDI seconds), the least any rollup could do.
  PostgreSQL runs it as a parallel query (a Parallel Append over the schemas, on every core), so it
  is also timed on one core (max_parallel_workers_per_gather = 0), the fair measure for one worker
  process; the worker pool is set against the parallel one;
- the product's rollup: usage_rollup_companies over every company in batches, one after the other,
  as one worker process runs the fan-out's tasks (heartbeats -> endpoint-day -> endpoint-month ->
  company-month, the watermarks moved); then the same batches queued at once to a real Celery
  worker with BENCH_ROLLUP_WORKERS pool processes (default 2, as `make run` starts it);

each on new connections (cold: the first run of a worker, measured once) and again on the same ones
(warm: BENCH_ROLLUP_WARM_RUNS times, default 3, baseline and rollup alike, the medians compared: on two
shared cores one measurement of the 1-second aggregate varies by half, and the ratio with it). It
prints the ratios (target: rollup within 3x of the aggregate), what writing the endpoint-day rows
alone costs, checks that rollup and aggregate count the same, and prints the bytes of stored
telemetry per endpoint per month: raw heartbeats (kept for the open month plus the 35-day late
window) and the lasting endpoint-day and endpoint-month rows.
"""

import datetime as dt
import io
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager

import pytest
from django.db import connection
from django.utils import timezone
from tqdm import tqdm

from companies.models import Company, CompanyType
from companies.services import company_create
from licensing.entitlements import entitlements_set
from licensing.models import SeatAssignment, SeatState
from licensing.seats import pool_of
from tests.bench.cleanup import LASTING, lasting_rows_delete, remove_earlier_runs
from tests.conftest import ROOT, worker_database_url
from usage.models import CompanyMonthUsage
from usage.modules import MODULE_BITS, SCAN_MODES, XDR_SENSOR_BITS
from usage.rollups import BATCH_SIZE, batches, month_start, usage_rollup_companies

COMPANIES = int(os.environ.get("BENCH_ROLLUP_COMPANIES", "40"))
HEARTBEATS = int(os.environ.get("BENCH_ROLLUP_HEARTBEATS", "200000"))
ENDPOINTS = int(os.environ.get("BENCH_ROLLUP_ENDPOINTS", "25"))  # per company
HEARTBEAT_INTERVAL_MINUTES = 15  # the agent's default cadence
WORKERS = int(os.environ.get("BENCH_ROLLUP_WORKERS", "2"))  # `make run` starts the worker with --concurrency 2
SHAPES = os.environ.get("BENCH_ROLLUP_SHAPES", "cadence,spread").split(",")
WARM_RUNS = max(1, int(os.environ.get("BENCH_ROLLUP_WARM_RUNS", "3")))
NAME = "Rollup bench"

COPY_SQL = ('COPY "{schema}".telemetry_heartbeat (id, endpoint_id, observed_at, received_at, os_family, os_type, '
            "machine_type, container_host, modules, scan_mode, uptime_seconds, xdr_sensors) FROM STDIN")
BIT_AM, BIT_PM, BIT_EDR = MODULE_BITS["antimalware"], MODULE_BITS["patch_management"], MODULE_BITS["edr"]
# one aggregate over every schema's raw rows: per endpoint first, then per company
BASELINE_SQL = """
SELECT company, count(*), count(*) FILTER (WHERE modules & {am} <> 0), count(*) FILTER (WHERE modules & {pm} <> 0),
       count(*) FILTER (WHERE modules & {edr} <> 0), COALESCE(sum(uptime) FILTER (WHERE vdi), 0)
FROM ({per_endpoint}) e GROUP BY company
"""
PER_ENDPOINT_SQL = """
SELECT {company} AS company, endpoint_id, bit_or(modules) AS modules, sum(uptime_seconds) AS uptime,
       bool_or(machine_type = 'virtual' AND os_type = 'workstation' AND os_family <> 'linux' AND scan_mode = {central})
           AS vdi
FROM "{schema}".telemetry_heartbeat GROUP BY endpoint_id
"""
SIZE_SQL = "SELECT sum(pg_total_relation_size(%s::regclass))"


PROFILES = [("windows", "workstation", "physical"), ("linux", "server", "virtual"),
            ("windows", "workstation", "virtual"), ("windows", "server", "physical")]


def _observed(shape: str, n: int, start: dt.datetime, end: dt.datetime, rng: random.Random) -> dt.datetime:
    """When heartbeat `n` of a company was observed. "cadence": each endpoint reports every
    HEARTBEAT_INTERVAL_MINUTES up to now, as agents do (about one endpoint-day row per 96
    heartbeats); "spread": at random times over the month so far (about one row per two
    heartbeats: the most endpoint-day rows the same heartbeats can make)."""
    if shape == "spread":
        return start + dt.timedelta(seconds=rng.random() * (end - start).total_seconds())
    beat = n // ENDPOINTS
    return max(start, end - dt.timedelta(minutes=HEARTBEAT_INTERVAL_MINUTES * beat, seconds=rng.random() * 60))


def _fill(company: Company, per_company: int, start: dt.datetime, end: dt.datetime, rng: random.Random,
          shape: str = "spread") -> int:
    """ENDPOINTS endpoints with seats, and `per_company` heartbeats COPYed in; returns rows written."""
    endpoints = []
    for _ in range(ENDPOINTS):
        os_family, os_type, machine_type = rng.choice(PROFILES)
        modules = BIT_AM | MODULE_BITS["firewall"]
        for key, chance in (("patch_management", 0.5), ("edr", 0.4), ("hyperdetect", 0.3)):
            if rng.random() < chance:
                modules |= MODULE_BITS[key]
        endpoints.append((uuid.uuid4(), os_family, os_type, machine_type, modules,
                          SCAN_MODES["central" if machine_type == "virtual" else "local"]))
    pool = pool_of(company)
    SeatAssignment.objects.bulk_create([
        SeatAssignment(company=company, endpoint_id=e[0], pool=pool, state=SeatState.LICENSED, first_seen_at=start,
                       licensed_at=start - dt.timedelta(days=1)) for e in endpoints])
    received = timezone.now().isoformat()
    lines = []
    for n in range(per_company):
        endpoint_id, os_family, os_type, machine_type, modules, scan = endpoints[n % ENDPOINTS]
        observed = _observed(shape, n, start, end, rng).isoformat()
        # a module is sometimes missing from a heartbeat: the month's union must still find it
        mask = modules if rng.random() < 0.9 else BIT_AM
        sensors = XDR_SENSOR_BITS["network"] if n % 50 == 0 else 0
        lines.append(f"{uuid.uuid4()}\t{endpoint_id}\t{observed}\t{received}\t{os_family}\t{os_type}\t"
                     f"{machine_type}\tf\t{mask}\t{scan}\t900\t{sensors}\n")
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(COPY_SQL.format(schema=company.schema_name), io.StringIO("".join(lines)))
    return per_company


def _baseline_sql(companies: list[Company]) -> str:
    union = " UNION ALL ".join(PER_ENDPOINT_SQL.format(company=c.pk, schema=c.schema_name,
                                                       central=SCAN_MODES["central"]) for c in companies)
    return BASELINE_SQL.format(am=BIT_AM, pm=BIT_PM, edr=BIT_EDR, per_endpoint=union)


def _baseline(companies: list[Company], *, parallel: bool = True) -> tuple[float, dict[int, tuple]]:
    """Seconds for the hand-written aggregate, as PostgreSQL plans it (`parallel`) or on one core."""
    with connection.cursor() as cursor:
        if not parallel:
            cursor.execute("SET max_parallel_workers_per_gather = 0")
        try:
            started = time.perf_counter()
            cursor.execute(_baseline_sql(companies))
            rows = cursor.fetchall()
            seconds = time.perf_counter() - started
        finally:
            cursor.execute("RESET max_parallel_workers_per_gather")
    return seconds, {row[0]: row[1:] for row in rows}


def _baseline_workers(companies: list[Company]) -> int:
    """The parallel workers PostgreSQL plans for the aggregate (besides the process that runs it)."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + _baseline_sql(companies))
        plan = cursor.fetchone()[0]
    found = re.findall(r'"Workers Planned": (\d+)', json.dumps(plan))
    return max(map(int, found), default=0)


def _sizes(companies: list[Company]) -> dict[str, tuple[int, int]]:
    """Table -> (bytes with indexes, rows): the raw heartbeats over every bench schema, the lasting
    rows in the public schema (only the bench's companies have any)."""
    sizes = {}
    with connection.cursor() as cursor:
        total_bytes = total_rows = 0
        for company in companies:
            name = f'"{company.schema_name}".telemetry_heartbeat'
            cursor.execute(f"VACUUM ANALYZE {name}")
            cursor.execute(SIZE_SQL, [name])
            total_bytes += int(cursor.fetchone()[0])
            cursor.execute(f"SELECT count(*) FROM {name}")  # noqa: S608 - our own schema names
            total_rows += cursor.fetchone()[0]
        sizes["heartbeat"] = (total_bytes, total_rows)
        for table in ("endpointday", "endpointmonth"):
            cursor.execute(f"VACUUM ANALYZE public.usage_{table}")
            cursor.execute(SIZE_SQL, [f"public.usage_{table}"])
            total_bytes = int(cursor.fetchone()[0])
            cursor.execute(f"SELECT count(*) FROM public.usage_{table}")  # noqa: S608 - our own table names
            sizes[table] = (total_bytes, cursor.fetchone()[0])
    return sizes


@contextmanager
def _worker_pool():
    """The product's worker: a Celery worker process with WORKERS pool processes (as `make run`
    starts it), on this database and a queue of its own; yields the queue."""
    from gz_console.celery import app

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": worker_database_url(), "DJANGO_SETTINGS_MODULE": "gz_console.settings_test"}
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "gz_console", "worker", "--concurrency",
                               str(WORKERS), "-Q", queue, "-n", f"{queue}@%h", "-l", "WARNING", "--without-gossip",
                               "--without-mingle"], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not any(queue in name for reply in app.control.ping(timeout=0.5) for name in reply):
            assert time.monotonic() < deadline and worker.poll() is None, "the bench worker did not start"
        yield queue
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def _rollup_by_workers(companies: list[Company], month: dt.date, queue: str) -> float:
    """Every batch queued at once, as the fan-out does, and the seconds until the last is done."""
    from usage.tasks import rollup_companies

    started = time.perf_counter()
    results = [rollup_companies.apply_async(args=[batch, [month.isoformat()]], queue=queue)
               for batch in batches([c.pk for c in companies])]
    for result in results:
        result.get(timeout=600)
    return time.perf_counter() - started


def _rollup_all(companies: list[Company], month: dt.date) -> None:
    """As the fan-out's tasks would, one after the other on one worker: batches of BATCH_SIZE."""
    for batch in tqdm(batches([c.pk for c in companies]), desc="rollup", unit="batch", leave=False):
        usage_rollup_companies(company_ids=batch, months=[month])


def _forget_rollups(companies: list[Company]) -> None:
    """Back to "nothing rolled up" without TRUNCATE, which would also cool the connection's caches. The
    tables are vacuumed after the DELETE, as they are after a first fill: the product never deletes these
    rows, and a merge into tables full of dead index entries would measure the bench's reset, not the
    rollup."""
    tables = (*LASTING, "usage_companymonthusage")
    lasting_rows_delete([c.pk for c in companies], tables=tables)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM {', '.join(f'public.{table}' for table in tables)}")


def _write_floor(companies: list[Company]) -> float:
    """Seconds to INSERT just the endpoint-day rows the rollup wrote, with the same key, into a table
    like theirs: what writing the lasting record costs before any counting."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE bench_days AS SELECT * FROM public.usage_endpointday "
                       "WHERE company_id = ANY(%s)", [[c.pk for c in companies]])
        cursor.execute("CREATE TABLE public.bench_floor (LIKE public.usage_endpointday INCLUDING ALL)")
        try:
            started = time.perf_counter()
            cursor.execute("INSERT INTO public.bench_floor SELECT * FROM bench_days")
            return time.perf_counter() - started
        finally:
            cursor.execute("DROP TABLE public.bench_floor")
            cursor.execute("DROP TABLE bench_days")


PHASES = [("_merge", "merge: heartbeats -> endpoint-day and -month, watermarks moved"),
          ("_figures_compute", "figures: one aggregate over the endpoint-month rows"),
          ("_store", "storing the company-month rows"),
          ("_watermarks", "reading the watermarks under the ingest locks"),
          ("_Terms", "licences, end dates, retention tiers")]


@contextmanager
def _phases(monkeypatch):
    """Seconds spent in each step of usage.rollups while the block runs (wall time, SQL included)."""
    from usage import rollups

    spent = dict.fromkeys([name for name, _ in PHASES], 0.0)

    def timed(name, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        return wrapper

    with monkeypatch.context() as patch:
        for name, _ in PHASES:
            patch.setattr(rollups, name, timed(name, getattr(rollups, name)))
        yield spent


def _spread(seconds: list[float]) -> str:
    """ "(median of N: low-high s)" after a warm median, or nothing for one run."""
    return f" (median of {len(seconds)}: {min(seconds):.2f}-{max(seconds):.2f} s)" if len(seconds) > 1 else ""


def _check(companies: list[Company], month: dt.date, expected: dict[int, tuple]) -> None:
    figures = {row.company_id: row for row in CompanyMonthUsage.objects.filter(company__in=companies, month=month)}
    for company in companies:
        endpoints, antimalware, patch, edr, _vdi_seconds = expected[company.pk]
        row = figures[company.pk]
        assert (row.active_endpoints, row.licensed_endpoints, row.patch_management, row.edr) == \
            (endpoints, endpoints, patch, edr)
        assert row.endpoint_usage == antimalware  # SVE and containers not enabled: no deduction


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("shape", SHAPES)
def test_rollup_against_hand_written_aggregate(platform, stopwatch, shape, monkeypatch):
    remove_earlier_runs(NAME)
    rng = random.Random(5)  # noqa: S311 - test data
    now = timezone.now()
    month = month_start(now)
    start = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
    end = max(now, start + dt.timedelta(hours=1))
    companies: list[Company] = []
    try:
        for i in tqdm(range(COMPANIES), desc="companies", unit="co"):
            company = company_create(parent=platform, name=f"{NAME} {i}", type=CompanyType.CUSTOMER)
            companies.append(company)
            entitlements_set(actor=None, company=company, purpose="own",
                             keys={"endpoint_security", "a_la_carte", "patch_management", "edr"})
        per_company = max(ENDPOINTS, HEARTBEATS // COMPANIES)
        rows = sum(_fill(c, per_company, start, end, rng, shape)
                   for c in tqdm(companies, desc=f"COPY heartbeats ({shape})", unit="co"))
        with connection.cursor() as cursor:
            for company in companies:
                cursor.execute(f'ANALYZE "{company.schema_name}".telemetry_heartbeat')

        # cold: a new connection, as a worker's first run; warm: the same again with its caches
        connection.close()
        base_cold, expected = _baseline(companies)
        with stopwatch.measure("rollup cold"):
            _rollup_all(companies, month)
        _check(companies, month, expected)
        with stopwatch.measure("rerun"):  # nothing pending: the incremental path
            _rollup_all(companies, month)
        bases, serial_bases, warms = [], [], []
        base_workers = _baseline_workers(companies)
        with _phases(monkeypatch) as spent:
            for _ in range(WARM_RUNS):
                _forget_rollups(companies)
                bases.append(_baseline(companies)[0])
                serial_bases.append(_baseline(companies, parallel=False)[0])
                started = time.perf_counter()
                _rollup_all(companies, month)
                warms.append(time.perf_counter() - started)
                _check(companies, month, expected)
        # the same work as the product runs it: the fan-out's batches taken by the worker's pool
        with _worker_pool() as queue:
            _forget_rollups(companies)
            pool_cold = _rollup_by_workers(companies, month, queue)
            _check(companies, month, expected)
            pool_warms = []
            for _ in range(WARM_RUNS):
                _forget_rollups(companies)
                pool_warms.append(_rollup_by_workers(companies, month, queue))
                _check(companies, month, expected)
        floor = _write_floor(companies)
        sizes = _sizes(companies)
    finally:
        remove_earlier_runs(NAME)

    cold = stopwatch.figures["rollup cold"]
    base_warm, warm, pool_warm = statistics.median(bases), statistics.median(warms), statistics.median(pool_warms)
    base_serial = statistics.median(serial_bases)
    spent = {name: seconds / WARM_RUNS for name, seconds in spent.items()}  # per run, beside the median run
    endpoints_total = COMPANIES * ENDPOINTS
    hb_bytes, hb_rows = sizes["heartbeat"]
    day_bytes, day_rows = sizes["endpointday"]
    month_bytes, month_rows = sizes["endpointmonth"]
    per_heartbeat = hb_bytes / hb_rows
    per_day_row = day_bytes / day_rows
    per_month_row = month_bytes / month_rows
    beats_per_month = 30 * 24 * 60 // HEARTBEAT_INTERVAL_MINUTES
    raw_month = per_heartbeat * beats_per_month
    lasting_month = per_day_row * 30 + per_month_row
    stopwatch.report(f"Rollup, {shape} heartbeats (heartbeats -> endpoint-day -> endpoint-month -> company-month)", [
        ("setup", f"{COMPANIES} companies, {endpoints_total} endpoints, {rows:,} heartbeats -> {day_rows:,} "
                  f"endpoint-days, {os.cpu_count()} cores, batches of {BATCH_SIZE}"),
        ("hand-written aggregate (baseline)",
         f"cold {base_cold:.2f} s, warm {base_warm:.2f} s{_spread(bases)}  (1.00x; planned with {base_workers} "
         "parallel workers besides its own process)"),
        ("the aggregate on one core", f"warm {base_serial:.2f} s{_spread(serial_bases)}  "
                                      "(max_parallel_workers_per_gather = 0)"),
        ("product rollup, one worker, cold",
         f"{cold:.2f} s  ({cold / base_cold:.2f}x of the cold aggregate; target <= 3x)"),
        ("product rollup, one worker, warm",
         f"{warm:.2f} s{_spread(warms)}  ({warm / base_warm:.2f}x of the warm aggregate, "
         f"{warm / base_serial:.2f}x of it on one core; target <= 3x)"),
        (f"product rollup, worker pool of {WORKERS}, cold",
         f"{pool_cold:.2f} s  ({pool_cold / base_cold:.2f}x of the cold aggregate; target <= 3x)"),
        (f"product rollup, worker pool of {WORKERS}, warm",
         f"{pool_warm:.2f} s{_spread(pool_warms)}  ({pool_warm / base_warm:.2f}x of the warm aggregate; "
         "target <= 3x)"),
        ("writing the endpoint-days alone", f"{floor:.2f} s  ({floor / base_warm:.2f}x of the warm aggregate: "
                                            "one INSERT of the same rows, same indexes, no counting)"),
        ("rollup throughput", f"{rows / warm:,.0f} heartbeats/s, {COMPANIES / warm:.0f} companies/s (warm)"),
        ("rerun with nothing pending", f"{stopwatch.figures['rerun']:.2f} s"),
    ])
    stopwatch.report(f"Where the warm rollup's time goes, {shape} heartbeats (mean of {WARM_RUNS} runs)", [
        *[(label, f"{spent[name]:.2f} s  ({spent[name] / warm:.0%})") for name, label in PHASES],
        ("the rest (locks, company reads, commits)", f"{statistics.mean(warms) - sum(spent.values()):.2f} s"),
    ])
    if shape != "spread":  # a few rows per schema: page overhead, not rows, would make the figures
        return
    stopwatch.report(f"Stored telemetry, {shape} heartbeats (tables with their indexes)", [
        ("raw heartbeat", f"{per_heartbeat:.0f} bytes/row ({hb_rows:,} rows, {hb_bytes / 2**20:.1f} MiB)"),
        ("endpoint-day", f"{per_day_row:.0f} bytes/row ({day_rows:,} rows)"),
        ("endpoint-month", f"{per_month_row:.0f} bytes/row ({month_rows:,} rows)"),
        ("raw, per endpoint per month", f"{raw_month / 1024:,.0f} KiB at one heartbeat every "
                                        f"{HEARTBEAT_INTERVAL_MINUTES} min ({beats_per_month:,} heartbeats); "
                                        "kept for the open month + 35 days"),
        ("raw, this run", f"{hb_bytes / endpoints_total / 1024:,.1f} KiB per endpoint "
                          f"({hb_rows / endpoints_total:,.0f} heartbeats each)"),
        ("lasting, per endpoint per month", f"{lasting_month / 1024:.1f} KiB (30 endpoint-days + 1 endpoint-month)"),
    ])
