"""Rollups: heartbeats -> endpoint-day -> endpoint-month -> company-month usage (U1-U15).

Every step is set-based SQL, for a batch of companies at a time: one statement reads every company's
new heartbeats from its schema and merges them into the company-scoped endpoint-day and endpoint-month
rows of the public schema, one computes every company's figures, one stores them (a company's rollup is
a batch of one). Statements name each company's heartbeat table with its schema, so a batch costs a
handful of round trips whatever its size, and a company's work is the same whichever batch it is in.

Exactly-once from a watermark: the database numbers each stored heartbeat (`seq`, from the sequence
telemetry_heartbeat_seq_seq); a rollup reads the newest number handed out while holding the company's
ingest lock exclusively (for an instant: every insert holds it shared until it commits, so every number
up to the one read belongs to a committed heartbeat or to none, such as a duplicate dropped on its id),
merges the heartbeats between the company's watermark and that number into endpoint-day and endpoint-month,
and moves the watermark in the same statement. A killed worker leaves all of it unchanged;
heartbeats stored meanwhile wait for the next run. Nothing rewrites the raw rows. The company-month
row is recomputed from the endpoint-month rows, so running it twice gives the same row.
Per-company advisory locks, always taken in ascending order, keep two workers off the same company
without deadlocks between batches.
"""

import calendar
import datetime as dt
import logging
import math
from collections import defaultdict

from django.db import DatabaseError, connection, transaction
from django.db.models import Max
from django.utils import timezone
from django_tenants.utils import tenant_context

from companies.models import Company
from licensing.seats import licensed_during_sql, licensed_in_period_sql, licensed_whole_period_sql

from .locks import ingest_lock_key
from .models import CompanyMonthUsage, LateAdjustment, MonthClose, PendingRollup, late_horizon
from .modules import MODULE_BITS, SCAN_MODES, XDR_SENSOR_BITS, XDR_SENSOR_ITEMS
from .telemetry.models import MachineType, OsFamily, OsType

logger = logging.getLogger(__name__)

ADVISORY_NAMESPACE = 7_700_000_000  # keeps our advisory keys apart from anything else's
# Companies per rollup transaction. Ingestion for them waits on its commit (about 0.2 s for 100), and each
# company's relations the batch reads stay locked to the end: 5 a company (heartbeat table, its 3 indexes,
# the sequence), 8 with a mailbox product (the mailbox inventory and its indexes), plus the batch's advisory
# and public-table locks: 800-960 entries measured for 100 companies, in the server's shared lock table of
# max_locks_per_transaction (64) x max_connections (100) = 6,400. A CSV import takes at most half of it
# (companies.imports), which leaves room for two workers' batches; docker-compose runs a pool of 4 and
# doubles max_locks_per_transaction. Larger batches stop paying: at 100 the per-batch statements are spread
# over enough companies (docs/decisions.md, Issue 5).
BATCH_SIZE = 100
SCHEMA = "__schema__"  # stands for the company's quoted schema name in the templates below
LICENSED_IN_MONTH = licensed_in_period_sql(seat="s", start="%(start)s", end="%(end)s")
LICENSED_ALL_MONTH = licensed_whole_period_sql(seat="s", start="%(start)s", end="%(end)s")
LICENSED_ON_DAY = licensed_during_sql(seat="s", first="d.first_seen_at", last="d.last_seen_at")

# The latest OS/machine shape of a day or month, picked with a plain max() over one bigint instead
# of a sort per group: the observed microsecond times SHAPE_RADIX plus the shape's code (a
# mixed-radix number over the agent's choices, usage.telemetry.models), decoded after grouping. The
# agent API admits only those choices and times within the late window, so the key is positive
# and far from bigint's end.
SHAPES = {"os_family": OsFamily.values, "os_type": OsType.values, "machine_type": MachineType.values}
SHAPE_RADIX = math.prod(len(values) for values in SHAPES.values())
_WEIGHTS = {column: math.prod(len(v) for v in list(SHAPES.values())[i + 1:]) for i, column in enumerate(SHAPES)}
_CODE = " + ".join(
    "(CASE {column} {whens} END) * {weight}".format(
        column=column, weight=_WEIGHTS[column],
        whens=" ".join(f"WHEN '{value}' THEN {n}" for n, value in enumerate(values)))
    for column, values in SHAPES.items())
LATEST_KEY = f"(date_part('epoch', observed_at) * 1000000)::bigint * {SHAPE_RADIX} + {_CODE}"
_DECODE = {column: f"(ARRAY{values!r}::text[])[((latest % {SHAPE_RADIX}) / {_WEIGHTS[column]}) % {len(values)} + 1]"
           for column, values in SHAPES.items()}
_LATEST_WINS = ", ".join(f"{column} = CASE WHEN EXCLUDED.last_seen_at >= {{t}}.last_seen_at THEN EXCLUDED.{column} "
                         f"ELSE {{t}}.{column} END" for column in SHAPES)
_MERGED = """
        modules = {t}.modules | EXCLUDED.modules,
        xdr_sensors = {t}.xdr_sensors | EXCLUDED.xdr_sensors,
        used_central_scan = {t}.used_central_scan OR EXCLUDED.used_central_scan,
        uptime_seconds = {t}.uptime_seconds + EXCLUDED.uptime_seconds,
        container_host = {t}.container_host OR EXCLUDED.container_host,
        heartbeats = {t}.heartbeats + EXCLUDED.heartbeats,
        first_seen_at = LEAST({t}.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = GREATEST({t}.last_seen_at, EXCLUDED.last_seen_at),
        """ + _LATEST_WINS
_COLUMNS = ("modules, xdr_sensors, used_central_scan, uptime_seconds, os_family, os_type, machine_type, "
            "container_host, heartbeats, first_seen_at, last_seen_at")

# The merge statement of a batch: each company's heartbeats between its watermarks, per endpoint and
# UTC day, read from the company's schema (one aggregate part per company, b), merged into the
# company-scoped endpoint-day rows (d) and, per endpoint and month, endpoint-month rows (m) of the
# public schema, one INSERT each for the whole batch; the watermarks move in the same statement (w).
# Every figure merges associatively (bit_or, sums, least/greatest, the latest shape), and each
# heartbeat is merged exactly once, so merging a batch into the stored rows equals recomputing them
# from all their heartbeats.
MERGE_PART = f"""SELECT {{company}}::bigint AS company_id, endpoint_id, (observed_at AT TIME ZONE 'UTC')::date AS day,
       bit_or(modules) AS modules, bit_or(xdr_sensors) AS xdr_sensors,
       bool_or(scan_mode = {SCAN_MODES["central"]}) AS used_central_scan,
       sum(uptime_seconds) AS uptime_seconds, bool_or(container_host) AS container_host,
       count(*) AS heartbeats, min(observed_at) AS first_seen_at, max(observed_at) AS last_seen_at,
       max({LATEST_KEY}) AS latest
FROM {SCHEMA}.telemetry_heartbeat WHERE seq > {{low}} AND seq <= {{high}} GROUP BY 2, 3"""
MERGE_SQL = f"""
WITH b AS ({{parts}}
), d AS (
    INSERT INTO public.usage_endpointday AS t (company_id, endpoint_id, day, {_COLUMNS})
    SELECT company_id, endpoint_id, day, modules, xdr_sensors, used_central_scan, uptime_seconds,
           {", ".join(_DECODE.values())},
           container_host, heartbeats, first_seen_at, last_seen_at FROM b
    ON CONFLICT (company_id, day, endpoint_id) DO UPDATE SET {{merged}}
), m AS (
    INSERT INTO public.usage_endpointmonth AS t (company_id, endpoint_id, month, {_COLUMNS})
    SELECT company_id, endpoint_id, month, modules, xdr_sensors, used_central_scan, uptime_seconds,
           {", ".join(_DECODE.values())},
           container_host, heartbeats, first_seen_at, last_seen_at
    FROM (SELECT company_id, endpoint_id, date_trunc('month', day)::date AS month, bit_or(modules) AS modules,
                 bit_or(xdr_sensors) AS xdr_sensors, bool_or(used_central_scan) AS used_central_scan,
                 sum(uptime_seconds) AS uptime_seconds, bool_or(container_host) AS container_host,
                 sum(heartbeats) AS heartbeats, min(first_seen_at) AS first_seen_at,
                 max(last_seen_at) AS last_seen_at, max(latest) AS latest
          FROM b GROUP BY 1, 2, 3) AS months
    ON CONFLICT (company_id, month, endpoint_id) DO UPDATE SET {{merged}}
    RETURNING company_id, month
), w AS (
    INSERT INTO public.usage_rollupwatermark (company_id, seq) VALUES {{watermarks}}
    ON CONFLICT (company_id) DO UPDATE SET seq = EXCLUDED.seq
)
SELECT DISTINCT company_id, month FROM m""".replace("{merged}", _MERGED.format(t="t"))

# The figures of a batch of companies for one month, in one aggregate over their endpoint-month rows.
# `licensed`: held a seat at some time in the month (U1).
# Linux virtual machines count as servers (U6). Deductions apply only when the add-on is enabled,
# so nothing is billed twice and nothing goes unbilled. Mailboxes (U14, U15) come from the month's
# mailbox inventory of the companies with a mailbox product.
ENDPOINT_MONTHS_SQL = ("SELECT m.company_id, m.endpoint_id, m.modules, m.xdr_sensors, m.used_central_scan, "
                       "m.uptime_seconds, m.os_family, m.os_type, m.machine_type FROM public.usage_endpointmonth m "
                       "WHERE m.company_id = ANY(%(companies)s) AND m.month = %(month)s")
MAILBOXES_PART = ("SELECT {company}::bigint AS company_id, count(*) FILTER (WHERE product = 'exchange') AS exchange, "
                  "count(*) FILTER (WHERE product = 'email' AND \"primary\" "
                  "AND lower(COALESCE(object_class, '')) IN ('', 'user') "
                  "AND (emails_sent > 0 OR emails_received > 0)) AS email "
                  f"FROM {SCHEMA}.telemetry_mailboxmonth WHERE month = %(month)s")
NO_MAILBOXES = "SELECT NULL::bigint AS company_id, 0::bigint AS exchange, 0::bigint AS email WHERE false"
# T5, L4: an endpoint that held its seat for part of the month only (licensed, or expired, during it) counts
# with what it ran on the days it held the seat: its endpoint-day rows whose activity overlaps a seat spell
# (day granularity: such a day counts whole). Read only for the companies that have such seats this month.
PROTECTED_DAYS_SQL = ("SELECT d.company_id, d.endpoint_id, bit_or(d.modules) AS modules, "
                      "bit_or(d.xdr_sensors) AS xdr_sensors, bool_or(d.used_central_scan) AS used_central_scan, "
                      "sum(d.uptime_seconds)::bigint AS uptime_seconds "
                      "FROM public.usage_endpointday d JOIN public.licensing_seatassignment s "
                      "ON s.company_id = d.company_id AND s.endpoint_id = d.endpoint_id "
                      "WHERE d.company_id = ANY(%(part_month)s::bigint[]) "
                      f"AND d.day >= %(start_day)s AND d.day < %(end_day)s AND {LICENSED_ON_DAY} "
                      "GROUP BY d.company_id, d.endpoint_id")
PART_MONTH_SEATS_SQL = f"""
SELECT DISTINCT s.company_id FROM public.licensing_seatassignment s
WHERE s.company_id = ANY(%(companies)s) AND {LICENSED_IN_MONTH} AND NOT {LICENSED_ALL_MONTH}
"""
FIGURES_SQL = f"""
WITH terms AS (
    SELECT * FROM unnest(%(companies)s::bigint[], %(sve)s::boolean[], %(cp)s::boolean[]) AS t(company_id, sve, cp)
), em AS ({ENDPOINT_MONTHS_SQL}
), held AS (
    SELECT s.company_id, s.endpoint_id, {LICENSED_ALL_MONTH} AS whole FROM public.licensing_seatassignment s
    WHERE s.company_id = ANY(%(companies)s) AND {LICENSED_IN_MONTH}
), protected AS ({PROTECTED_DAYS_SQL}
), counted_months AS (
    SELECT em.company_id, em.endpoint_id, em.os_family, em.os_type, em.machine_type,
           CASE WHEN held.whole THEN em.modules ELSE p.modules END AS modules,
           CASE WHEN held.whole THEN em.xdr_sensors ELSE p.xdr_sensors END AS xdr_sensors,
           CASE WHEN held.whole THEN em.used_central_scan ELSE p.used_central_scan END AS used_central_scan,
           CASE WHEN held.whole THEN em.uptime_seconds ELSE p.uptime_seconds END AS uptime_seconds
    FROM em JOIN held USING (company_id, endpoint_id) LEFT JOIN protected p USING (company_id, endpoint_id)
    WHERE held.whole OR p.endpoint_id IS NOT NULL
), lic AS (
    SELECT e.*,
           (e.machine_type = 'virtual' AND (e.os_type = 'server' OR e.os_family = 'linux')
            AND e.used_central_scan AND t.sve) AS sve_vs,
           (e.machine_type = 'virtual' AND NOT (e.os_type = 'server' OR e.os_family = 'linux')
            AND e.used_central_scan AND t.sve) AS sve_vdi,
           (e.modules & {MODULE_BITS["container_protection"]} <> 0 AND t.cp) AS cp
    FROM counted_months e JOIN terms t USING (company_id)
), active AS (
    SELECT company_id, count(*) AS n FROM em GROUP BY company_id
), counted AS (
    SELECT company_id,
        count(*) AS licensed,
        count(*) FILTER (WHERE modules & {MODULE_BITS["antimalware"]} <> 0 AND NOT sve_vs AND NOT sve_vdi
                         AND NOT cp) AS endpoint_usage,
        count(*) FILTER (WHERE modules & {MODULE_BITS["patch_management"]} <> 0) AS patch_management,
        count(*) FILTER (WHERE modules & {MODULE_BITS["full_disk_encryption"]} <> 0) AS full_disk_encryption,
        count(*) FILTER (WHERE modules & {MODULE_BITS["edr"]} <> 0) AS edr,
        count(*) FILTER (WHERE modules & {MODULE_BITS["integrity_monitoring"]} <> 0) AS integrity_monitoring,
        count(*) FILTER (WHERE modules & {MODULE_BITS["hyperdetect"] | MODULE_BITS["sandbox_analyzer"]} <> 0) AS ats,
        count(*) FILTER (WHERE modules & {MODULE_BITS["hyperdetect"]} <> 0) AS hyperdetect,
        count(*) FILTER (WHERE modules & {MODULE_BITS["sandbox_analyzer"]} <> 0) AS sandbox_analyzer,
        count(*) FILTER (WHERE sve_vs AND NOT cp) AS sve_vs,
        sum(uptime_seconds) FILTER (WHERE sve_vdi) AS vdi_seconds,
        count(*) FILTER (WHERE cp) AS container_protection,
        bit_or(xdr_sensors) AS xdr_sensors
    FROM lic GROUP BY company_id
), mail AS ({{mailboxes}}
)
SELECT t.company_id, %(month)s::date, COALESCE(a.n, 0), COALESCE(c.licensed, 0), COALESCE(c.endpoint_usage, 0),
       COALESCE(c.patch_management, 0), COALESCE(c.full_disk_encryption, 0), COALESCE(c.edr, 0),
       COALESCE(c.integrity_monitoring, 0), COALESCE(c.ats, 0), COALESCE(c.hyperdetect, 0),
       COALESCE(c.sandbox_analyzer, 0), COALESCE(c.sve_vs, 0), COALESCE(c.vdi_seconds, 0),
       COALESCE(c.container_protection, 0), c.xdr_sensors, COALESCE(x.exchange, 0), COALESCE(x.email, 0)
FROM terms t LEFT JOIN active a USING (company_id) LEFT JOIN counted c USING (company_id)
     LEFT JOIN mail x USING (company_id)
"""
FIGURE_COLUMNS = ["_company", "_month", "active_endpoints", "licensed_endpoints", "endpoint_usage",
                  "patch_management", "full_disk_encryption", "edr", "integrity_monitoring", "ats", "hyperdetect",
                  "sandbox_analyzer", "sve_vs", "_vdi_seconds", "container_protection", "_xdr_sensors",
                  "exchange_mailboxes", "email_security_mailboxes"]

# One company-month's part of the Data Retention statement (U8): each licensed endpoint is charged
# the highest tier enabled while it was seen in the month.
RETENTION_PART = f"""
(WITH tiers AS (SELECT * FROM unnest(%(keys)s::text[], %(ranks)s::int[], %(enabled)s::timestamptz[],
                                     %(disabled)s::timestamptz[]) AS t(key, rank, enabled_at, disabled_at)),
charged AS (
    SELECT (SELECT t.key FROM tiers t
            WHERE t.enabled_at <= m.last_seen_at AND (t.disabled_at IS NULL OR t.disabled_at >= %(start)s)
            ORDER BY t.rank DESC LIMIT 1) AS tier
    FROM (SELECT m.last_seen_at FROM public.usage_endpointmonth m
          JOIN public.licensing_seatassignment s ON s.company_id = m.company_id AND s.endpoint_id = m.endpoint_id
          WHERE m.company_id = %(company)s AND m.month = %(month)s AND {LICENSED_ALL_MONTH}
          UNION ALL  -- T5, L4: a seat held for part of the month: the days it was held (PROTECTED_DAYS_SQL)
          SELECT max(d.last_seen_at) FROM public.usage_endpointday d
          JOIN public.licensing_seatassignment s ON s.company_id = d.company_id AND s.endpoint_id = d.endpoint_id
          WHERE d.company_id = %(company)s AND d.day >= %(start_day)s AND d.day < %(end_day)s
                AND NOT {LICENSED_ALL_MONTH} AND {LICENSED_ON_DAY}
          GROUP BY d.endpoint_id) AS m
)
SELECT %(company)s::bigint, %(month)s::date, tier, count(*) FROM charged WHERE tier IS NOT NULL GROUP BY tier)"""

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



def _quoted(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


def _part(template: str, schema: str, **names) -> str:
    return template.replace(SCHEMA, _quoted(schema)).format(**names)


def _compose(sql: str, params) -> str:
    """SQL with its parameters bound, to be joined into one statement with other companies' parts."""
    return connection.ops.compose_sql(sql, params)


def _enabled_during(company_ids: list[int], month: dt.date) -> dict[int, dict[str, list[tuple]]]:
    from licensing.entitlements import own_use_during

    start, end = month_bounds(month)
    return own_use_during(company_ids=company_ids, start=start, end=end)


def _product_type(enabled: dict[str, list[tuple]]) -> str:
    """U11: the product type in force last in the month."""
    candidates = [(max(e for e, _ in spans), key) for key, spans in enabled.items()
                  if key in ("endpoint_security", "edr_standalone")]
    return max(candidates)[1] if candidates else ""


class _Terms:
    """What the companies' figures depend on besides telemetry, read once for a batch: their
    licences, effective end dates (S1) and the retention tiers."""

    def __init__(self, companies: list[Company]):
        from licensing.models import License
        from licensing.subscriptions import effective_end_dates

        self.licenses = {lic.company_id: lic for lic in License.objects.filter(company__in=companies)}
        self.end_dates = effective_end_dates(companies)
        self._ranks = None

    def ranks(self) -> dict[str, int]:
        from licensing.models import CatalogItem

        if self._ranks is None:
            self._ranks = dict(CatalogItem.objects.filter(kind="retention_tier").values_list("key", "rank"))
        return self._ranks


def _figures_compute(companies: list[Company], month: dt.date, terms: _Terms) -> dict[int, dict]:
    """The companies' own figures for the month, computed in two statements.
    Pure read: nothing is written."""
    if not companies:
        return {}
    start, end = month_bounds(month)
    enabled_of = _enabled_during([c.pk for c in companies], month)
    terms_of = {c.pk: enabled_of.get(c.pk, {}) for c in companies}
    mailbox_items = {"security_for_exchange", "email_security"}
    mailboxes = " UNION ALL ".join(_part(MAILBOXES_PART, c.schema_name, company=c.pk) for c in companies
                                   if mailbox_items & set(terms_of[c.pk])) or NO_MAILBOXES
    params = {"month": month, "start": start, "end": end, "start_day": start.date(), "end_day": end.date(),
              "companies": [c.pk for c in companies],
              "sve": ["sve" in terms_of[c.pk] for c in companies],
              "cp": ["container_protection" in terms_of[c.pk] for c in companies]}
    with connection.cursor() as cursor:
        cursor.execute(PART_MONTH_SEATS_SQL, params)
        params["part_month"] = [row[0] for row in cursor.fetchall()]
    retention_parts = []
    for company in companies:
        enabled = terms_of[company.pk]
        if "data_retention" in enabled:
            ranks = terms.ranks()
            spans = [(key, ranks[key], e, d) for key in ranks for e, d in enabled.get(key, [])]
            if spans:
                retention_parts.append(_compose(RETENTION_PART, {
                    "company": company.pk, "month": month, "start": start, "end": end,
                    "start_day": start.date(), "end_day": end.date(),
                    "keys": [s[0] for s in spans], "ranks": [s[1] for s in spans],
                    "enabled": [s[2] for s in spans], "disabled": [s[3] for s in spans]}))
    tiers: dict[int, dict[str, int]] = defaultdict(dict)
    with connection.cursor() as cursor:
        cursor.execute(FIGURES_SQL.replace("{mailboxes}", mailboxes), params)
        raws = {row[0]: dict(zip(FIGURE_COLUMNS, row, strict=True)) for row in cursor.fetchall()}
        if retention_parts:
            cursor.execute(" UNION ALL ".join(retention_parts))
            for company_id, _month, tier, count in cursor.fetchall():
                tiers[company_id][tier] = count
    result = {}
    for company in companies:
        enabled, raw = enabled_of.get(company.pk, {}), raws[company.pk]
        figures = {k: v for k, v in raw.items() if not k.startswith("_")}
        figures["sve_vdi_hours"] = math.ceil(raw["_vdi_seconds"] / 3600)  # U7: per company and month
        sensors = raw["_xdr_sensors"] or 0
        for wire, item in XDR_SENSOR_ITEMS.items():  # U5
            deployed = bool(sensors & XDR_SENSOR_BITS[wire])
            figures[item] = figures["licensed_endpoints"] if deployed and item in enabled and "xdr" in enabled else 0
        figures["mdr_foundations"] = figures["edr"] if "mdr_foundations" in enabled else 0  # U10 (EDR first)
        for figure, item in GATED.items():  # U13: an add-on not enabled counts nothing
            if item not in enabled:
                figures[figure] = 0
        product_type = _product_type(enabled)
        if product_type == "edr_standalone":  # U11: active (licensed) endpoints of EDR companies
            figures["endpoint_usage"] = figures["licensed_endpoints"]
        lic = terms.licenses.get(company.pk)
        result[company.pk] = {
            **figures,
            "lineage": company.lineage,  # H5: the month's place in the tree, frozen with the row
            "product_type": product_type,
            "data_retention": tiers.get(company.pk, {}),
            "enabled": sorted(enabled),
            "reserved_seats": lic.reserved_seats if lic else None,
            "minimum_usage": lic.minimum_usage if lic else None,
            "end_date": terms.end_dates[company.pk],
            "auto_renew": bool(lic and lic.auto_renew),
        }
    return result


TERMS_REFRESH_SQL = """
UPDATE usage_companymonthusage u SET reserved_seats = t.reserved_seats, minimum_usage = t.minimum_usage,
       end_date = t.end_date, auto_renew = t.auto_renew
FROM unnest(%(ids)s::bigint[], %(reserved)s::int[], %(minimum)s::int[], %(ends)s::date[], %(renew)s::boolean[])
     AS t(company_id, reserved_seats, minimum_usage, end_date, auto_renew)
WHERE u.company_id = t.company_id AND u.month = %(month)s AND u.finalized_at IS NULL
"""


def usage_terms_refresh(*, company: Company, subtree: bool = False) -> None:
    """L6, S1: the licence terms of the company (and, for an end date, which its subtree inherits, of
    every company below it) changed: the open month's rows take them now. An ended month keeps the terms
    it ended with (ENDED_MONTH_KEEPS), so a change must reach the open month's row when it is made, not at
    the next rollup, which may come after the month has ended. One company's change is made under its
    rollup lock, so no rollup that read the old terms stores them afterwards; a subtree's is not (a lock
    per company would fill the server's lock table for a partner with thousands of companies below it),
    and a rollup racing it is corrected by the next one (hourly at the latest). A fixed number of
    statements whatever the subtree's size."""
    if not subtree:
        rollup_locks_take([company.pk])
    companies = list(Company.objects.filter(lineage__startswith=company.lineage) if subtree else [company])
    terms = _Terms(companies)
    licenses = [terms.licenses.get(c.pk) for c in companies]
    with connection.cursor() as cursor:
        cursor.execute(TERMS_REFRESH_SQL, {
            "month": month_start(timezone.now()), "ids": [c.pk for c in companies],
            "reserved": [lic.reserved_seats if lic else None for lic in licenses],
            "minimum": [lic.minimum_usage if lic else None for lic in licenses],
            "ends": [terms.end_dates[c.pk] for c in companies],
            "renew": [bool(lic and lic.auto_renew) for lic in licenses]})


# L6, U12: the licence terms an ended month keeps through recomputes and its close, as it keeps its lineage
ENDED_MONTH_KEEPS = frozenset({"reserved_seats", "minimum_usage", "end_date", "auto_renew"})


def _store(month: dt.date, figures_of: dict[int, dict]) -> None:
    """Upsert the month's usage rows in one statement; a finalized row never changes (U12). In a
    month already closed, a company without a finalized row (added since, or missed by the close while
    it was being added) gets one frozen as it stood (zero when it had none), so what it reports now
    is a late adjustment like anyone's, not a silent change to a closed month."""
    if MonthClose.objects.filter(month=month).exists():
        _freeze_missing(month, figures_of)
    finalized = {row.company_id: row for row in CompanyMonthUsage.objects.filter(
        company_id__in=figures_of, month=month, finalized_at__isnull=False)}
    _record_late(month, list(finalized.values()), figures_of)
    now = timezone.now()
    rows = [CompanyMonthUsage(company_id=company_id, month=month, computed_at=now, **figures)
            for company_id, figures in figures_of.items() if company_id not in finalized]
    if rows:
        fields = [*next(iter(figures_of.values())), "computed_at"]
        if month < month_start(now):
            # H5: an ended month keeps the place it ended with (a move since waits); L6: and the licence
            # terms it ended with (terms set since take effect from the month they are set in). A row
            # first created after the month ended keeps what it gets.
            fields = [f for f in fields if f != "lineage" and f not in ENDED_MONTH_KEEPS]
        CompanyMonthUsage.objects.bulk_create(rows, update_conflicts=True, unique_fields=["company", "month"],
                                              update_fields=fields)


def _freeze_missing(month: dt.date, figures_of: dict[int, dict]) -> None:
    now = timezone.now()
    CompanyMonthUsage.objects.filter(company_id__in=figures_of, month=month, finalized_at__isnull=True) \
        .update(finalized_at=now)
    zero = dict.fromkeys(CompanyMonthUsage.FIGURES, 0)
    CompanyMonthUsage.objects.bulk_create([
        CompanyMonthUsage(company_id=company_id, month=month, computed_at=now, finalized_at=now,
                          **{**figures, **zero, "data_retention": {}, "minimum_usage": None})
        for company_id, figures in figures_of.items()], ignore_conflicts=True)


RETENTION_DELTA = "data_retention:"  # a late change of a Data Retention tier's count (U8): "data_retention:<tier>"


def _late_reported_in(month: dt.date) -> dt.date:
    """U12: the month whose report carries an adjustment to `month` recorded now: the first month
    whose report cannot have been made yet, i.e. after the newest month any company's close has
    finalized (a report waits for its subtree's close), and never earlier than the month after the
    adjustment's own. Data may show a month later than it could have, never in a report already sent."""
    # the newest month any company's close has reached: a subtree's report may go out as soon as its own
    # rows are final, before the whole installation's MonthClose
    newest = CompanyMonthUsage.objects.filter(finalized_at__isnull=False).aggregate(newest=Max("month"))["newest"]
    after_close = month_start((newest or month) + dt.timedelta(days=31))
    return max(after_close, month_start(month + dt.timedelta(days=31)))


def _changes(figures: dict, row: CompanyMonthUsage) -> dict[str, int]:
    """Every billed figure of a recomputed month against its frozen row, Data Retention tiers included."""
    changes = {key: figures[key] - getattr(row, key) for key in CompanyMonthUsage.FIGURES}
    tiers = set(figures["data_retention"]) | set(row.data_retention or {})
    changes.update({f"{RETENTION_DELTA}{tier}": figures["data_retention"].get(tier, 0)
                    - (row.data_retention or {}).get(tier, 0) for tier in sorted(tiers)})
    return changes


def _record_late(month: dt.date, rows: list[CompanyMonthUsage], figures_of: dict[int, dict]) -> None:
    """U12: a finalized month never changes; what arrived since is recorded as an adjustment against
    the frozen row and the adjustments already recorded, to be shown in the next report made. Three
    queries for any number of companies."""
    if not rows:
        return
    already: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for company_id, delta in LateAdjustment.objects.filter(
            company_id__in=[row.company_id for row in rows], month=month).values_list("company_id", "delta"):
        for key, value in delta.items():
            already[company_id][key] += value
    adjustments = []
    reported_in = None
    for row in rows:
        before = already[row.company_id]
        delta = {key: change - before[key] for key, change in _changes(figures_of[row.company_id], row).items()
                 if change - before[key]}
        if delta:
            reported_in = reported_in or _late_reported_in(month)
            adjustments.append(LateAdjustment(company_id=row.company_id, month=month, reported_in=reported_in,
                                              lineage=row.lineage, delta=delta))
    LateAdjustment.objects.bulk_create(adjustments)


def _union_of(template: str, companies: list[Company]) -> str:
    return " UNION ALL ".join(_part(template, c.schema_name, company=c.pk) for c in companies)


# The newest number handed out to a company's heartbeats: read from the identity sequence of `seq`, not as
# max(seq) over the table (an index lookup per company, whose planning cost five times the read). The same
# bound under the ingest locks: a number is handed out only to an insert holding its lock, so every number
# up to it belongs to a committed heartbeat or to none (a rolled-back insert, a duplicate dropped on its id).
WATERMARKS_PART = ("SELECT {company}::bigint, CASE WHEN is_called THEN last_value ELSE last_value - 1 END "
                   "FROM " + SCHEMA + ".telemetry_heartbeat_seq_seq")


def _watermarks(cursor, companies: list[Company]) -> tuple[dict[int, tuple[int, int]], dict[int, set[dt.date]]]:
    """Per company: (merged up to, newest heartbeat number handed out), and the companies' "rollup
    pending" marks taken down in the same instant, with the months they name (mailbox reports).

    The ingest locks are taken as session locks (ascending) and released at once (held to the end of
    the transaction they would stop ingestion for the whole rollup). While they are held no insert
    is in flight, so every heartbeat numbered up to the newest is committed, and an insert that comes after
    finds the mark being deleted, waits for this transaction and sets it again: no heartbeat loses
    its mark. The watermark itself only moves under the rollup lock, which this transaction holds.
    """
    keys = sorted(ingest_lock_key(c.pk) for c in companies)
    cursor.execute("SELECT count(pg_advisory_lock(k)) FROM unnest(%s::bigint[]) AS k", [keys])
    # (an error or a time limit before the unlock: usage_rollup_companies releases them all)
    cursor.execute("DELETE FROM public.usage_pendingrollup WHERE company_id = ANY(%s) RETURNING company_id, months",
                   [[c.pk for c in companies]])
    pending = {company_id: set(months) for company_id, months in cursor.fetchall()}
    cursor.execute(_union_of(WATERMARKS_PART, companies))
    newest = dict(cursor.fetchall())
    cursor.execute("SELECT count(pg_advisory_unlock(k)) FROM unnest(%s::bigint[]) AS k", [keys])
    cursor.execute("SELECT company_id, seq FROM public.usage_rollupwatermark WHERE company_id = ANY(%s)",
                   [[c.pk for c in companies]])
    merged = dict(cursor.fetchall())
    return {c.pk: (merged.get(c.pk, 0), newest[c.pk]) for c in companies}, pending


PENDING_SQL = (f"SELECT count(*) FROM {SCHEMA}.telemetry_heartbeat WHERE seq > "
               "COALESCE((SELECT seq FROM public.usage_rollupwatermark WHERE company_id = %s), 0)")


def heartbeats_pending(*, company: Company) -> int:
    """Heartbeats stored but not merged yet (operations and tests)."""
    with connection.cursor() as cursor:
        cursor.execute(_part(PENDING_SQL, company.schema_name), [company.pk])
        return cursor.fetchone()[0]


def rollup_locks_take(company_ids: list[int]) -> None:
    """The companies' rollup locks, to the end of the transaction (ascending: no deadlock between
    takers); a company move takes them too, so no rollup stores a lineage read before the move."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k",
                       [sorted(ADVISORY_NAMESPACE + i for i in company_ids)])


def _merge(cursor, companies: list[Company], marks: dict[int, tuple[int, int]]) -> dict[int, set[dt.date]]:
    """Heartbeats -> endpoint-day and endpoint-month for the companies with new heartbeats,
    watermarks moved, in one statement. Returns the months touched, per company."""
    moving = [c for c in companies if marks[c.pk][1] > marks[c.pk][0]]
    touched: dict[int, set[dt.date]] = defaultdict(set)
    if not moving:
        return touched
    parts = " UNION ALL ".join(_part(MERGE_PART, c.schema_name, company=c.pk, low=int(marks[c.pk][0]),
                                     high=int(marks[c.pk][1])) for c in moving)
    watermarks = ", ".join(f"({int(c.pk)}, {int(marks[c.pk][1])})" for c in moving)
    cursor.execute(MERGE_SQL.replace("{parts}", parts).replace("{watermarks}", watermarks))
    for company_id, month in cursor.fetchall():
        touched[company_id].add(month)
    return touched


def usage_rollup_companies(*, company_ids: list[int], months: list[dt.date] | None = None) -> dict[int, list[dt.date]]:
    """Roll up the companies' pending heartbeats and recompute the months they touch (and `months`),
    in one transaction and a fixed number of statements. Returns the months recomputed per company.
    Idempotent; safe beside ingestion and other workers."""
    try:
        return _rollup_companies(company_ids, months)
    except BaseException:  # a DatabaseError, or a worker's time limit arriving between statements
        # the work is rolled back (to a savepoint inside a caller's transaction, which stays usable);
        # session locks are not: release the ingest locks _watermarks may hold, some or all of them
        # when a lock statement was stopped halfway by a timeout or a cancel
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock_all()")
        except DatabaseError:
            connection.close()  # a broken session: its locks end with it
        raise


def _rollup_companies(company_ids: list[int], months: list[dt.date] | None) -> dict[int, list[dt.date]]:
    with transaction.atomic():
        rollup_locks_take(company_ids)
        companies = list(Company.objects.filter(pk__in=company_ids).order_by("pk"))
        if not companies:
            return {}
        with connection.cursor() as cursor:
            marks, pending = _watermarks(cursor, companies)
            touched = _merge(cursor, companies, marks)
        recompute = {c.pk: sorted(touched.get(c.pk, set()) | pending.get(c.pk, set()) | set(months or []))
                     for c in companies}
        by_month: dict[dt.date, list[Company]] = defaultdict(list)
        for company in companies:
            for month in recompute[company.pk]:
                by_month[month].append(company)
        terms = _Terms(companies)
        for month, members in sorted(by_month.items()):
            _store(month, _figures_compute(members, month, terms))
    return recompute


def usage_rollup_batch(*, company_ids: list[int], months: list[dt.date] | None = None
                       ) -> tuple[dict[int, list[dt.date]], list[int]]:
    """usage_rollup_companies, and when the batch fails, each of its companies alone: one company's
    fault (its schema dropped mid-run, say) must not hold back the others, whose pending marks would
    otherwise come back with the rolled-back batch every minute. Returns (months recomputed per
    company, the companies that failed on their own)."""
    try:
        return usage_rollup_companies(company_ids=company_ids, months=months), []
    except DatabaseError:
        if len(company_ids) == 1:  # the company failed alone: its pending mark stays for the next run
            logger.exception("rollup failed", extra={"company_id": company_ids[0]})
            return {}, list(company_ids)
        logger.exception("rollup batch failed; rolling its companies up one by one",
                         extra={"company_ids": company_ids})
    done: dict[int, list[dt.date]] = {}
    failed = []
    for company_id in company_ids:
        try:
            done.update(usage_rollup_companies(company_ids=[company_id], months=months))
        except DatabaseError:
            logger.exception("rollup failed", extra={"company_id": company_id})
            failed.append(company_id)
    return done, failed


def usage_company_rollup(*, company_id: int, months: list[dt.date] | None = None) -> list[dt.date]:
    """Roll up one company (a batch of one). Returns the months recomputed."""
    return usage_rollup_companies(company_ids=[company_id], months=months).get(company_id, [])


def usage_rollup_pending() -> list[int]:
    """Companies with telemetry waiting; the fan-out task enqueues them in batches."""
    return list(PendingRollup.objects.order_by("since").values_list("company_id", flat=True))


def batches(ids: list[int], size: int | None = None) -> list[list[int]]:
    size = size or BATCH_SIZE
    return [ids[i:i + size] for i in range(0, len(ids), size)]


class MonthCloseIncomplete(Exception):
    """Some companies' last rollup failed: the others are finalized, the month is not closed yet."""


def months_to_close(*, previous: dt.date) -> list[dt.date]:
    """Ended months not closed yet, oldest first: the previous month, and any earlier one with usage
    rows whose close never finished."""
    closed = set(MonthClose.objects.values_list("month", flat=True))
    earlier = set(CompanyMonthUsage.objects.filter(month__lt=previous, finalized_at__isnull=True).order_by()
                  .values_list("month", flat=True).distinct())
    return sorted((earlier | {previous}) - closed)


def usage_month_close(*, month: dt.date, progress=None) -> int:
    """U12: finalize `month` for every company: a last rollup, then the row is frozen, a batch of
    companies per transaction. A company whose rollup fails does not hold back the others' rows;
    MonthClose (which the month's report emails wait for) is written only once every company is
    finalized, so a later run finishes the job. A second run after that finds the month closed and
    changes nothing. Returns the companies finalized."""
    if MonthClose.objects.filter(month=month).exists():
        return 0
    done, failed = 0, []
    company_ids = list(Company.objects.order_by("pk").values_list("pk", flat=True))
    for batch in batches(company_ids):
        with transaction.atomic():
            rolled, broken = usage_rollup_batch(company_ids=batch, months=[month])
            CompanyMonthUsage.objects.filter(company_id__in=list(rolled), month=month,
                                             finalized_at__isnull=True).update(finalized_at=timezone.now())
        done += len(rolled)
        failed += broken
        if progress:
            progress(done + len(failed), len(company_ids))
    if failed:
        raise MonthCloseIncomplete(f"{month:%Y-%m} not closed: the rollup failed for companies {failed}")
    MonthClose.objects.get_or_create(month=month)
    return done


PURGE_MARGIN = dt.timedelta(days=1)


def heartbeats_purge(*, now: dt.datetime) -> int:
    """Raw heartbeats outlive the open month by the late horizon (the earlier of 35 days ago and the
    start of the previous month); endpoint-day rows stay. Only rows already rolled up are removed, and
    only rows observed before the horizon too: the agent API refuses those, by the same horizon (T4: a
    resend of a purged heartbeat can never be counted again)."""
    open_month = dt.datetime.combine(month_start(now), dt.time(), tzinfo=dt.UTC)
    # a day below the horizon: an ingest that checked a heartbeat against the horizon a moment before
    # (the horizon moves at most a day a day) never meets this purge removing the row it duplicates
    late_cutoff = late_horizon(now) - PURGE_MARGIN
    # recorded (and committed) before anything is removed: from now on the API refuses what this removes
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO usage_heartbeatpurge AS h (id, purged_below) VALUES (1, %s) ON CONFLICT (id) "
                       "DO UPDATE SET purged_below = GREATEST(h.purged_below, EXCLUDED.purged_below)",
                       [min(open_month, late_cutoff)])
    removed = 0
    for company in Company.objects.all():
        with tenant_context(company), connection.cursor() as cursor:
            cursor.execute("DELETE FROM telemetry_heartbeat WHERE observed_at < %s AND observed_at < %s "
                           "AND received_at < %s AND seq <= "
                           "COALESCE((SELECT seq FROM public.usage_rollupwatermark WHERE company_id = %s), 0)",
                           [open_month, late_cutoff, late_cutoff, company.pk])
            removed += cursor.rowcount
    return removed
