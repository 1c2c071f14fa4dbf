"""Heartbeat ingestion over HTTP, as in production (ARCHITECTURE.md, Telemetry path).

Starts gunicorn (3 sync workers) on the bench database, registers BENCH_AGENTS endpoints over the
agent API, then BENCH_CLIENTS client threads send batches of BENCH_BATCH heartbeats for
BENCH_INGEST_SECONDS (bounded by BENCH_MAX_BATCHES), loopback only. The baseline, measured in the
same run, is a raw COPY of the same number of rows into the same table: how fast PostgreSQL alone
takes them. Target: >= 5,000 heartbeats/s in batches of 100 on 2 cores.
"""

import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from companies.models import Company, CompanyType
from companies.services import company_create
from tests.bench.cleanup import remove_earlier_runs
from tests.conftest import ROOT, worker_database_url
from usage.agent import install_token_for

AGENTS = int(os.environ.get("BENCH_AGENTS", "200"))
COMPANIES = int(os.environ.get("BENCH_INGEST_COMPANIES", "4"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "6"))
BATCH = int(os.environ.get("BENCH_BATCH", "100"))
SECONDS = float(os.environ.get("BENCH_INGEST_SECONDS", "15"))
MAX_BATCHES = int(os.environ.get("BENCH_MAX_BATCHES", "20000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "3"))
NAME = "Ingest bench"

COPY_SQL = ("COPY {schema}.telemetry_heartbeat (id, endpoint_id, observed_at, received_at, os_family, os_type, "
            "machine_type, container_host, modules, scan_mode, uptime_seconds, xdr_sensors) FROM STDIN")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(port: int, path: str, body: bytes, token: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Authorization": f"Bearer {token}",
                                                       "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _wait_until_serving(server: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail("gunicorn exited during start-up")
        try:
            status, _ = _request(port, "/api/agent/v1/heartbeats", b"{}", "probe")
            if status == 401:
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail("gunicorn did not answer within 60 s")


def _batch_body(observed_at: str) -> bytes:
    """BATCH fresh heartbeats; built as text, the way an agent's queue would hold them."""
    items = ",".join(
        f'{{"id":"{uuid.uuid4()}","observed_at":"{observed_at}","os_family":"linux","os_type":"server",'
        f'"machine_type":"virtual","container_host":false,"modules":["antimalware","edr","firewall"],'
        f'"scan_mode":"central","uptime_seconds":900,"xdr_sensors":["network"]}}' for _ in range(BATCH))
    return f'{{"heartbeats":[{items}]}}'.encode()


def _send_for(port: int, tokens: list[str], results: dict, lock: threading.Lock, deadline: float,
              budget: list[int]) -> None:
    accepted, latencies, errors = 0, [], 0
    i = 0
    while time.monotonic() < deadline:
        with lock:
            if budget[0] <= 0:
                break
            budget[0] -= 1
        body = _batch_body(timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ"))
        started = time.perf_counter()
        status, answer = _request(port, "/api/agent/v1/heartbeats", body, tokens[i % len(tokens)])
        latencies.append(time.perf_counter() - started)
        i += 1
        if status == 200 and answer["accepted"] == BATCH:
            accepted += answer["accepted"]
        else:
            errors += 1
    with lock:
        results["accepted"] += accepted
        results["errors"] += errors
        results["latencies"].extend(latencies)


def _copy_rows(company: Company, endpoint_id: str, count: int) -> float:
    """The baseline: `count` rows of the same shape COPYed into the same table; seconds taken."""
    now = timezone.now().isoformat()
    data = io.StringIO("".join(
        f"{uuid.uuid4()}\t{endpoint_id}\t{now}\t{now}\tlinux\tserver\tvirtual\tf\t8201\t3\t900\t4\n"
        for _ in range(count)))
    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.cursor.copy_expert(COPY_SQL.format(schema=f'"{company.schema_name}"'), data)
        return time.perf_counter() - started


@pytest.mark.django_db(transaction=True)
def test_heartbeat_ingest_throughput(platform, stopwatch):
    remove_earlier_runs(NAME)
    companies = [company_create(parent=platform, name=f"{NAME} {i}", type=CompanyType.CUSTOMER)
                 for i in range(COMPANIES)]
    schemas = [company.schema_name for company in companies]
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": worker_database_url(), "DJANGO_SETTINGS_MODULE": "gz_console.settings_test",
           "GZ_ENV": "test"}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "gz_console.wsgi:application", "--workers", str(WORKERS),
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning"], cwd=ROOT, env=env)
    try:
        _wait_until_serving(server, port)
        tokens: list[str] = []
        endpoint_ids: list[str] = []
        with stopwatch.measure("register"):
            for n in range(AGENTS):
                company = companies[n % COMPANIES]
                body = json.dumps({"hardware_id": f"bench-{n}", "hostname": f"bench-{n}", "os_family": "linux",
                                   "os_type": "server", "machine_type": "virtual"}).encode()
                status, answer = _request(port, "/api/agent/v1/register", body,
                                          install_token_for(company=company).token)
                assert status == 201, answer
                tokens.append(answer["agent_token"])
                endpoint_ids.append(answer["endpoint_id"])

        results = {"accepted": 0, "errors": 0, "latencies": []}
        lock = threading.Lock()
        budget = [MAX_BATCHES]
        threads = [threading.Thread(target=_send_for, args=(port, tokens[c::CLIENTS], results, lock,
                                                             time.monotonic() + SECONDS, budget))
                   for c in range(CLIENTS)]
        with stopwatch.measure("ingest"):
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        server.terminate()
        server.wait(timeout=30)

    try:
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(f'SELECT count(*) FROM "{s}".telemetry_heartbeat' for s in schemas))
            stored = sum(row[0] for row in cursor.fetchall())
        accepted = results["accepted"]
        copy_seconds = _copy_rows(companies[0], endpoint_ids[0], accepted)
    finally:
        remove_earlier_runs(NAME)

    api_rate = accepted / stopwatch.figures["ingest"]
    copy_rate = accepted / copy_seconds
    latencies = sorted(results["latencies"])
    stopwatch.report("Heartbeat ingestion (agent API over gunicorn)", [
        ("setup", f"{WORKERS} gunicorn workers, {CLIENTS} client threads, {os.cpu_count()} cores, loopback"),
        ("endpoints registered", f"{AGENTS} in {COMPANIES} companies, "
                                 f"{AGENTS / stopwatch.figures['register']:.0f} registrations/s"),
        ("batches sent", f"{len(latencies)} of {BATCH} heartbeats, {results['errors']} failed"),
        ("heartbeats stored", f"{stored} ({accepted} accepted)"),
        ("raw COPY of as many rows (baseline)", f"{copy_rate:,.0f} heartbeats/s  (1.00x)"),
        ("agent API", f"{api_rate:,.0f} heartbeats/s  ({api_rate / copy_rate:.2f}x of COPY)"),
        ("batch latency p50 / p95 / max", f"{statistics.median(latencies) * 1000:.1f} / "
                                          f"{latencies[int(len(latencies) * 0.95)] * 1000:.1f} / "
                                          f"{latencies[-1] * 1000:.1f} ms"),
    ])
    assert results["errors"] == 0
    assert stored == accepted > 0
