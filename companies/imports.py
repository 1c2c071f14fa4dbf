"""H6: importing companies and their endpoint inventory from a CSV file (format: docs/import.md).

An import is a job in two steps. `import_validate` is a dry run: it parses the whole file against
the current company tree and records every bad row with its line number, field and reason (X2).
`import_apply` runs only for a file without errors and does everything in one transaction, so a
failure stores nothing. Companies are matched by name under their parent and endpoints by hardware
id (T7), so running the same file again creates nothing new.

Visibility (C6): the file is resolved against the importing partner's subtree only, so no message
can name, or hint at, a company outside it.
"""

import csv
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import connection, transaction
from django.http import Http404
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context
from redis.exceptions import RedisError

from .audit import audit_record
from .capabilities import can_open
from .models import Company, CompanyType, ImportJob, ImportStatus, Role, User
from .selectors import company_subtree

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_ROWS = 50_000
# Each new company's schema is DDL inside the import's one transaction, and PostgreSQL holds a lock
# per created relation until commit: measured, 25 locks per company with the 7-relation template,
# and the server ran out of lock memory at 876 new companies in one transaction. The ceiling is
# worked out from the server's lock table and the template's size (import_company_limit), capped.
MAX_NEW_COMPANIES = 1_000
LOCKS_PER_RELATION = 3
LOCKS_PER_COMPANY_BASE = 4
IMPORT_LOCK_SHARE = 2  # an import may take 1/2 of the lock table (import_company_limit)
ENDPOINT_BATCH = 1_000
PREVIEW_COMPANIES = 200
PROGRESS_TTL_SECONDS = 6 * 3600
PROGRESS_MIN_INTERVAL_SECONDS = 0.25
# pg_advisory_xact_lock(namespace, company id): one import at a time per importing partner
ADVISORY_LOCK_NAMESPACE = 0x4836  # "H6"

COMPANY_COLUMNS = ("company_name", "company_type", "parent_company", "country")
ENDPOINT_COLUMNS = ("hostname", "hardware_id", "os_family", "os_type", "machine_type")
COLUMNS = COMPANY_COLUMNS + ENDPOINT_COLUMNS
DELIMITERS = (",", ";", "\t")

Key = tuple[str, int]  # ("id", pk) for a company that exists, ("new", n) for one the file creates


# --- who may import, and the job lookup ------------------------------------------------------------

def import_allowed(user: User) -> bool:
    """Company administrators of partner companies import companies below their own."""
    return can_open(user, "companies") and user.role == Role.COMPANY_ADMIN


def access_import_job(actor: User, job_id) -> ImportJob:
    """The actor's company's job, or the same 404 for missing and another company's (C6)."""
    if not import_allowed(actor):
        raise Http404("No such import")
    try:
        return ImportJob.objects.select_related("company").get(pk=job_id, company_id=actor.company_id)
    except (ImportJob.DoesNotExist, ValueError, TypeError):
        raise Http404("No such import") from None


# --- upload -------------------------------------------------------------------------------------------

def _decode(raw: bytes) -> str:
    try:
        # utf-8-sig drops the byte order mark spreadsheet programs put first
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ValidationError({"file": (
            f"Line {line} is not UTF-8 text. Save the file as CSV (UTF-8) and upload it again.")}) from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise ValidationError({"file": (
            f"Line {line} holds a NUL character: this looks like a spreadsheet, not a CSV file. "
            "Save it as CSV (UTF-8) and upload it again.")})
    return text


@transaction.atomic
def import_job_create(*, actor: User, upload: UploadedFile) -> ImportJob:
    """Keep the file and queue its dry run. Only file-level problems are refused here; rows are
    checked by import_validate so that every bad row is reported at once."""
    if not import_allowed(actor):
        raise PermissionDenied
    if upload.size > MAX_FILE_BYTES:
        raise ValidationError({"file": (
            f"The file is {upload.size / 1024 / 1024:.1f} MB; an import file can be at most "
            f"{MAX_FILE_BYTES // 1024 // 1024} MB. Split it into smaller files.")})
    text = _decode(upload.read())
    if not text.strip():
        raise ValidationError({"file": "The file is empty. The first line must be the header."})
    job = ImportJob.objects.create(company=actor.company, created_by=actor,
                                   file_name=(upload.name or "import.csv")[:255], csv_text=text)
    transaction.on_commit(lambda: _queue("import_validate", job.pk))
    return job


def _queue(task_name: str, job_id: int) -> None:
    from . import tasks

    getattr(tasks, task_name).delay(job_id)


# --- the plan: what the file means against the current tree ------------------------------------------

@dataclass
class _Target:
    """A company the file names, existing or to be created, with the endpoints it gets."""

    key: Key
    name: str
    type: str
    country: str
    line: int
    parent_key: Key | None
    existing_id: int | None
    type_given: bool
    rows: int = 0
    endpoints: dict[str, dict] = field(default_factory=dict)  # hardware id -> endpoint fields
    endpoint_lines: dict[str, int] = field(default_factory=dict)
    endpoints_existing: int = 0


@dataclass
class _Node:
    name: str
    type: str
    parent_id: int | None
    assist: bool


@dataclass
class _Plan:
    importer: Company
    nodes: dict[int, _Node]
    company_limit: int
    errors: list[dict] = field(default_factory=list)
    targets: dict[Key, _Target] = field(default_factory=dict)
    by_parent_and_name: dict[tuple[Key, str], Key] = field(default_factory=dict)
    by_name: dict[str, set[Key]] = field(default_factory=dict)
    hardware: dict[str, tuple[Key, int]] = field(default_factory=dict)
    rows: int = 0
    new_count: int = 0

    def error(self, line: int, field_name: str, message: str) -> None:
        self.errors.append({"line": line, "field": field_name, "message": message})

    def type_of(self, key: Key) -> str:
        return self.nodes[key[1]].type if key[0] == "id" else self.targets[key].type

    def name_of(self, key: Key) -> str:
        return self.nodes[key[1]].name if key[0] == "id" else self.targets[key].name

    def new_targets(self) -> list[_Target]:
        return [t for t in self.targets.values() if t.existing_id is None]

    def preview(self) -> dict:
        new = self.new_targets()
        return {
            "rows": self.rows,
            "companies_new": len(new),
            "companies_existing": len(self.targets) - len(new),
            "endpoints_new": sum(len(t.endpoints) for t in self.targets.values()),
            "endpoints_existing": sum(t.endpoints_existing for t in self.targets.values()),
            "new_companies": [
                {"line": t.line, "name": t.name, "type": t.type, "country": t.country,
                 "parent": self.name_of(t.parent_key) if t.parent_key else ""}
                for t in new[:PREVIEW_COMPANIES]
            ],
        }


def import_company_limit() -> int:
    """How many companies one file may create: half the server's lock table (the other half stays for
    what runs beside the import, above all the rollup workers' batches, each holding up to ~1,000 locks
    until it commits: usage.rollups.BATCH_SIZE) over the locks one new company schema holds until
    commit (see MAX_NEW_COMPANIES)."""
    from django.conf import settings

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_locks_per_transaction')::int"
            " * current_setting('max_connections')::int,"
            " (SELECT count(*) FROM pg_class WHERE relnamespace = %s::regnamespace)",
            [settings.TENANT_BASE_SCHEMA])
        lock_slots, relations = cursor.fetchone()
    per_company = LOCKS_PER_RELATION * max(relations, 1) + LOCKS_PER_COMPANY_BASE
    return max(1, min(MAX_NEW_COMPANIES, lock_slots // IMPORT_LOCK_SHARE // per_company))


def _plan_start(job: ImportJob) -> _Plan:
    importer = job.company
    # the whole subtree in one query: every row is resolved in memory, never one query per row
    rows = company_subtree(company=importer).values_list("id", "name", "type", "parent_id",
                                                         "partner_can_assist")
    nodes = {pk: _Node(name, type_, parent_id, assist) for pk, name, type_, parent_id, assist in rows}
    plan = _Plan(importer=importer, nodes=nodes, company_limit=import_company_limit())
    for pk, node in nodes.items():
        plan.by_name.setdefault(node.name, set()).add(("id", pk))
        if pk != importer.pk and node.parent_id is not None:
            plan.by_parent_and_name[(("id", node.parent_id), node.name)] = ("id", pk)
    return plan


def _read_header(reader, plan: _Plan) -> list[str] | None:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        plan.error(1, "", f"The header line cannot be read as CSV: {exc}.")
        return None
    names = [name.strip().lower() for name in header or []]
    if not any(names):
        plan.error(1, "", "The first line must be the header naming the columns, for example "
                          "company_name,hostname,hardware_id,os_family,os_type,machine_type.")
        return None
    unknown = [name or f"(column {i} has no name)" for i, name in enumerate(names, 1) if name not in COLUMNS]
    twice = sorted({name for name in names if name and names.count(name) > 1})
    if unknown:
        plan.error(1, "", f"Unknown columns: {', '.join(unknown)}. The columns are: {', '.join(COLUMNS)}.")
    if twice:
        plan.error(1, "", f"Columns named more than once: {', '.join(twice)}.")
    if "company_name" not in names:
        plan.error(1, "company_name", "The company_name column is required.")
    if "hostname" in names and "hardware_id" not in names:
        plan.error(1, "hardware_id", "The hardware_id column is required when the file has hostnames.")
    return None if plan.errors else names


def _delimiter(text: str) -> str:
    """Comma, or the semicolon or tab some spreadsheet locales save: whichever the header uses most."""
    first = text.split("\n", 1)[0]
    return max(DELIMITERS, key=first.count) if any(d in first for d in DELIMITERS) else ","


def _plan_rows(plan: _Plan, text: str) -> None:
    # newline="" keeps line ends inside quoted fields, so reader.line_num counts file lines
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    names = _read_header(reader, plan)
    if names is None:
        return
    while True:
        line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            plan.error(line, "", f"This line cannot be read as CSV: {exc}. Nothing after it was checked.")
            break
        if not any(value.strip() for value in values):
            continue  # blank lines are allowed anywhere
        plan.rows += 1
        if plan.rows > MAX_ROWS:
            plan.error(line, "", f"The file has more than {MAX_ROWS:,} rows; split it into files of at "
                                 f"most {MAX_ROWS:,} rows. Nothing after this line was checked.")
            break
        if len(values) > len(names):
            plan.error(line, "", f"This line has {len(values)} fields; the header has {len(names)}.")
            continue
        # a spreadsheet may drop trailing empty fields: missing ones are empty
        row = {name: (values[i].strip() if i < len(values) else "") for i, name in enumerate(names)}
        _plan_row(plan, row, line)


def _check_company_fields(plan: _Plan, row: dict, line: int) -> tuple[str, str, str] | None:
    """The same checks as creating the company (services._validate_company_details, X2), so a row
    that passes here cannot fail the import later without its line and field; the type and country
    messages say what the file should hold."""
    from .services import _validate_company_details

    name, type_, country = row["company_name"], row.get("company_type", "").lower(), row.get("country", "").upper()
    errors = _validate_company_details(name=name, type=type_ or CompanyType.CUSTOMER, country=country,
                                       field_of_activity="", phone="", address="")
    if not errors:
        return name, type_, country
    if "name" in errors:
        plan.error(line, "company_name", errors.pop("name"))
    if errors.pop("type", None):
        plan.error(line, "company_type", f"{row['company_type']!r} is not a company type: "
                                         "use customer or partner.")
    if errors.pop("country", None):
        plan.error(line, "country", f"{row['country']!r} is not an ISO 3166-1 alpha-2 country code "
                                    "(for example DE, FR, US).")
    for field_name, message in errors.items():  # a check the shared validator gains later
        plan.error(line, field_name, message)
    return None


def _check_endpoint_fields(plan: _Plan, row: dict, line: int) -> dict | None:
    """The endpoint of the row, {} when the row names only a company, None when it is bad."""
    from usage.telemetry.models import MachineType, OsFamily, OsType

    hostname, hardware_id = row.get("hostname", ""), row.get("hardware_id", "")
    if not hostname:
        given = [name for name in ENDPOINT_COLUMNS if row.get(name)]
        if given:
            plan.error(line, "hostname", f"Enter the hostname: the row has {', '.join(given)} but no "
                                         "hostname.")
            return None
        return {}
    endpoint = {"hostname": hostname, "hardware_id": hardware_id}
    ok = True
    if len(hostname) > 255:
        plan.error(line, "hostname", "The hostname can have at most 255 characters.")
        ok = False
    if not hardware_id:
        plan.error(line, "hardware_id", "Enter the hardware id (the machine's stable id, such as its "
                                        "BIOS serial or MAC address) for this hostname.")
        ok = False
    elif len(hardware_id) > 200:
        plan.error(line, "hardware_id", "The hardware id can have at most 200 characters.")
        ok = False
    for name, choices in (("os_family", OsFamily), ("os_type", OsType), ("machine_type", MachineType)):
        value = row.get(name, "").lower()
        if value not in choices.values:
            shown = f"{row.get(name)!r} is not" if value else "Enter"
            plan.error(line, name, f"{shown} the {name}: use {' or '.join(choices.values)}.")
            ok = False
        endpoint[name] = value
    return endpoint if ok else None


def _resolve_parent(plan: _Plan, name: str, line: int) -> Key | None:
    if not name:
        return ("id", plan.importer.pk)
    keys = plan.by_name.get(name, set())
    partners = [key for key in keys if plan.type_of(key) == CompanyType.PARTNER]
    if len(partners) == 1:
        return partners[0]
    if len(partners) > 1:
        plan.error(line, "parent_company", f"{len(partners)} partners among your companies are named "
                                           f"{name!r}; rename one of them to import under it.")
    elif keys:
        plan.error(line, "parent_company", f"{name!r} is a customer; only a partner can have companies "
                                           "under it.")
    else:
        # C6: the same words whether the name is unknown or belongs to a company outside the subtree
        plan.error(line, "parent_company", f"{name!r} was not found among your companies or on an "
                                           "earlier line of this file.")
    return None


def _resolve_target(plan: _Plan, fields: tuple[str, str, str], parent_key: Key, line: int) -> _Target | None:
    name, type_, country = fields
    key = plan.by_parent_and_name.get((parent_key, name))
    if key is None:
        plan.new_count += 1
        if plan.new_count > plan.company_limit:
            if plan.new_count == plan.company_limit + 1:
                plan.error(line, "company_name", f"This file creates more than {plan.company_limit} "
                                                 "companies; split it so each file creates at most "
                                                 f"{plan.company_limit}.")
            return None
        key = ("new", plan.new_count)
        plan.targets[key] = _Target(key=key, name=name, type=type_ or CompanyType.CUSTOMER,
                                    country=country, line=line, parent_key=parent_key,
                                    existing_id=None, type_given=bool(type_))
        plan.by_parent_and_name[(parent_key, name)] = key
        plan.by_name.setdefault(name, set()).add(key)
        return plan.targets[key]
    target = plan.targets.get(key)
    if target is None:  # an existing company, named for the first time in this file
        node = plan.nodes[key[1]]
        target = plan.targets[key] = _Target(key=key, name=name, type=node.type, country=country,
                                             line=line, parent_key=parent_key, existing_id=key[1],
                                             type_given=bool(type_))
    if type_ and type_ != target.type:
        where = "exists" if target.existing_id else f"is a {target.type} on line {target.line}"
        plan.error(line, "company_type", f"{name} {where} as a {target.type}; the import does not "
                                         "change a company's type.")
        return None
    if target.existing_id is None and country and target.country and country != target.country:
        plan.error(line, "country", f"{name} has country {target.country} on line {target.line}.")
        return None
    target.country = target.country or country
    return target


def _network_visible(plan: _Plan, key: Key) -> bool:
    """C1-C3 on the planned tree: the importer manages security and every company from below it
    down to the target lets its partner assist (companies the import creates have assist on)."""
    if not plan.importer.manages_security:
        return False
    while key != ("id", plan.importer.pk):
        if key[0] == "new":
            key = plan.targets[key].parent_key
            continue
        node = plan.nodes[key[1]]
        if not node.assist:
            return False
        key = ("id", node.parent_id)
    return True


def _add_endpoint(plan: _Plan, target: _Target, endpoint: dict, line: int) -> None:
    if not _network_visible(plan, target.key):
        plan.error(line, "hostname", f"Endpoints cannot be imported into {target.name}: your company "
                                     "cannot see its network (reseller-only, or assist turned off).")
        return
    hardware_id = endpoint["hardware_id"]
    seen = plan.hardware.get(hardware_id)
    if seen is not None and seen[0] != target.key:
        plan.error(line, "hardware_id", f"{hardware_id!r} is also on line {seen[1]}, for "
                                        f"{plan.name_of(seen[0])}; a machine belongs to one company.")
        return
    if seen is not None:
        first = target.endpoints[hardware_id]
        if first != endpoint:
            plan.error(line, "hardware_id", f"{hardware_id!r} is also on line {seen[1]} with other "
                                            "details; give the machine once.")
        return
    plan.hardware[hardware_id] = (target.key, line)
    target.endpoints[hardware_id] = endpoint
    target.endpoint_lines[hardware_id] = line


def _plan_row(plan: _Plan, row: dict, line: int) -> None:
    company_fields = _check_company_fields(plan, row, line)
    endpoint = _check_endpoint_fields(plan, row, line)
    parent_key = _resolve_parent(plan, row.get("parent_company", ""), line)
    if company_fields is None or parent_key is None:
        return
    target = _resolve_target(plan, company_fields, parent_key, line)
    if target is None:
        return
    target.rows += 1
    if endpoint:
        _add_endpoint(plan, target, endpoint, line)


def _plan_existing_endpoints(plan: _Plan) -> None:
    """Which of the file's machines already are endpoints of the existing companies it names (T7):
    one query over those companies' schemas. A machine already in its company counts as existing,
    so a re-run creates nothing; one already in another company of the file is an error."""
    from usage.telemetry.models import Endpoint

    existing = [t.existing_id for t in plan.targets.values() if t.existing_id is not None]
    if not existing or not plan.hardware:
        return
    schemas = Company.objects.filter(pk__in=existing).values_list("pk", "schema_name")
    table = connection.ops.quote_name(Endpoint._meta.db_table)
    # schema and table names are quoted identifiers from our own rows; the ids travel as a parameter
    parts = [f"SELECT {int(pk)}, e.hardware_id FROM {connection.ops.quote_name(schema)}.{table} e "  # noqa: S608
             "JOIN file_hardware f ON f.hardware_id = e.hardware_id" for pk, schema in schemas]
    sql = "WITH file_hardware AS (SELECT unnest(%s::text[]) AS hardware_id) " + " UNION ALL ".join(parts)
    with connection.cursor() as cursor:
        cursor.execute(sql, [list(plan.hardware)])
        found = cursor.fetchall()
    for company_id, hardware_id in found:
        owner = plan.targets[("id", company_id)]
        key, line = plan.hardware[hardware_id]
        if key == owner.key:
            del owner.endpoints[hardware_id]
            owner.endpoints_existing += 1
        else:
            plan.error(line, "hardware_id", f"{hardware_id!r} is already an endpoint of {owner.name}; "
                                            "a machine belongs to one company.")


def _plan(job: ImportJob) -> _Plan:
    plan = _plan_start(job)
    _plan_rows(plan, job.csv_text)
    if plan.rows == 0 and not plan.errors:
        plan.error(2, "", "The file has a header but no rows.")
    _plan_existing_endpoints(plan)
    plan.errors.sort(key=lambda e: e["line"])
    return plan


# --- the dry run -------------------------------------------------------------------------------------

def import_validate(*, job: ImportJob) -> ImportJob:
    """Check the file and record every bad row, or what the import will create (the dry run)."""
    checkable = [ImportStatus.PENDING, ImportStatus.VALIDATING, ImportStatus.READY, ImportStatus.FAILED]
    # committed at once, outside any transaction, so the page shows the check has started
    if not ImportJob.objects.filter(pk=job.pk, status__in=checkable).update(status=ImportStatus.VALIDATING):
        job.refresh_from_db()
        return job  # importing or done: its check is behind it
    with schema_context(get_public_schema_name()):
        plan = _plan(job)
    job.status = ImportStatus.FAILED if plan.errors else ImportStatus.READY
    job.errors = plan.errors
    job.preview = plan.preview()
    job.failure = ""
    job.progress_done, job.progress_total = 0, plan.rows
    job.validated_at = timezone.now()
    job.save(update_fields=["status", "errors", "preview", "failure", "progress_done", "progress_total",
                            "validated_at"])
    return job


# --- progress ----------------------------------------------------------------------------------------

def _progress_key(job_id: int) -> str:
    return f"import-job:{job_id}:progress"


def import_progress_set(*, job_id: int, done: int, total: int) -> None:
    """Live progress goes to Redis, not the database: the import's rows are invisible to other
    connections until its one transaction commits, and the page must see progress before that."""
    # the cache key carries the schema of the connection (tenant-aware keys); the worker and the
    # page are in different schemas, so both read and write this key as the public schema
    try:
        with schema_context(get_public_schema_name()):
            cache.set(_progress_key(job_id), {"done": done, "total": total}, PROGRESS_TTL_SECONDS)
    except (RedisError, OSError):
        logger.warning("import progress not written", extra={"job_id": job_id}, exc_info=True)


def import_progress(*, job: ImportJob) -> dict:
    """Rows done and in total; live from the cache while the import runs."""
    done, total = job.progress_done, job.progress_total
    if job.status == ImportStatus.IMPORTING:
        try:
            with schema_context(get_public_schema_name()):
                live = cache.get(_progress_key(job.pk))
        except (RedisError, OSError):
            live = None
        if live:
            done, total = live["done"], live["total"]
    percent = int(done * 100 / total) if total else (100 if job.status == ImportStatus.DONE else 0)
    return {"status": job.status, "done": done, "total": total, "percent": min(percent, 100)}


class _ProgressWriter:
    """Writes at most a few times a second, and always the last figure."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self.last >= PROGRESS_MIN_INTERVAL_SECONDS:
            self.last = now
            import_progress_set(job_id=self.job_id, done=done, total=total)


# --- the import --------------------------------------------------------------------------------------

@transaction.atomic
def import_request_apply(*, actor: User, job: ImportJob) -> ImportJob:
    """Start the import of a checked file; pressing Import twice starts it once."""
    started = ImportJob.objects.filter(pk=job.pk, company_id=actor.company_id,
                                       status=ImportStatus.READY).update(
        status=ImportStatus.IMPORTING, applied_by=actor, started_at=timezone.now(), progress_done=0)
    job.refresh_from_db()
    if not started:
        if job.status in (ImportStatus.IMPORTING, ImportStatus.DONE):
            return job
        raise ValidationError({"status": "Only a file that was checked without errors can be imported."})
    transaction.on_commit(lambda: _queue("import_apply", job.pk))
    return job


class _PlanInvalid(Exception):
    """The file stopped passing its check between the dry run and the import."""

    def __init__(self, plan: _Plan) -> None:
        super().__init__("the file no longer passes its check")
        self.plan = plan


def import_apply(*, job: ImportJob, progress: Callable[[int, int], None] | None = None) -> ImportJob:
    """Import a checked file in one transaction: all of it, or (on any failure) nothing.

    The file is checked again inside the transaction, against the tree as it is now, so changes
    made since the dry run cannot half-apply it. `progress(done_rows, total_rows)` is called as
    rows are done; by default it writes the live figure the page polls.
    """
    progress = progress or _ProgressWriter(job.pk)
    # committed before the long transaction starts, so the page shows "importing" at once
    runnable = [ImportStatus.READY, ImportStatus.IMPORTING]
    if not ImportJob.objects.filter(pk=job.pk, status__in=runnable).update(status=ImportStatus.IMPORTING,
                                                                           started_at=timezone.now()):
        job.refresh_from_db()
        if job.status == ImportStatus.DONE:
            return job  # a redelivered task: the work is committed already
        raise ValidationError({"status": "Only a file that was checked without errors can be imported."})
    try:
        with schema_context(get_public_schema_name()), transaction.atomic():
            return _apply_in_transaction(job_id=job.pk, progress=progress)
    except _PlanInvalid as invalid:
        return _fail(job, errors=invalid.plan.errors, failure="The file no longer passes its check: "
                     "the companies changed since it was checked. Nothing was imported.")
    except ValidationError as exc:
        return _fail(job, failure=f"Nothing was imported: {'; '.join(exc.messages)}")
    except Exception:
        logger.exception("import failed", extra={"job_id": job.pk})
        _fail(job, failure="The import failed on the server and nothing was imported. Try again; "
                           "if it fails again, contact support with the import number.")
        raise


def _fail(job: ImportJob, *, failure: str, errors: list | None = None) -> ImportJob:
    job.status, job.failure, job.finished_at = ImportStatus.FAILED, failure, timezone.now()
    fields = ["status", "failure", "finished_at"]
    if errors is not None:
        job.errors = errors
        fields.append("errors")
    job.save(update_fields=fields)
    return job


def _apply_in_transaction(*, job_id: int, progress: Callable[[int, int], None]) -> ImportJob:
    job = ImportJob.objects.select_for_update().select_related("company").get(pk=job_id)
    if job.status != ImportStatus.IMPORTING:
        return job  # another run of the same job finished while this one waited for the lock
    with connection.cursor() as cursor:
        # two imports of one partner creating the same companies would collide; one waits
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_LOCK_NAMESPACE, job.company_id])
    plan = _plan(job)
    if plan.errors:
        raise _PlanInvalid(plan)
    actor = job.applied_by or job.created_by
    counts = _apply_plan(plan, actor=actor, progress=progress)
    for name, value in counts.items():
        setattr(job, name, value)
    job.status, job.finished_at = ImportStatus.DONE, timezone.now()
    job.progress_done = job.progress_total = plan.rows
    job.errors, job.failure = [], ""
    job.save()
    audit_record(actor=actor, company=job.company, action="import.apply", obj=job,
                 after={"file_name": job.file_name, **counts})
    return job


def _apply_plan(plan: _Plan, *, actor: User | None, progress: Callable[[int, int], None]) -> dict:
    from .services import company_create

    ids = {t.existing_id for t in plan.targets.values() if t.existing_id}
    ids |= {t.parent_key[1] for t in plan.targets.values() if t.parent_key and t.parent_key[0] == "id"}
    companies: dict[Key, Company] = {("id", pk): c for pk, c in Company.objects.in_bulk(ids).items()}
    counts = dict.fromkeys(("companies_created", "companies_existing", "endpoints_created",
                            "endpoints_existing"), 0)
    done = 0
    progress(done, plan.rows)
    # first appearance in the file is a safe order: a parent the file creates is on an earlier line
    for target in plan.targets.values():
        if target.existing_id is None:
            company = company_create(parent=companies[target.parent_key], name=target.name,
                                     type=target.type, country=target.country, actor=actor)
            counts["companies_created"] += 1
        else:
            company = companies[target.key]
            counts["companies_existing"] += 1
        companies[target.key] = company
        counts["endpoints_existing"] += target.endpoints_existing
        endpoints = list(target.endpoints.values())
        for start in range(0, len(endpoints), ENDPOINT_BATCH):
            batch = endpoints[start:start + ENDPOINT_BATCH]
            created = _endpoints_create(company=company, endpoints=batch, new=target.existing_id is None)
            counts["endpoints_created"] += created
            counts["endpoints_existing"] += len(batch) - created
            progress(min(done + start + len(batch), done + target.rows), plan.rows)
        done += target.rows
        progress(done, plan.rows)
    return counts


def _endpoints_create(*, company: Company, endpoints: list[dict], new: bool) -> int:
    """Create the machines the company does not have yet (T7: the hardware id is the machine);
    returns how many were created."""
    from usage.telemetry.models import Endpoint

    with tenant_context(company):
        known = set() if new else set(
            Endpoint.objects.filter(hardware_id__in=[e["hardware_id"] for e in endpoints])
            .values_list("hardware_id", flat=True))
        fresh = [Endpoint(**e) for e in endpoints if e["hardware_id"] not in known]
        # ignore_conflicts: an agent registering the same machine meanwhile is the same endpoint
        Endpoint.objects.bulk_create(fresh, ignore_conflicts=True)
    return len(fresh)


# --- reads for the pages -----------------------------------------------------------------------------

def import_jobs_recent(*, company: Company, limit: int = 20):
    """The company's latest imports, newest first (the CSV text is not loaded)."""
    return (ImportJob.objects.filter(company=company).defer("csv_text", "errors", "preview")
            .select_related("created_by").order_by("-created_at")[:limit])
