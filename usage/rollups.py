"""Rollups: heartbeats -> endpoint-day -> endpoint-month -> company-month usage (U1-U15).

Every step is set-based SQL in the company's schema. Exactly-once from a watermark: the database
numbers each stored heartbeat (`seq`); a rollup reads the newest number while holding the ingest
lock exclusively (for an instant: every insert holds it shared until it commits, so every number
up to the one read is committed), merges the heartbeats between the company's watermark and that
number into endpoint-day, and moves the watermark in the same transaction. A killed worker leaves
both unchanged; heartbeats stored meanwhile wait for the next run. Nothing rewrites the raw rows,
which is what made marking them one by one the rollup's main cost. The later steps recompute
endpoint-month and company-month rows from the lasting rows, so running them twice gives the same
rows. A per-company advisory lock keeps two workers off the same company.
"""

import calendar
import datetime as dt
import math

from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django_tenants.utils import tenant_context

from companies.models import Company
from licensing.seats import licensed_in_period_sql

from .locks import ingest_lock_key
from .models import CompanyMonthUsage, LateAdjustment, MonthClose, PendingRollup
from .modules import MODULE_BITS, SCAN_MODES, XDR_SENSOR_BITS, XDR_SENSOR_ITEMS

ADVISORY_NAMESPACE = 7_700_000_000  # keeps our advisory keys apart from anything else's
LICENSED_IN_MONTH = licensed_in_period_sql(seat="s", start="%(start)s", end="%(end)s")

MERGE_DAYS_SQL = f"""
WITH batch AS (
    SELECT endpoint_id, observed_at, os_family, os_type, machine_type, container_host, modules,
           scan_mode, uptime_seconds, xdr_sensors
    FROM telemetry_heartbeat WHERE seq > %(low)s AND seq <= %(high)s
), days AS (
    SELECT endpoint_id, (observed_at AT TIME ZONE 'UTC')::date AS day,
           bit_or(modules) AS modules, bit_or(xdr_sensors) AS xdr_sensors,
           bool_or(scan_mode = {SCAN_MODES["central"]}) AS used_central_scan,
           sum(uptime_seconds) AS uptime_seconds, bool_or(container_host) AS container_host,
           count(*) AS heartbeats, min(observed_at) AS first_seen_at, max(observed_at) AS last_seen_at,
           (array_agg(os_family ORDER BY observed_at DESC))[1] AS os_family,
           (array_agg(os_type ORDER BY observed_at DESC))[1] AS os_type,
           (array_agg(machine_type ORDER BY observed_at DESC))[1] AS machine_type
    FROM batch GROUP BY 1, 2
)
INSERT INTO telemetry_endpointday AS d (endpoint_id, day, modules, xdr_sensors, used_central_scan,
    uptime_seconds, os_family, os_type, machine_type, container_host, heartbeats, first_seen_at, last_seen_at)
SELECT endpoint_id, day, modules, xdr_sensors, used_central_scan, uptime_seconds, os_family, os_type,
       machine_type, container_host, heartbeats, first_seen_at, last_seen_at FROM days
ON CONFLICT (endpoint_id, day) DO UPDATE SET
    modules = d.modules | EXCLUDED.modules,
    xdr_sensors = d.xdr_sensors | EXCLUDED.xdr_sensors,
    used_central_scan = d.used_central_scan OR EXCLUDED.used_central_scan,
    uptime_seconds = d.uptime_seconds + EXCLUDED.uptime_seconds,
    container_host = d.container_host OR EXCLUDED.container_host,
    heartbeats = d.heartbeats + EXCLUDED.heartbeats,
    first_seen_at = LEAST(d.first_seen_at, EXCLUDED.first_seen_at),
    last_seen_at = GREATEST(d.last_seen_at, EXCLUDED.last_seen_at),
    os_family = CASE WHEN EXCLUDED.last_seen_at >= d.last_seen_at THEN EXCLUDED.os_family ELSE d.os_family END,
    os_type = CASE WHEN EXCLUDED.last_seen_at >= d.last_seen_at THEN EXCLUDED.os_type ELSE d.os_type END,
    machine_type = CASE WHEN EXCLUDED.last_seen_at >= d.last_seen_at THEN EXCLUDED.machine_type
                        ELSE d.machine_type END
RETURNING endpoint_id, date_trunc('month', day)::date
"""

MONTHS_SQL = """
INSERT INTO telemetry_endpointmonth AS m (endpoint_id, month, modules, xdr_sensors, used_central_scan,
    uptime_seconds, os_family, os_type, machine_type, container_host, heartbeats, first_seen_at, last_seen_at)
SELECT d.endpoint_id, date_trunc('month', d.day)::date, bit_or(d.modules), bit_or(d.xdr_sensors),
       bool_or(d.used_central_scan), sum(d.uptime_seconds),
       (array_agg(d.os_family ORDER BY d.last_seen_at DESC))[1],
       (array_agg(d.os_type ORDER BY d.last_seen_at DESC))[1],
       (array_agg(d.machine_type ORDER BY d.last_seen_at DESC))[1],
       bool_or(d.container_host), sum(d.heartbeats), min(d.first_seen_at), max(d.last_seen_at)
FROM telemetry_endpointday d
JOIN (SELECT DISTINCT * FROM unnest(%s::uuid[], %s::date[])) AS touched(endpoint_id, month)
  ON touched.endpoint_id = d.endpoint_id
 AND d.day >= touched.month AND d.day < (touched.month + interval '1 month')
GROUP BY 1, 2
ON CONFLICT (endpoint_id, month) DO UPDATE SET
    modules = EXCLUDED.modules, xdr_sensors = EXCLUDED.xdr_sensors,
    used_central_scan = EXCLUDED.used_central_scan, uptime_seconds = EXCLUDED.uptime_seconds,
    os_family = EXCLUDED.os_family, os_type = EXCLUDED.os_type, machine_type = EXCLUDED.machine_type,
    container_host = EXCLUDED.container_host, heartbeats = EXCLUDED.heartbeats,
    first_seen_at = EXCLUDED.first_seen_at, last_seen_at = EXCLUDED.last_seen_at
"""

# One pass over the month's endpoint rows. `licensed`: held a seat at some time in the month (U1).
# Linux virtual machines count as servers (U6). Deductions apply only when the add-on is enabled,
# so nothing is billed twice and nothing goes unbilled.
FIGURES_SQL = f"""
WITH em AS (
    SELECT m.*,
           (m.machine_type = 'virtual' AND (m.os_type = 'server' OR m.os_family = 'linux')) AS vs,
           (m.machine_type = 'virtual' AND NOT (m.os_type = 'server' OR m.os_family = 'linux')) AS vdi,
           EXISTS (SELECT 1 FROM public.licensing_seatassignment s
                   WHERE s.company_id = %(company)s AND s.endpoint_id = m.endpoint_id
                     AND {LICENSED_IN_MONTH}) AS licensed
    FROM telemetry_endpointmonth m WHERE m.month = %(month)s
), lic AS (
    SELECT *, (vs AND used_central_scan AND %(sve)s) AS sve_vs,
              (vdi AND used_central_scan AND %(sve)s) AS sve_vdi,
              (modules & {MODULE_BITS["container_protection"]} <> 0 AND %(cp)s) AS cp
    FROM em WHERE licensed
)
SELECT
    (SELECT count(*) FROM em),
    count(*),
    count(*) FILTER (WHERE modules & {MODULE_BITS["antimalware"]} <> 0 AND NOT sve_vs AND NOT sve_vdi AND NOT cp),
    count(*) FILTER (WHERE modules & {MODULE_BITS["patch_management"]} <> 0),
    count(*) FILTER (WHERE modules & {MODULE_BITS["full_disk_encryption"]} <> 0),
    count(*) FILTER (WHERE modules & {MODULE_BITS["edr"]} <> 0),
    count(*) FILTER (WHERE modules & {MODULE_BITS["integrity_monitoring"]} <> 0),
    count(*) FILTER (WHERE modules & {MODULE_BITS["hyperdetect"] | MODULE_BITS["sandbox_analyzer"]} <> 0),
    count(*) FILTER (WHERE modules & {MODULE_BITS["hyperdetect"]} <> 0),
    count(*) FILTER (WHERE modules & {MODULE_BITS["sandbox_analyzer"]} <> 0),
    count(*) FILTER (WHERE sve_vs AND NOT cp),
    COALESCE(sum(uptime_seconds) FILTER (WHERE sve_vdi), 0),
    count(*) FILTER (WHERE cp),
    bit_or(xdr_sensors)
FROM lic
"""
FIGURE_COLUMNS = ["active_endpoints", "licensed_endpoints", "endpoint_usage", "patch_management",
                  "full_disk_encryption", "edr", "integrity_monitoring", "ats", "hyperdetect", "sandbox_analyzer",
                  "sve_vs", "_vdi_seconds", "container_protection", "_xdr_sensors"]

RETENTION_SQL = f"""
WITH tiers AS (SELECT * FROM unnest(%(keys)s::text[], %(ranks)s::int[], %(enabled)s::timestamptz[],
                                    %(disabled)s::timestamptz[]) AS t(key, rank, enabled_at, disabled_at)),
charged AS (
    SELECT (SELECT t.key FROM tiers t
            WHERE t.enabled_at <= m.last_seen_at AND (t.disabled_at IS NULL OR t.disabled_at >= %(start)s)
            ORDER BY t.rank DESC LIMIT 1) AS tier
    FROM telemetry_endpointmonth m
    WHERE m.month = %(month)s AND EXISTS (
        SELECT 1 FROM public.licensing_seatassignment s
        WHERE s.company_id = %(company)s AND s.endpoint_id = m.endpoint_id AND {LICENSED_IN_MONTH})
)
SELECT tier, count(*) FROM charged WHERE tier IS NOT NULL GROUP BY tier
"""

MAILBOX_SQL = """
SELECT count(*) FILTER (WHERE product = 'exchange'),
       count(*) FILTER (WHERE product = 'email' AND "primary"
                        AND lower(COALESCE(object_class, '')) IN ('', 'user')
                        AND (emails_sent > 0 OR emails_received > 0))
FROM telemetry_mailboxmonth WHERE month = %(month)s
"""

# add-on figure -> the own-use item that must be enabled in the month for it to count (U13)
GATED = {
    "patch_management": "patch_management", "full_disk_encryption": "full_disk_encryption", "edr": "edr",
    "integrity_monitoring": "integrity_monitoring", "ats": "advanced_threat_security",
    "hyperdetect": "advanced_threat_security", "sandbox_analyzer": "advanced_threat_security",
    "sve_vs": "sve", "sve_vdi_hours": "sve", "container_protection": "container_protection",
    "mdr_foundations": "mdr_foundations", "exchange_mailboxes": "security_for_exchange",
    "email_security_mailboxes": "email_security",
    "xdr_identity": "xdr_identity", "xdr_productivity": "xdr_productivity", "xdr_network": "xdr_network",
    "xdr_cloud": "xdr_cloud",
}


def month_bounds(month: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
    days = calendar.monthrange(month.year, month.month)[1]
    return start, start + dt.timedelta(days=days)


def month_start(moment: dt.datetime | dt.date) -> dt.date:
    return dt.date(moment.year, moment.month, 1)


def month_previous(moment: dt.datetime | dt.date) -> dt.date:
    """The first day of the month before the one `moment` falls in."""
    return month_start(month_start(moment) - dt.timedelta(days=1))


def _enabled_in_month(company: Company, month: dt.date):
    """Own-use items enabled at any time in the month, with their intervals (history kept by
    licensing.entitlements)."""
    from licensing.entitlements import own_use_during

    start, end = month_bounds(month)
    return own_use_during(company_ids=[company.pk], start=start, end=end).get(company.pk, {})


def _product_type(enabled: dict[str, list[tuple]]) -> str:
    """U11: the product type in force last in the month."""
    candidates = [(max(e for e, _ in spans), key) for key, spans in enabled.items()
                  if key in ("endpoint_security", "edr_standalone")]
    return max(candidates)[1] if candidates else ""


def usage_month_compute(*, company: Company, month: dt.date) -> dict:
    """The company's own figures for the month, computed from its schema (call inside its
    tenant_context). Pure read: nothing is written."""
    from licensing.models import CatalogItem, License

    start, end = month_bounds(month)
    enabled = _enabled_in_month(company, month)
    params = {"company": company.pk, "month": month, "start": start, "end": end,
              "sve": "sve" in enabled, "cp": "container_protection" in enabled}
    with connection.cursor() as cursor:
        cursor.execute(FIGURES_SQL, params)
        raw = dict(zip(FIGURE_COLUMNS, cursor.fetchone(), strict=True))
        cursor.execute(MAILBOX_SQL, params)
        exchange, email = cursor.fetchone()
        tiers = {}
        if "data_retention" in enabled:
            ranks = dict(CatalogItem.objects.filter(kind="retention_tier").values_list("key", "rank"))
            spans = [(key, ranks[key], e, d) for key in ranks for e, d in enabled.get(key, [])]
            if spans:
                cursor.execute(RETENTION_SQL, {**params, "keys": [s[0] for s in spans],
                                               "ranks": [s[1] for s in spans], "enabled": [s[2] for s in spans],
                                               "disabled": [s[3] for s in spans]})
                tiers = dict(cursor.fetchall())
    figures = {k: v for k, v in raw.items() if not k.startswith("_")}
    figures["sve_vdi_hours"] = math.ceil(raw["_vdi_seconds"] / 3600)  # U7: per company and month
    sensors = raw["_xdr_sensors"] or 0
    for wire, item in XDR_SENSOR_ITEMS.items():  # U5
        deployed = bool(sensors & XDR_SENSOR_BITS[wire])
        figures[item] = figures["licensed_endpoints"] if deployed and item in enabled and "xdr" in enabled else 0
    figures["mdr_foundations"] = figures["edr"] if "mdr_foundations" in enabled else 0  # U10 (EDR counted first)
    figures["exchange_mailboxes"] = exchange
    figures["email_security_mailboxes"] = email
    for figure, item in GATED.items():  # U13: an add-on not enabled counts nothing
        if item not in enabled:
            figures[figure] = 0
    product_type = _product_type(enabled)
    if product_type == "edr_standalone":  # U11: active (licensed) endpoints of EDR companies
        figures["endpoint_usage"] = figures["licensed_endpoints"]
    lic = License.objects.filter(company=company).first()
    return {
        **figures,
        "product_type": product_type,
        "data_retention": dict(tiers),
        "enabled": sorted(enabled),
        "reserved_seats": lic.reserved_seats if lic else None,
        "minimum_usage": lic.minimum_usage if lic else None,
        "end_date": _effective_end(company),
        "auto_renew": bool(lic and lic.auto_renew),
    }


def _effective_end(company: Company):
    from licensing.subscriptions import effective_end_date

    return effective_end_date(company)[0]


def _store(*, company: Company, month: dt.date, figures: dict) -> CompanyMonthUsage:
    row = CompanyMonthUsage.objects.filter(company=company, month=month).first()
    if row is not None and row.finalized_at is not None:
        _record_late(row, figures)
        return row
    row, _ = CompanyMonthUsage.objects.update_or_create(company=company, month=month, defaults=figures)
    return row


def _record_late(row: CompanyMonthUsage, figures: dict) -> None:
    """U12: a finalized month never changes; what arrived since is recorded as an adjustment."""
    already = {}
    for adjustment in LateAdjustment.objects.filter(company=row.company, month=row.month):
        for key, value in adjustment.delta.items():
            already[key] = already.get(key, 0) + value
    delta = {}
    for key in CompanyMonthUsage.FIGURES:
        change = figures[key] - getattr(row, key) - already.get(key, 0)
        if change:
            delta[key] = change
    if delta:
        LateAdjustment.objects.create(company=row.company, month=row.month, delta=delta)


WATERMARK_SET_SQL = """
INSERT INTO telemetry_rollupwatermark (id, seq) VALUES (1, %s)
ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq
"""


def _watermarks(cursor, company_id: int) -> tuple[int, int]:
    """(merged up to, newest committed heartbeat number) in the current company's schema, and the
    company's "rollup pending" mark taken down in the same instant.

    The ingest lock is taken as a session lock and released at once (held to the end of the
    transaction it would stop ingestion for the whole rollup). While it is held no insert is in
    flight, so every number up to the newest is committed, and an insert that comes after finds the
    mark being deleted, waits for this transaction and sets it again: no heartbeat loses its mark.
    """
    cursor.execute("SELECT COALESCE((SELECT seq FROM telemetry_rollupwatermark WHERE id = 1), 0)")
    low = cursor.fetchone()[0]
    key = ingest_lock_key(company_id)
    cursor.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        cursor.execute("DELETE FROM public.usage_pendingrollup WHERE company_id = %s", [company_id])
        cursor.execute("SELECT COALESCE(max(seq), 0) FROM telemetry_heartbeat")
        high = cursor.fetchone()[0]
    finally:
        try:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        except DatabaseError:
            # the transaction failed under the lock: a session lock ends with its session
            connection.close()
            raise
    return low, high


def heartbeats_pending(*, company: Company) -> int:
    """Heartbeats stored but not merged yet (operations and tests)."""
    with tenant_context(company), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM telemetry_heartbeat WHERE seq > "
                       "COALESCE((SELECT seq FROM telemetry_rollupwatermark WHERE id = 1), 0)")
        return cursor.fetchone()[0]


def _lock(company_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_NAMESPACE + company_id])


@transaction.atomic
def usage_company_rollup(*, company_id: int, months: list[dt.date] | None = None) -> list[dt.date]:
    """Roll up the company's pending heartbeats and recompute the months they touch (and `months`).
    Returns the months recomputed. Idempotent; safe beside ingestion and other workers."""
    company = Company.objects.get(pk=company_id)
    _lock(company_id)
    with tenant_context(company):
        with connection.cursor() as cursor:
            low, high = _watermarks(cursor, company_id)
            touched = []
            if high > low:
                cursor.execute(MERGE_DAYS_SQL, {"low": low, "high": high})
                touched = cursor.fetchall()
                cursor.execute(WATERMARK_SET_SQL, [high])
            if touched:
                cursor.execute(MONTHS_SQL, [[str(e) for e, _ in touched], [m for _, m in touched]])
        recompute = sorted({m for _, m in touched} | set(months or []))
        for month in recompute:
            _store(company=company, month=month, figures=usage_month_compute(company=company, month=month))
    return recompute


def usage_rollup_pending() -> list[int]:
    """Companies with telemetry waiting; the fan-out task enqueues one rollup per company."""
    return list(PendingRollup.objects.order_by("since").values_list("company_id", flat=True))


def usage_month_close(*, month: dt.date, progress=None) -> int:
    """U12: finalize `month` for every company: a last rollup, then the row is frozen. A second run
    finds the month closed and changes nothing. Returns the companies finalized."""
    if MonthClose.objects.filter(month=month).exists():
        return 0
    done = 0
    company_ids = list(Company.objects.order_by("pk").values_list("pk", flat=True))
    for company_id in company_ids:
        with transaction.atomic():
            usage_company_rollup(company_id=company_id, months=[month])
            CompanyMonthUsage.objects.filter(company_id=company_id, month=month, finalized_at__isnull=True).update(
                finalized_at=timezone.now())
        done += 1
        if progress:
            progress(done, len(company_ids))
    MonthClose.objects.get_or_create(month=month)
    return done


def heartbeats_purge(*, now: dt.datetime, late_window_days: int = 35) -> int:
    """Raw heartbeats outlive the open month by the late window; endpoint-day rows stay. Only rows
    already rolled up are removed."""
    open_month = dt.datetime.combine(month_start(now), dt.time(), tzinfo=dt.UTC)
    late_cutoff = now - dt.timedelta(days=late_window_days)
    removed = 0
    for company in Company.objects.all():
        with tenant_context(company), connection.cursor() as cursor:
            cursor.execute("DELETE FROM telemetry_heartbeat WHERE observed_at < %s AND received_at < %s AND seq <= "
                           "COALESCE((SELECT seq FROM telemetry_rollupwatermark WHERE id = 1), 0)",
                           [open_month, late_cutoff])
            removed += cursor.rowcount
    return removed
