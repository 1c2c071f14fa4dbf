"""`manage.py simulate_fleet`: a fleet of simulated agents for demos, load and end-to-end checks.

Registers endpoints with each company's install token and sends their heartbeats through the real
agent API (Agent protocol v1) of a running console given by --url, in batches, from a few client
threads, with a progress bar. Everything is deterministic for a --seed: hardware ids, machine
profiles and heartbeat ids are derived from the company, the endpoint number and the day, so running
the command again re-registers the same machines (T7: same endpoints, same seats) and resends the
same heartbeats (T4: counted once). Only new days add data.

--local skips HTTP and calls the same services the API calls (used by the demo seed when no server
runs); it registers machines as of the first simulated day, so earlier months show licensed usage.
"""

import datetime as dt
import http.client
import json
import random
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from companies.models import Company, CompanyStatus, CompanyType
from usage.models import LATE_WINDOW

NAMESPACE = uuid.UUID("8d3a5f0c-6b1e-4c0e-9a57-2f1d7c9e4b10")
REGISTER = "/api/agent/v1/register"
HEARTBEATS = "/api/agent/v1/heartbeats"

# (weight, os_family, os_type, machine_type, central scan, container host, share of the day up)
PROFILES = [
    (50, "windows", "workstation", "physical", False, False, 0.40),
    (8, "macos", "workstation", "physical", False, False, 0.35),
    (10, "windows", "server", "physical", False, False, 1.0),
    (12, "linux", "server", "virtual", True, False, 1.0),
    (12, "windows", "workstation", "virtual", True, False, 0.30),
    (4, "linux", "server", "virtual", False, True, 1.0),
    (4, "linux", "server", "physical", False, True, 1.0),
]
# optional modules and how often a machine has them
OPTIONAL_MODULES = [("patch_management", 0.5), ("full_disk_encryption", 0.3), ("edr", 0.4),
                    ("hyperdetect", 0.35), ("sandbox_analyzer", 0.25), ("integrity_monitoring", 0.1)]
CORE = ["antimalware", "advanced_threat_control", "firewall", "network_attack_defense"]


@dataclass
class Machine:
    company: Company
    number: int
    hardware_id: str
    hostname: str
    os_family: str
    os_type: str
    machine_type: str
    scan_mode: str
    container_host: bool
    modules: list[str]
    xdr_sensors: list[str]
    day_share: float
    token: str = ""

    def registration(self) -> dict:
        return {"hardware_id": self.hardware_id, "hostname": self.hostname, "os_family": self.os_family,
                "os_type": self.os_type, "machine_type": self.machine_type}

    def heartbeats(self, days: list[dt.date], per_day: int, now: dt.datetime) -> list[dict]:
        items = []
        step = 86400 // per_day
        uptime = int(step * self.day_share)
        for day in days:
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            for i in range(per_day):
                observed = start + dt.timedelta(seconds=step * i + step // 2)
                if observed > now:
                    break
                items.append({
                    "id": str(uuid.uuid5(NAMESPACE, f"{self.hardware_id}/{day.isoformat()}/{i}")),
                    "observed_at": observed.strftime("%Y-%m-%dT%H:%M:%SZ"), "os_family": self.os_family,
                    "os_type": self.os_type, "machine_type": self.machine_type,
                    "container_host": self.container_host, "modules": self.modules,
                    "scan_mode": self.scan_mode, "uptime_seconds": uptime, "xdr_sensors": self.xdr_sensors})
        return items


def machine_for(company: Company, number: int, seed: int) -> Machine:
    """The same machine for the same (seed, company, number), whenever the command runs."""
    rng = random.Random(f"{seed}/{company.pk}/{number}")  # noqa: S311 - simulation, not security
    weights = [p[0] for p in PROFILES]
    _, os_family, os_type, machine_type, central, container, share = rng.choices(PROFILES, weights)[0]
    modules = list(CORE)
    modules += [key for key, chance in OPTIONAL_MODULES if rng.random() < chance]
    if container:
        modules.append("container_protection")
    sensors = ["network"] if rng.random() < 0.1 else []
    slug = "".join(ch for ch in company.name.lower() if ch.isalnum())[:12] or "company"
    return Machine(company=company, number=number, hardware_id=f"sim-{seed}-{company.pk}-{number}",
                   hostname=f"{slug}-{os_type[:2]}-{number:04d}", os_family=os_family, os_type=os_type,
                   machine_type=machine_type, scan_mode="central" if central else "local",
                   container_host=container, modules=modules, xdr_sensors=sensors, day_share=share)


# --- transports ----------------------------------------------------------------------------------------

class AgentApiError(Exception):
    pass


class HttpTransport:
    """The agent API over HTTP(S); one keep-alive connection per client thread."""

    def __init__(self, url: str, timeout: float = 60.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError(f"--url: give the console's address, such as http://127.0.0.1:8000, not {url!r}.")
        self.parts = parts
        self.timeout = timeout
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.parts.hostname, self.parts.port, timeout=self.timeout)
            self.local.conn = conn
        return conn

    def post(self, path: str, body: dict, token: str) -> tuple[int, dict]:
        data = json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        prefix = self.parts.path.rstrip("/")
        for attempt in range(3):
            conn = self._connection()
            try:
                conn.request("POST", prefix + path, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                return response.status, json.loads(payload) if payload else {}
            except (OSError, http.client.HTTPException) as error:
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise AgentApiError(f"{prefix + path}: {error}") from error
                time.sleep(0.5 * (attempt + 1))
        raise AgentApiError(path)  # not reached

    def register(self, install_token: str, machine: Machine) -> dict:
        status, answer = self.post(REGISTER, machine.registration(), install_token)
        if status not in (200, 201):
            raise AgentApiError(f"register {machine.hardware_id}: {status} {answer}")
        return {"created": status == 201, **answer}

    def send(self, token: str, items: list[dict]) -> dict:
        status, answer = self.post(HEARTBEATS, {"heartbeats": items}, token)
        if status not in (200, 400) or "accepted" not in answer:
            raise AgentApiError(f"heartbeats: {status} {answer}")
        return answer


class LocalTransport:
    """The services behind the agent API, called in this process (no server needed)."""

    def __init__(self, registered_at: dt.datetime):
        self.registered_at = registered_at

    def register(self, install_token: str, machine: Machine) -> dict:
        from usage.agent import agent_register

        found = agent_register(install_token=install_token, now=self.registered_at, **machine.registration())
        return {"created": found.created, "endpoint_id": str(found.endpoint_id), "agent_token": found.agent_token,
                "seat": found.seat.as_json()}

    def send(self, token: str, items: list[dict]) -> dict:
        from usage.agent import agent_authenticate, heartbeats_ingest

        company, endpoint_id = agent_authenticate(token=token)
        result = heartbeats_ingest(company=company, endpoint_id=endpoint_id, items=items, now=timezone.now())
        return {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": result.rejected}


# --- the run -------------------------------------------------------------------------------------------

@dataclass
class Totals:
    registered: int = 0
    known: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: dict) -> None:
        with self.lock:
            self.accepted += answer["accepted"]
            self.duplicates += answer["duplicates"]
            self.rejected.extend(answer["rejected"])


def fleet_simulate(*, companies: list[Company], endpoints: int, days: int, per_day: int = 4, batch: int = 100,
                   seed: int = 1, transport, threads: int = 4, rollup: bool = True, now: dt.datetime | None = None,
                   progress: bool = True, out=None) -> Totals:
    """Register `endpoints` machines in each company and send `days` days of heartbeats (the last
    day is today, up to now). Returns what the API answered."""
    from usage.agent import install_token_for
    from usage.rollups import month_start, usage_company_rollup

    now = now or timezone.now()
    day_list = [now.date() - dt.timedelta(days=n) for n in range(days - 1, -1, -1)]
    machines = [machine_for(company, n, seed) for company in companies for n in range(endpoints)]
    tokens = {company.pk: install_token_for(company=company).token for company in companies}
    totals = Totals()
    with tqdm(total=len(machines), unit="endpoint", desc="register", disable=not progress, file=out) as bar:
        def register(machine: Machine) -> None:
            answer = transport.register(tokens[machine.company.pk], machine)
            machine.token = answer["agent_token"]
            with totals.lock:
                totals.registered += answer["created"]
                totals.known += not answer["created"]
            bar.update(1)

        _run(register, machines, threads, transport)
    work = []
    for machine in machines:
        items = machine.heartbeats(day_list, per_day, now)
        work += [(machine.token, items[i:i + batch]) for i in range(0, len(items), batch)]
    with tqdm(total=sum(len(items) for _, items in work), unit="heartbeat", desc="heartbeats",
              disable=not progress, file=out) as bar:
        def send(job: tuple[str, list[dict]]) -> None:
            totals.add(transport.send(*job))
            bar.update(len(job[1]))

        _run(send, work, threads, transport)
    if rollup:
        months = sorted({month_start(day) for day in day_list})
        for company in tqdm(companies, unit="company", desc="rollup", disable=not progress, file=out):
            usage_company_rollup(company_id=company.pk, months=months)
    return totals


def _run(func, items: list, threads: int, transport) -> None:
    # the local transport shares this process's database connection: one thread
    if threads <= 1 or isinstance(transport, LocalTransport):
        for item in items:
            func(item)
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(func, items):
            pass


class Command(BaseCommand):
    help = ("Register simulated endpoints and send their heartbeats through the agent API of a running "
            "console (--url), with a progress bar. Safe to run again: the same machines and heartbeats "
            "are recognised, only new days add data.")

    def add_arguments(self, parser):
        parser.add_argument("--url", help="The console's address, e.g. http://127.0.0.1:8000.")
        parser.add_argument("--local", action="store_true",
                            help="Call the services in this process instead of HTTP (no server needed).")
        parser.add_argument("--company", type=int, action="append", dest="company_ids", default=[],
                            help="A company id to simulate (repeatable). Default: the first --companies "
                                 "active customers.")
        parser.add_argument("--companies", type=int, default=3, help="How many customers when no --company.")
        parser.add_argument("--endpoints", type=int, default=20, help="Endpoints per company.")
        parser.add_argument("--days", type=int, default=7,
                            help=f"Days of heartbeats, ending today (at most {LATE_WINDOW.days}: the agent API "
                                 "refuses older heartbeats).")
        parser.add_argument("--heartbeats-per-day", type=int, default=4, dest="per_day")
        parser.add_argument("--batch", type=int, default=100, help="Heartbeats per request (at most 1000).")
        parser.add_argument("--threads", type=int, default=4, help="Client threads (HTTP only).")
        parser.add_argument("--seed", type=int, default=1, help="Another seed simulates other machines.")
        parser.add_argument("--no-rollup", action="store_false", dest="rollup",
                            help="Leave the rollup to the Celery workers.")
        parser.add_argument("--no-progress", action="store_false", dest="progress")

    def handle(self, *args, **options):
        errors = []
        for name, low, high in (("endpoints", 1, 100_000), ("days", 1, LATE_WINDOW.days), ("per_day", 1, 1440),
                                ("batch", 1, 1000), ("threads", 1, 64), ("companies", 1, 100_000)):
            if not low <= options[name] <= high:
                errors.append(f"--{name.replace('_', '-')}: from {low} to {high}, not {options[name]}.")
        if errors:
            raise CommandError(" ".join(errors))
        if not options["local"] and not options["url"]:
            raise CommandError("--url: give the address of a running console, or --local to call the services "
                               "directly.")
        companies = self._companies(options)
        now = timezone.now()
        transport = (LocalTransport(registered_at=now - dt.timedelta(days=options["days"])) if options["local"]
                     else HttpTransport(options["url"]))
        started = time.perf_counter()
        try:
            totals = fleet_simulate(companies=companies, endpoints=options["endpoints"], days=options["days"],
                                    per_day=options["per_day"], batch=options["batch"], seed=options["seed"],
                                    transport=transport, threads=options["threads"], rollup=options["rollup"],
                                    now=now, progress=options["progress"], out=self.stderr._out)
        except AgentApiError as error:
            raise CommandError(f"The agent API refused or failed: {error}") from error
        seconds = time.perf_counter() - started
        self.stdout.write(
            f"{len(companies)} companies: {totals.registered} endpoints registered, {totals.known} already known; "
            f"{totals.accepted} heartbeats stored, {totals.duplicates} duplicates, {len(totals.rejected)} rejected "
            f"in {seconds:.1f} s.")
        for item in totals.rejected[:5]:
            self.stdout.write(f"  rejected: {item}")

    def _companies(self, options) -> list[Company]:
        if options["company_ids"]:
            found = Company.objects.in_bulk(options["company_ids"])
            missing = [str(i) for i in options["company_ids"] if i not in found]
            if missing:
                raise CommandError(f"--company: no company with id {', '.join(missing)}.")
            return [found[i] for i in options["company_ids"]]
        companies = list(Company.objects.filter(type=CompanyType.CUSTOMER, status=CompanyStatus.ACTIVE)
                         .order_by("lineage")[:options["companies"]])
        if not companies:
            raise CommandError("No active customer to simulate: create one, or name companies with --company.")
        return companies
