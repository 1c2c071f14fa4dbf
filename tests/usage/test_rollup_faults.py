"""A worker killed (SIGKILL) in the middle of a rollup loses nothing and counts nothing twice;
duplicated and reordered heartbeats change nothing (T4, U12, ARCHITECTURE: Celery)."""

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from django.db import connection
from django_tenants.utils import tenant_context

from licensing.entitlements import entitlements_set
from tests.conftest import worker_database_url
from tests.factories import make_company
from tests.usage.fleet import Machine
from usage.models import CompanyMonthUsage, PendingRollup
from usage.modules import MODULE_BITS, SCAN_MODES, mask_of
from usage.rollups import heartbeats_pending, usage_company_rollup
from usage.telemetry.models import Heartbeat

ROOT = Path(__file__).resolve().parents[2]
NOV = dt.date(2026, 11, 1)
KEYS = {"endpoint_security", "a_la_carte", "patch_management", "sve", "edr"}


def _history(seed: int, endpoints: int = 12, beats: int = 20) -> list[dict]:
    rng = random.Random(seed)
    shapes = [("windows", "workstation", "physical"), ("windows", "workstation", "virtual"),
              ("linux", "server", "virtual"), ("windows", "server", "physical")]
    rows = []
    for e in range(endpoints):
        shape = shapes[e % len(shapes)]
        for _ in range(beats):
            rows.append({"endpoint": e, "shape": shape, "id": uuid.UUID(int=rng.getrandbits(128)),
                         "when": dt.datetime(2026, 11, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=rng.randrange(40_000)),
                         "modules": rng.sample(["antimalware", "patch_management", "edr", "firewall"], k=2),
                         "scan": rng.choice(["local", "central"]), "uptime": rng.randrange(0, 7200)})
    return rows


def _fleet(platform, rows, *, shuffle_seed=None, duplicate=False):
    company = make_company(parent=platform)
    entitlements_set(actor=None, company=company, purpose="own", keys=KEYS)
    shapes = {}
    for row in rows:
        shapes.setdefault(row["endpoint"], row["shape"])
    machines = {e: Machine(company, os_family=s[0], os_type=s[1], machine_type=s[2]) for e, s in shapes.items()}
    ordered = list(rows)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(ordered)
    batches = [ordered, ordered[: len(ordered) // 2]] if duplicate else [ordered]
    with tenant_context(company):
        for batch in batches:
            Heartbeat.objects.bulk_create([Heartbeat(
                id=r["id"], endpoint_id=machines[r["endpoint"]].id, observed_at=r["when"], received_at=r["when"],
                os_family=r["shape"][0], os_type=r["shape"][1], machine_type=r["shape"][2], container_host=False,
                modules=mask_of(r["modules"], MODULE_BITS), scan_mode=SCAN_MODES[r["scan"]],
                uptime_seconds=r["uptime"], xdr_sensors=0) for r in batch], ignore_conflicts=True)
    PendingRollup.objects.get_or_create(company=company)
    return company


def _figures(company):
    row = CompanyMonthUsage.objects.get(company=company, month=NOV)
    return {key: getattr(row, key) for key in CompanyMonthUsage.FIGURES}


@pytest.mark.django_db
def test_T4_duplicated_and_reordered_heartbeats_change_nothing(platform):
    rows = _history(seed=7)
    clean = _fleet(platform, rows)
    noisy = _fleet(platform, rows, shuffle_seed=3, duplicate=True)
    for company in (clean, noisy):
        usage_company_rollup(company_id=company.pk, months=[NOV])
    assert _figures(noisy) == _figures(clean)
    assert _figures(clean)["licensed_endpoints"] == 12


def _start_worker(queue: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": worker_database_url(), "DJANGO_SETTINGS_MODULE": "gz_console.settings_test"}
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "gz_console", "worker", "--pool", "solo",
                             "-Q", queue, "-n", f"{queue}-{uuid.uuid4().hex[:6]}@%h", "-l", "WARNING",
                             "--without-gossip", "--without-mingle"], cwd=ROOT, env=env)


def _wait_for(predicate, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.django_db(transaction=True)
def test_U12_worker_killed_mid_rollup_another_finishes_with_clean_figures(platform, celery_worker_process):
    from usage.tasks import rollup_companies

    rows = _history(seed=11)
    reference = _fleet(platform, rows)
    usage_company_rollup(company_id=reference.pk, months=[NOV])
    victim = _fleet(platform, rows)
    usage_company_rollup(company_id=victim.pk, months=[NOV])  # its row exists: the rollup will update it
    more = _history(seed=12, endpoints=0)  # nothing new for the reference...
    assert more == []
    # ...and new heartbeats for both, so the next rollup has real work
    extra = _history(seed=13, endpoints=4, beats=30)
    for company in (reference, victim):
        machines = {}
        with tenant_context(company):
            from usage.telemetry.models import Endpoint

            ids = list(Endpoint.objects.order_by("registered_at").values_list("id", flat=True))
            Heartbeat.objects.bulk_create([Heartbeat(
                id=r["id"], endpoint_id=ids[r["endpoint"]], observed_at=r["when"], received_at=r["when"],
                os_family=r["shape"][0], os_type=r["shape"][1], machine_type=r["shape"][2], container_host=False,
                modules=mask_of(r["modules"], MODULE_BITS), scan_mode=SCAN_MODES[r["scan"]],
                uptime_seconds=r["uptime"], xdr_sensors=0) for r in extra])
        PendingRollup.objects.get_or_create(company=company)
        del machines
    usage_company_rollup(company_id=reference.pk, months=[NOV])

    # Hold the victim's usage row: its rollup merges the heartbeats, then blocks writing the row.
    settings = connection.settings_dict
    holder = psycopg2.connect(dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"] or None,
                              port=settings["PORT"] or None, password=settings["PASSWORD"] or None)
    holder.autocommit = False
    observer = psycopg2.connect(dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"] or None,
                                port=settings["PORT"] or None, password=settings["PASSWORD"] or None)
    observer.autocommit = True
    with holder.cursor() as cursor:
        cursor.execute("SELECT id FROM usage_companymonthusage WHERE company_id = %s FOR UPDATE", [victim.pk])
    queue = f"fault-{uuid.uuid4().hex[:8]}"
    first = _start_worker(queue)
    try:
        rollup_companies.apply_async(args=[[victim.pk], [NOV.isoformat()]], queue=queue)

        def blocked_on_the_row():
            # its own autocommit connection: inside the holder's transaction pg_stat_activity
            # would be the snapshot taken at its first read
            with observer.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                               [holder.get_backend_pid()])
                return cursor.fetchone()[0] > 0

        assert _wait_for(blocked_on_the_row), "the rollup never reached the usage row"
        first.send_signal(signal.SIGKILL)  # mid-rollup: heartbeats merged, nothing committed
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        holder.rollback()
        holder.close()
        observer.close()

    # nothing of the killed run is visible: the heartbeats wait, the company is still pending
    assert heartbeats_pending(company=victim) == len(extra)
    assert PendingRollup.objects.filter(company=victim).exists()

    # another worker (the suite's) finishes the work
    rollup_companies.delay([victim.pk], [NOV.isoformat()]).get(timeout=60)
    assert _figures(victim) == _figures(reference)
    assert heartbeats_pending(company=victim) == 0


@pytest.mark.django_db(transaction=True)
def test_T4_U12_rollups_racing_ingestion_count_every_heartbeat_exactly_once(platform):
    """Agents keep sending while rollups run over and over: every stored heartbeat ends up merged
    once, none twice and none left behind (the watermark is read only when no insert is in flight)."""
    import threading

    from django.db import connections

    from usage.agent import heartbeats_ingest
    from usage.models import EndpointDay

    company = _fleet(platform, [])
    machines = [Machine(company) for _ in range(4)]
    start = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    batches, per_batch = 25, 20
    sending = threading.Event()
    sending.set()
    errors: list[BaseException] = []

    def agent(machine):
        try:
            for b in range(batches):
                items = [{"id": str(uuid.uuid4()),
                          "observed_at": (start + dt.timedelta(minutes=b * per_batch + i)).isoformat(),
                          "os_family": "windows", "os_type": "workstation", "machine_type": "physical",
                          "container_host": False, "modules": ["antimalware"], "scan_mode": "local",
                          "uptime_seconds": 60, "xdr_sensors": []}
                         for i in range(per_batch)]
                result = heartbeats_ingest(company=company, endpoint_id=machine.id, items=items, now=now)
                assert result.accepted == per_batch, result
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    def roller():
        try:
            while sending.is_set():
                usage_company_rollup(company_id=company.pk, months=[NOV])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    agents = [threading.Thread(target=agent, args=(m,)) for m in machines]
    rollers = [threading.Thread(target=roller) for _ in range(2)]
    for thread in rollers + agents:
        thread.start()
    for thread in agents:
        thread.join(timeout=120)
    sending.clear()
    for thread in rollers:
        thread.join(timeout=120)
    assert not errors, errors

    usage_company_rollup(company_id=company.pk, months=[NOV])
    assert heartbeats_pending(company=company) == 0
    with tenant_context(company):
        merged = sum(EndpointDay.objects.filter(company=company).values_list("heartbeats", flat=True))
        assert merged == Heartbeat.objects.count() == len(machines) * batches * per_batch
        assert sum(EndpointDay.objects.filter(company=company).values_list("uptime_seconds", flat=True)) == merged * 60
