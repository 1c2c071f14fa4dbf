"""The agent's side of the product (SPEC T1-T7): install tokens, registration, agent credentials,
heartbeat ingestion and the mailbox inventory.

The wire contract is SPEC "Agent protocol v1"; docs/agent-api.md describes it for agent builders.

Ingestion is the hot path (>= 5,000 heartbeats/s on two cores): validation is plain Python over the
decoded JSON, and a batch is written with ONE SQL statement in the company's schema, committed
before the answer (autocommit), so a 2xx means the heartbeats are durable. Duplicates (T4) vanish
in the database on the heartbeat id; the number of queries does not grow with the batch size.
"""

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import tenant_context

from companies.audit import audit_record
from companies.models import Company, CompanyStatus, User
from gz_console.text import text_unstorable
from licensing.models import SeatState
from licensing.seats import SeatInfo, seat_assign, seat_state

from .locks import ingest_lock_key
from .models import LATE_WINDOW, AgentCredential, InstallToken, heartbeats_earliest, late_horizon
from .modules import MODULE_BITS, SCAN_MODES, XDR_SENSOR_BITS
from .telemetry.models import MachineType, OsFamily, OsType

MAX_HEARTBEATS_PER_REQUEST = 1000
MAX_MAILBOXES_PER_REQUEST = 10000
MAX_UPTIME_SECONDS = 86400
# an agent's clock may run a little ahead; more than this is a wrong clock, not a late delivery
MAX_CLOCK_AHEAD = dt.timedelta(minutes=5)
# the late horizon (usage.models.late_horizon: the earlier of 35 days ago and the start of the previous
# month): older data is refused, because the raw rows that would recognise it as a resend (T4) are purged
# by then (heartbeats_purge uses the same horizon)

OS_FAMILIES = frozenset(OsFamily.values)
OS_TYPES = frozenset(OsType.values)
MACHINE_TYPES = frozenset(MachineType.values)
ENVIRONMENTS = ("on_premises", "cloud")
MAILBOX_PRODUCTS = ("exchange", "email")


class AgentAuthError(Exception):
    """The token is missing, unknown or revoked (401)."""


class UnknownEndpoint(AgentAuthError):
    """The credential is valid but its endpoint is gone from the company's inventory (401: the
    agent registers again)."""


class BatchTooLarge(Exception):
    """More items than one request may carry (413)."""


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


class Registration(NamedTuple):
    created: bool
    endpoint_id: uuid.UUID
    agent_token: str
    seat: SeatInfo


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _describe(value: Any) -> str:
    """A received value quoted in an error, cut short so an error never echoes a large body."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- install tokens (T1) --------------------------------------------------------------------------------

@transaction.atomic
def install_token_for(*, company: Company) -> InstallToken:
    """The company's active install token, created on first use. The company row is locked so two
    first calls do not create two tokens."""
    Company.objects.select_for_update().filter(pk=company.pk).first()
    token = InstallToken.objects.filter(company=company, revoked_at__isnull=True).order_by("-pk").first()
    if token is None:
        token = InstallToken.objects.create(company=company, token=secrets.token_urlsafe(32))
    return token


@transaction.atomic
def install_token_rotate(*, actor: User | None, company: Company) -> InstallToken:
    """A new install token; the old one stops registering agents at once. Agents already registered
    keep working: they use their own credentials, not the install token."""
    Company.objects.select_for_update().filter(pk=company.pk).first()
    now = timezone.now()
    old_ids = list(InstallToken.objects.filter(company=company, revoked_at__isnull=True)
                   .values_list("pk", flat=True))
    InstallToken.objects.filter(pk__in=old_ids).update(revoked_at=now)
    token = InstallToken.objects.create(company=company, token=secrets.token_urlsafe(32))
    # the token is a secret: the log names the rows, never their values
    audit_record(actor=actor, company=company, action="agent.install_token_rotate", obj=token,
                 before={"install_token_ids": old_ids}, after={"install_token_ids": [token.pk]})
    return token


# --- registration and credentials (T1, T7) ---------------------------------------------------------------


def _text(payload: dict, name: str, max_length: int, errors: dict[str, str]) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        errors[name] = "required: a non-empty string."
    elif len(value) > max_length:
        errors[name] = f"at most {max_length} characters."
    elif problem := text_unstorable(value):
        errors[name] = problem
    return value if isinstance(value, str) else ""


def _choice(payload: dict, name: str, allowed, errors: dict[str, str]) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or value not in allowed:
        errors[name] = f"must be one of {', '.join(sorted(allowed))}, not {_describe(value)}."
    return value


def registration_validate(payload: Any) -> dict[str, str]:
    """X2: the registration body, or a ValidationError whose keys are the fields at fault."""
    if not isinstance(payload, dict):
        raise ValidationError({"body": "must be a JSON object."})
    errors: dict[str, str] = {}
    cleaned = {
        "hardware_id": _text(payload, "hardware_id", 200, errors),
        "hostname": _text(payload, "hostname", 255, errors),
        "os_family": _choice(payload, "os_family", OS_FAMILIES, errors),
        "os_type": _choice(payload, "os_type", OS_TYPES, errors),
        "machine_type": _choice(payload, "machine_type", MACHINE_TYPES, errors),
    }
    if errors:
        raise ValidationError(errors)
    return cleaned


ENDPOINT_UPSERT = """
INSERT INTO telemetry_endpoint (id, hardware_id, hostname, os_family, os_type, machine_type, registered_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (hardware_id) DO UPDATE SET hostname = EXCLUDED.hostname, os_family = EXCLUDED.os_family,
    os_type = EXCLUDED.os_type, machine_type = EXCLUDED.machine_type
RETURNING id, (xmax = 0) AS inserted
"""


def _token_usable(token: Any) -> bool:
    """A token worth looking up: a string of sane length with nothing PostgreSQL cannot hold."""
    return isinstance(token, str) and 0 < len(token) <= 200 and "\x00" not in token


def install_token_company(*, install_token: str) -> Company | None:
    if not _token_usable(install_token):
        return None
    token = (InstallToken.objects.select_related("company")
             .filter(token=install_token, revoked_at__isnull=True).first())
    return token.company if token else None


@transaction.atomic
def agent_register(*, install_token: str, hardware_id: str, hostname: str, os_family: str, os_type: str,
                   machine_type: str, now: dt.datetime | None = None) -> Registration:
    """T1/T7: register the machine into the install token's company. The same hardware id is the
    same endpoint: it keeps its id and its seat, its details are updated, and its earlier agent
    credentials stop working. A suspended company still registers; the seat says expired (H4).

    Concurrent registrations of one hardware id meet on the unique hardware id: the upsert makes
    the second wait for the first and then update the row the first created."""
    now = now or timezone.now()
    company = install_token_company(install_token=install_token)
    if company is None:
        raise AgentAuthError("The install token is unknown or was replaced: download a current install "
                             "package from the console.")
    registration_validate({"hardware_id": hardware_id, "hostname": hostname, "os_family": os_family,
                           "os_type": os_type, "machine_type": machine_type})
    hardware_id = hardware_id.strip()  # T7: " ABC" and "ABC" are one machine, never two endpoints
    with tenant_context(company), connection.cursor() as cursor:
        cursor.execute(ENDPOINT_UPSERT, [uuid.uuid4(), hardware_id, hostname, os_family, os_type, machine_type,
                                         now])
        endpoint_id, created = cursor.fetchone()
    endpoint_id = uuid.UUID(str(endpoint_id))
    seat = seat_now(company=company, seat=seat_assign(company=company, endpoint_id=endpoint_id, now=now),
                    today=now.date())
    AgentCredential.objects.filter(company=company, endpoint_id=endpoint_id, revoked_at__isnull=True) \
        .update(revoked_at=now)
    agent_token = secrets.token_urlsafe(32)
    AgentCredential.objects.create(company=company, endpoint_id=endpoint_id, token_hash=_hash(agent_token))
    return Registration(created=created, endpoint_id=endpoint_id, agent_token=agent_token, seat=seat)


def agent_authenticate(*, token: str) -> tuple[Company, uuid.UUID] | None:
    """The company and endpoint an agent token stands for; None when unknown or revoked."""
    if not _token_usable(token):
        return None
    credential = (AgentCredential.objects.select_related("company")
                  .filter(token_hash=_hash(token), revoked_at__isnull=True).first())
    if credential is None:
        return None
    return credential.company, credential.endpoint_id


def seat_now(*, company: Company, seat: SeatInfo | None, today: dt.date) -> SeatInfo:
    """T5: what the agent is told. A suspended company's endpoints are expired, and so is a trial
    whose last day has passed even before the nightly job records it; an endpoint without a seat
    row (removed from the inventory) is not protected either."""
    if company.status != CompanyStatus.ACTIVE or seat is None:
        return SeatInfo(SeatState.EXPIRED, None)
    if seat.state == SeatState.TRIAL and seat.trial_ends_on is not None and seat.trial_ends_on < today:
        return SeatInfo(SeatState.EXPIRED, None)
    return seat


def agent_seat(*, company: Company, endpoint_id: uuid.UUID, today: dt.date) -> SeatInfo:
    return seat_now(company=company, seat=seat_state(company=company, endpoint_id=endpoint_id), today=today)


# --- heartbeats (T2-T6) ----------------------------------------------------------------------------------

def _observed_at(value: Any, earliest: dt.datetime, latest: dt.datetime) -> tuple[dt.datetime | None, str]:
    if not isinstance(value, str):
        return None, "observed_at: required: an ISO 8601 time with a time zone, e.g. 2026-10-05T12:00:00Z."
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None, f"observed_at: {_describe(value)} is not an ISO 8601 time, e.g. 2026-10-05T12:00:00Z."
    if when.tzinfo is None:
        return None, "observed_at: the time zone is missing; send UTC with a Z, e.g. 2026-10-05T12:00:00Z."
    if when > latest:
        return None, "observed_at: more than 5 minutes in the future; check the endpoint's clock."
    if when < earliest:
        return None, (f"observed_at: {when.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ} is before the earliest time "
                      f"accepted now, {earliest.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ} (the earlier of "
                      f"{LATE_WINDOW.days} days ago and the start of the previous month, or where raw records "
                      "were last purged); older data is refused because the raw records that recognise a resend "
                      "are purged by then.")
    return when.astimezone(dt.UTC), ""


def _keys_mask(value: Any, name: str, bits: dict[str, int], what: str) -> tuple[int, str]:
    if not isinstance(value, list):
        plural = f"{what[:-1]}ies" if what.endswith("y") else f"{what}s"
        return 0, f"{name}: required: a list of {plural} (may be empty)."
    mask = 0
    for key in value:
        bit = bits.get(key) if isinstance(key, str) else None
        if bit is None:
            return 0, f"{name}: unknown {what} {_describe(key)}."
        mask |= bit
    return mask, ""


def _heartbeat_row(item: Any, endpoint_id: str, earliest: dt.datetime,
                   latest: dt.datetime) -> tuple[tuple | None, list[str]]:
    """One heartbeat checked on its own (T6): the row to store, or the errors, each naming its
    field. Fields the protocol does not know are ignored: it grows only by optional fields."""
    if not isinstance(item, dict):
        return None, ["heartbeat: must be a JSON object."]
    errors: list[str] = []
    heartbeat_id = item.get("id")
    try:
        heartbeat_id = str(uuid.UUID(heartbeat_id))
    except (TypeError, ValueError, AttributeError):
        errors.append("id: required: a UUID, unique per heartbeat.")
    if "endpoint_id" in item and str(item["endpoint_id"]).lower() != endpoint_id:
        errors.append("endpoint_id: not the endpoint of this agent token (unknown endpoint).")
    observed_at, error = _observed_at(item.get("observed_at"), earliest, latest)
    if error:
        errors.append(error)
    os_family, os_type, machine_type = item.get("os_family"), item.get("os_type"), item.get("machine_type")
    if not isinstance(os_family, str) or os_family not in OS_FAMILIES:
        errors.append(f"os_family: must be windows, linux or macos, not {_describe(os_family)}.")
    if not isinstance(os_type, str) or os_type not in OS_TYPES:
        errors.append(f"os_type: must be workstation or server, not {_describe(os_type)}.")
    if not isinstance(machine_type, str) or machine_type not in MACHINE_TYPES:
        errors.append(f"machine_type: must be physical or virtual, not {_describe(machine_type)}.")
    container_host = item.get("container_host")
    if container_host is not True and container_host is not False:
        errors.append(f"container_host: must be true or false, not {_describe(container_host)}.")
    modules, error = _keys_mask(item.get("modules"), "modules", MODULE_BITS, "module key")
    if error:
        errors.append(error)
    scan_mode = SCAN_MODES.get(item.get("scan_mode")) if isinstance(item.get("scan_mode"), str) else None
    if scan_mode is None:
        errors.append(f"scan_mode: must be local, hybrid or central, not {_describe(item.get('scan_mode'))}.")
    uptime = item.get("uptime_seconds")
    if type(uptime) is not int or not 0 <= uptime <= MAX_UPTIME_SECONDS:
        errors.append(f"uptime_seconds: must be a whole number from 0 to {MAX_UPTIME_SECONDS}, "
                      f"not {_describe(uptime)}.")
    sensors, error = _keys_mask(item.get("xdr_sensors"), "xdr_sensors", XDR_SENSOR_BITS, "sensor category")
    if error:
        errors.append(error)
    if errors:
        return None, errors
    return (heartbeat_id, observed_at, os_family, os_type, machine_type, container_host, modules, scan_mode,
            uptime, sensors), errors


def heartbeats_validate(*, endpoint_id: uuid.UUID, items: list, now: dt.datetime) -> tuple[list[tuple], IngestResult]:
    """The rows to store and the result so far: each invalid item is rejected on its own, and a
    heartbeat id repeated in the batch is kept once (T4)."""
    if len(items) > MAX_HEARTBEATS_PER_REQUEST:
        raise BatchTooLarge(f"heartbeats: at most {MAX_HEARTBEATS_PER_REQUEST} heartbeats per request, this one "
                            f"has {len(items)}; send them in smaller batches.")
    result = IngestResult()
    earliest, latest = heartbeats_earliest(now), now + MAX_CLOCK_AHEAD
    endpoint = str(endpoint_id)
    rows: dict[str, tuple] = {}
    for index, item in enumerate(items):
        row, errors = _heartbeat_row(item, endpoint, earliest, latest)
        if row is None:
            raw_id = item.get("id") if isinstance(item, dict) else None
            result.rejected.append({"index": index,
                                    "id": raw_id if isinstance(raw_id, str) and len(raw_id) <= 64 else None,
                                    "error": "; ".join(errors)})
        elif row[0] in rows:
            result.duplicates += 1
        else:
            rows[row[0]] = row
    return list(rows.values()), result


# One statement, so it is atomic and durable on its own (autocommit) and costs one round trip
# whatever the batch size: the endpoint's last_seen_at moves forward (and proves the endpoint is
# still in the inventory: no endpoint row, nothing is stored), the heartbeats go in with duplicates
# dropped on the id (T4), and the company is marked for the rollup when anything new arrived.
# A heartbeat of a finalized month is stored like any other; the rollup records it as a late
# adjustment (U12).
HEARTBEATS_INSERT = """
WITH endpoint AS (
    UPDATE telemetry_endpoint SET last_seen_at = GREATEST(last_seen_at, %s) WHERE id = %s RETURNING id
), ingesting AS (
    -- held until commit: the rollup reads its upper watermark only when no insert is in flight
    SELECT pg_advisory_xact_lock_shared(%s)
), inserted AS (
    INSERT INTO telemetry_heartbeat (id, endpoint_id, observed_at, received_at, os_family, os_type,
                                     machine_type, container_host, modules, scan_mode, uptime_seconds,
                                     xdr_sensors)
    SELECT v.id::uuid, endpoint.id, v.observed_at, %s, v.os_family, v.os_type, v.machine_type,
           v.container_host, v.modules, v.scan_mode, v.uptime_seconds, v.xdr_sensors
    FROM endpoint, ingesting, (VALUES {values}) AS v (id, observed_at, os_family, os_type, machine_type, container_host,
                                           modules, scan_mode, uptime_seconds, xdr_sensors)
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
), pending AS (
    INSERT INTO public.usage_pendingrollup (company_id, since, months)
    SELECT %s, %s, ARRAY[]::date[] WHERE EXISTS (SELECT FROM inserted)
    ON CONFLICT (company_id) DO NOTHING
)
SELECT (SELECT count(*) FROM endpoint), (SELECT count(*) FROM inserted)
"""
HEARTBEAT_VALUES = ("(%s, %s::timestamptz, %s, %s, %s, %s::boolean, %s::integer, %s::smallint, %s::integer, "
                    "%s::smallint)")


def heartbeats_ingest(*, company: Company, endpoint_id: uuid.UUID, items: list, now: dt.datetime) -> IngestResult:
    """T2-T6: validate each heartbeat on its own and store the valid ones in the company's schema
    before answering. `accepted` counts rows stored now; `duplicates` counts valid heartbeats
    already stored or repeated in the batch."""
    rows, result = heartbeats_validate(endpoint_id=endpoint_id, items=items, now=now)
    if not rows:
        return result
    last_seen = min(max(row[1] for row in rows), now)
    params: list[Any] = [last_seen, endpoint_id, ingest_lock_key(company.pk), now]
    for row in rows:
        params.extend(row)
    params += [company.pk, now]
    sql = HEARTBEATS_INSERT.format(values=", ".join([HEARTBEAT_VALUES] * len(rows)))
    with tenant_context(company), connection.cursor() as cursor:
        cursor.execute(sql, params)
        endpoints, inserted = cursor.fetchone()
    if not endpoints:
        raise UnknownEndpoint("This endpoint is no longer in the company's inventory (unknown endpoint): "
                              "register again with the install token.")
    result.accepted = inserted
    result.duplicates += len(rows) - inserted
    return result


# --- mailbox inventory (U14, U15) ------------------------------------------------------------------------

# one mailbox's emails in one report; far above any real traffic, far below what the bigint sums hold
MAX_EMAILS_PER_REPORT = 1_000_000_000


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_EMAILS_PER_REPORT


def _mailbox_rows(mailboxes: Any, errors: dict[str, str]) -> dict[str, list]:
    """Mailboxes by id; one id sent twice in a report is merged (traffic summed, last flags)."""
    if not isinstance(mailboxes, list):
        errors["mailboxes"] = "required: a list of mailboxes (may be empty)."
        return {}
    if len(mailboxes) > MAX_MAILBOXES_PER_REQUEST:
        raise BatchTooLarge(f"mailboxes: at most {MAX_MAILBOXES_PER_REQUEST} mailboxes per request, this one "
                            f"has {len(mailboxes)}; send them in smaller reports.")
    rows: dict[str, list] = {}
    for index, box in enumerate(mailboxes):
        at = f"mailboxes[{index}]"
        if not isinstance(box, dict):
            errors[at] = "must be a JSON object."
            continue
        box_id, primary = box.get("id"), box.get("primary")
        object_class = box.get("object_class")
        object_class = "" if object_class is None else object_class
        sent, received = box.get("emails_sent", 0), box.get("emails_received", 0)
        box_errors: dict[str, str] = {}
        if not isinstance(box_id, str) or not box_id.strip() or len(box_id) > 200:
            box_errors[f"{at}.id"] = "required: a non-empty string of at most 200 characters."
        elif problem := text_unstorable(box_id):
            box_errors[f"{at}.id"] = problem
        if primary is not True and primary is not False:
            box_errors[f"{at}.primary"] = f"must be true or false, not {_describe(primary)}."
        if not isinstance(object_class, str) or len(object_class) > 64:
            box_errors[f"{at}.object_class"] = ("must be a string of at most 64 characters (may be empty or null), "
                                                f"not {_describe(object_class)}.")
        elif problem := text_unstorable(object_class):
            box_errors[f"{at}.object_class"] = problem
        for name, value in (("emails_sent", sent), ("emails_received", received)):
            if not _count(value):
                box_errors[f"{at}.{name}"] = (f"must be a whole number from 0 to {MAX_EMAILS_PER_REPORT:,}, "
                                              f"not {_describe(value)}.")
        if box_errors:
            errors.update(box_errors)
            continue
        if box_id in rows:
            rows[box_id][1:] = [primary, object_class, rows[box_id][3] + sent, rows[box_id][4] + received]
        else:
            rows[box_id] = [box_id, primary, object_class, sent, received]
    return rows


MAILBOXES_UPSERT = """
WITH stored AS (
    INSERT INTO telemetry_mailboxmonth AS m (mailbox_id, product, environment, month, "primary", object_class,
                                            emails_sent, emails_received, last_observed_at)
    SELECT v.mailbox_id, %s, %s, %s::date, v.is_primary, v.object_class, v.sent, v.received, %s::timestamptz
    FROM (VALUES {values}) AS v (mailbox_id, is_primary, object_class, sent, received)
    ON CONFLICT (product, mailbox_id, month) DO UPDATE SET
        environment = CASE WHEN EXCLUDED.last_observed_at >= m.last_observed_at
                           THEN EXCLUDED.environment ELSE m.environment END,
        "primary" = CASE WHEN EXCLUDED.last_observed_at >= m.last_observed_at
                         THEN EXCLUDED."primary" ELSE m."primary" END,
        object_class = CASE WHEN EXCLUDED.last_observed_at >= m.last_observed_at
                            THEN EXCLUDED.object_class ELSE m.object_class END,
        emails_sent = LEAST(m.emails_sent::numeric + EXCLUDED.emails_sent, 1000000000000000)::bigint,
        emails_received = LEAST(m.emails_received::numeric + EXCLUDED.emails_received, 1000000000000000)::bigint,
        last_observed_at = GREATEST(m.last_observed_at, EXCLUDED.last_observed_at)
    RETURNING 1
), pending AS (
    -- the month is recomputed by the next rollup even when no heartbeat touches it (U14, U15)
    INSERT INTO public.usage_pendingrollup AS p (company_id, since, months)
    SELECT %s, %s, ARRAY[%s::date] WHERE EXISTS (SELECT FROM stored)
    ON CONFLICT (company_id) DO UPDATE SET months = p.months || EXCLUDED.months
    WHERE NOT p.months @> EXCLUDED.months
)
SELECT count(*) FROM stored
"""
MAILBOX_VALUES = "(%s, %s::boolean, %s, %s::bigint, %s::bigint)"


def mailboxes_ingest(*, company: Company, payload: Any, now: dt.datetime | None = None) -> int:
    """U14/U15: a mailbox inventory report, merged into the observed month: the latest primary
    flag, object class and environment win, email counts add up. All or nothing: a report with an
    error stores nothing (X2) and the errors name each field. Returns the mailboxes stored."""
    now = now or timezone.now()
    if not isinstance(payload, dict):
        raise ValidationError({"body": "must be a JSON object."})
    errors: dict[str, str] = {}
    observed_at, error = _observed_at(payload.get("observed_at"), late_horizon(now), now + MAX_CLOCK_AHEAD)
    if error:
        errors["observed_at"] = error.removeprefix("observed_at: ")
    _choice(payload, "environment", ENVIRONMENTS, errors)
    _choice(payload, "product", MAILBOX_PRODUCTS, errors)
    rows = _mailbox_rows(payload.get("mailboxes"), errors)
    if errors:
        raise ValidationError(errors)
    if not rows:
        return 0
    month = observed_at.date().replace(day=1)
    params: list[Any] = [payload["product"], payload["environment"], month, observed_at]
    for row in rows.values():
        params.extend(row)
    params += [company.pk, now, month]
    sql = MAILBOXES_UPSERT.format(values=", ".join([MAILBOX_VALUES] * len(rows)))
    with tenant_context(company), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]
