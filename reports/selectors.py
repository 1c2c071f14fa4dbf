"""Reads behind the Monthly License Usage report. Everything is counted in SQL:

- company rows: one statement; each row sums the usage rows of its subtree (U13);
- endpoint rows (details, drill-down) and the daily chart: one UNION ALL statement per chunk of
  company schemas, read through a server-side cursor, so the number of queries depends on the
  number of companies / CHUNK and never on the number of endpoints.

Which endpoints an actor sees follows C1-C3: only companies whose network the actor's company may
see; company-level figures stay visible to everyone the company is visible to (C6).
"""

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection

from companies.models import Company, User
from licensing.seats import licensed_during_sql, licensed_in_period_sql, licensed_whole_period_sql
from usage.models import ANCESTORS_SQL, month_rows_below, month_rows_in_view
from usage.modules import MODULE_BITS, XDR_SENSOR_BITS
from usage.rollups import GATED, month_bounds
from usage.selectors import NOT_ENABLED, usage_totals

CHUNK = 200  # company schemas per UNION ALL statement
FETCH = 2000  # rows per round trip from the server-side cursor
LICENSED_IN_MONTH = licensed_in_period_sql(seat="s", start="%s", end="%s")  # end, start, start, end
LICENSED_ALL_MONTH = licensed_whole_period_sql(seat="s", start="%s", end="%s")  # start, end, start, end
LICENSED_ON_DAY = licensed_during_sql(seat="h", first="d.first_seen_at", last="d.last_seen_at")
HELD_ACTIVITY = ", ".join(f"CASE WHEN p.endpoint_id IS NULL THEN m.{c} ELSE p.{c} END AS {c}"
                          for c in ("uptime_seconds", "modules", "xdr_sensors", "used_central_scan"))

MODULE_LABELS = {
    "antimalware": "Antimalware", "advanced_threat_control": "Advanced Threat Control",
    "advanced_anti_exploit": "Advanced Anti-Exploit", "firewall": "Firewall", "content_control": "Content Control",
    "device_control": "Device Control", "network_attack_defense": "Network Attack Defense",
    "power_user": "Power User", "relay": "Relay", "patch_management": "Patch Management",
    "full_disk_encryption": "Full Disk Encryption", "hyperdetect": "HyperDetect",
    "sandbox_analyzer": "Sandbox Analyzer", "edr": "Endpoint Detection and Response",
    "integrity_monitoring": "Integrity Monitoring", "container_protection": "Container Protection",
    "security_for_exchange": "Security for Exchange",
}
XDR_LABELS = {"identity": "XDR Identity Providers", "productivity": "XDR Productivity", "network": "XDR Network",
              "cloud": "XDR Cloud Workloads"}
# R3: the endpoint details, with a Yes/No column per module and add-on
ENDPOINT_DETAIL_COLUMNS = (
    [("company_name", "Company"), ("hostname", "Endpoint"), ("os_type", "OS type"),
     ("machine_type", "Endpoint type"), ("uptime_seconds", "Uptime (seconds)"), ("licensed", "Licensed")]
    + [(f"m_{key}", label) for key, label in MODULE_LABELS.items()]
    + [("ats", "ATS"), ("sve", "Security for Virtualized Environments")]
    + [(f"x_{key}", label) for key, label in XDR_LABELS.items()]
    + [("mdr_foundations", "MDR Foundations")]
)

B = MODULE_BITS
VS = "(x.machine_type = 'virtual' AND (x.os_type = 'server' OR x.os_family = 'linux'))"
VDI = "(x.machine_type = 'virtual' AND NOT (x.os_type = 'server' OR x.os_family = 'linux'))"
SVE = "('sve' = ANY(x.enabled))"
CP = f"('container_protection' = ANY(x.enabled) AND x.modules & {B['container_protection']} <> 0)"
# the endpoints behind each number: the same conditions as usage/rollups.py FIGURES_SQL
DRILL_SQL = {
    None: "true",
    "licensed_endpoints": "x.licensed",
    "endpoint_usage": (f"x.licensed AND (x.product_type = 'edr_standalone' OR (x.modules & {B['antimalware']} <> 0"
                       f" AND NOT ({VS} AND x.used_central_scan AND {SVE})"
                       f" AND NOT ({VDI} AND x.used_central_scan AND {SVE}) AND NOT {CP}))"),
    "patch_management": f"x.licensed AND x.modules & {B['patch_management']} <> 0 "
                        "AND 'patch_management' = ANY(x.enabled)",
    "sve_vs": f"x.licensed AND {VS} AND x.used_central_scan AND {SVE} AND NOT {CP}",
    "sve_vdi_hours": f"x.licensed AND {VDI} AND x.used_central_scan AND {SVE}",
    "container_protection": f"x.licensed AND {CP}",
    "ats": f"x.licensed AND x.modules & {B['hyperdetect'] | B['sandbox_analyzer']} <> 0 "
           "AND 'advanced_threat_security' = ANY(x.enabled)",
    "edr": f"x.licensed AND x.modules & {B['edr']} <> 0 AND 'edr' = ANY(x.enabled)",
    "mdr_foundations": f"x.licensed AND x.modules & {B['edr']} <> 0 AND 'mdr_foundations' = ANY(x.enabled)",
}
DRILL_LABELS = {
    "licensed_endpoints": "Licensed endpoints", "endpoint_usage": "Endpoint usage",
    "patch_management": "Patch Management usage", "sve_vs": "SVE: VS", "sve_vdi_hours": "SVE: VDI",
    "container_protection": "Container Protection Usage", "ats": "ATS usage", "edr": "EDR usage",
    "mdr_foundations": "MDR Foundations",
}
# the chart: add-ons and services per day (endpoint-day rows), each where it is enabled
CHART_SERIES = [
    ("patch_management", "Patch Management", f"x.modules & {B['patch_management']} <> 0", "patch_management"),
    ("full_disk_encryption", "Full Disk Encryption", f"x.modules & {B['full_disk_encryption']} <> 0",
     "full_disk_encryption"),
    ("ats", "ATS", f"x.modules & {B['hyperdetect'] | B['sandbox_analyzer']} <> 0", "advanced_threat_security"),
    ("edr", "EDR", f"x.modules & {B['edr']} <> 0", "edr"),
    ("integrity_monitoring", "Integrity Monitoring", f"x.modules & {B['integrity_monitoring']} <> 0",
     "integrity_monitoring"),
    ("sve", "SVE (central scan)", "x.machine_type = 'virtual' AND x.used_central_scan", "sve"),
    ("container_protection", "Container Protection", f"x.modules & {B['container_protection']} <> 0",
     "container_protection"),
    ("mdr_foundations", "MDR Foundations", f"x.modules & {B['edr']} <> 0", "mdr_foundations"),
]



@dataclass(frozen=True)
class ScopeCompany:
    id: int
    name: str
    lineage: str
    schema_name: str
    enabled: tuple[str, ...]
    product_type: str


@dataclass
class ReportScope:
    actor: User
    company: Company
    month: dt.date
    kind: str
    options: object  # ReportOptions
    can_drill_down: bool
    _members: list[ScopeCompany] | None = None

    def members(self) -> list[ScopeCompany]:
        """Companies of the target's subtree with a usage row this month (of the product type)."""
        if self._members is None:
            self._members = _scope_members(self)
        return self._members


def _visible_sql(viewer: Company) -> tuple[str, list]:
    """SQL truth value: the viewer's company may see the network of companies_company `c` (C1-C3)."""
    if not viewer.manages_security:
        return "false", []
    return ("(c.id = %s OR NOT EXISTS (SELECT 1 FROM companies_company off WHERE off.partner_can_assist = false"
            " AND off.lineage LIKE %s AND off.id <> %s AND c.lineage LIKE off.lineage || '%%'))",
            [viewer.pk, viewer.lineage + "%", viewer.pk])


# The viewer's company's files with endpoint rows whose target, or a company whose endpoints they
# list, is outside the viewer's network view now (C2, C3, C6). Primary-key lookups only.
FILES_CLOSED_SQL = """
SELECT f.id FROM reports_reportfile f
WHERE f.owner_id = %s AND f.network_detail AND EXISTS (
    SELECT 1 FROM companies_company c
    WHERE c.id = ANY(array_append(COALESCE(f.endpoint_company_ids, '{{}}'), f.company_id))
      AND NOT (c.lineage LIKE %s AND {visible}))
"""


def report_files_closed_sql(viewer: Company) -> tuple[str, list]:
    """(SQL, params): ids of the viewer's report files it may no longer open (FILES_CLOSED_SQL)."""
    visible, params = _visible_sql(viewer)
    return FILES_CLOSED_SQL.format(visible=visible), [viewer.pk, viewer.lineage + "%", *params]


def report_scope(*, actor: User, company: Company, month: dt.date, kind: str, options) -> "ReportScope":
    from companies.access import network_visible

    return ReportScope(actor=actor, company=company, month=month, kind=kind, options=options,
                       can_drill_down=kind == "endpoint" and network_visible(actor.company, company))


def _items(value) -> tuple[str, ...]:
    """A jsonb list read through a raw cursor (Django leaves jsonb undecoded there)."""
    if isinstance(value, str):
        value = json.loads(value)
    return tuple(value or ())


def _scope_members(scope: ReportScope) -> list[ScopeCompany]:
    visible, params = _visible_sql(scope.actor.company)
    product = "AND u.product_type = %s" if scope.options.product_type else ""
    sql = (f"SELECT c.id, c.name, c.lineage, c.schema_name, u.enabled, u.product_type, {visible} "  # noqa: S608 - quoted names, parameters
           "FROM companies_company c JOIN usage_companymonthusage u ON u.company_id = c.id AND u.month = %s "
           f"{product} AND {month_rows_below('%s')} WHERE c.lineage LIKE %s ORDER BY c.lineage")
    # H5: companies below the target now whose month was below it too (a company moved in or out since
    # the month keeps its endpoints out of the other partner's month)
    args = [*params, scope.month, *([scope.options.product_type] if product else []), scope.company.pk,
            scope.company.lineage + "%"]
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return [ScopeCompany(id=r[0], name=r[1], lineage=r[2], schema_name=r[3], enabled=_items(r[4]),
                             product_type=r[5] or "") for r in cursor.fetchall() if r[6]]


def _all_members(scope: ReportScope) -> list[ScopeCompany]:
    """Every company of the subtree with a usage row, visible or not (the chart: aggregates only)."""
    product = "AND u.product_type = %s" if scope.options.product_type else ""
    sql = ("SELECT c.id, c.name, c.lineage, c.schema_name, u.enabled, u.product_type "  # noqa: S608 - quoted names, parameters
           "FROM companies_company c JOIN usage_companymonthusage u ON u.company_id = c.id AND u.month = %s "
           f"{product} AND {month_rows_below('%s')} WHERE c.lineage LIKE %s ORDER BY c.lineage")
    args = [scope.month, *([scope.options.product_type] if product else []), scope.company.pk,
            scope.company.lineage + "%"]
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return [ScopeCompany(id=r[0], name=r[1], lineage=r[2], schema_name=r[3], enabled=_items(r[4]),
                             product_type=r[5] or "") for r in cursor.fetchall()]


# --- company rows -------------------------------------------------------------------------------------

def report_totals(*, scope: ReportScope) -> dict:
    """The target's figures: exactly what usage_totals (and getMonthlyUsage, R7) answers."""
    return usage_totals(company=scope.company, month=scope.month, product_type=scope.options.product_type or None,
                        viewer=scope.actor.company)


ROW_FIGURES = ["licensed_endpoints", "endpoint_usage", "patch_management", "sve_vs", "sve_vdi_hours",
               "container_protection", "ats", "edr", "mdr_foundations", "exchange_mailboxes",
               "email_security_mailboxes"]


def report_company_rows(*, scope: ReportScope) -> Iterator[dict]:
    """R3/R6 rows: the target, then every company below it (or only its first-level children),
    each summing its own subtree (U13), in tree order. One statement."""
    if scope.kind == "endpoint" and scope.options.only_endpoint_details:
        return
    target = scope.company
    direct = "AND (c.id = %(target)s OR c.parent_id = %(target)s)" if scope.options.only_direct else ""
    product = "AND u.product_type = %(product)s" if scope.options.product_type else ""
    gated_items = sorted({GATED[f] for f in ROW_FIGURES if f in GATED})
    sums = ", ".join(f"sum(u.{f}) AS {f}" for f in ROW_FIGURES)
    flags = ", ".join(f"bool_or(u.enabled @> jsonb_build_array('{item}')) AS on_{item}" for item in gated_items)
    visible, _ = _visible_sql(scope.actor.company)
    visible = visible.replace("%s", "%({})s").format("v_id", "v_lineage", "v_id")
    sql = f"""
    WITH scope AS (
        SELECT c.id, c.name, c.type, c.license_key, c.lineage, {visible} AS visible
        FROM companies_company c WHERE c.lineage LIKE %(prefix)s {direct}
    ), agg AS (
        -- H5: each row sums the month's rows that were below it and below the target in that month
        SELECT a.id AS row_id, count(u.id) AS usage_rows, {sums}, {flags}
        FROM usage_companymonthusage u
        CROSS JOIN LATERAL unnest({ANCESTORS_SQL.format("u.lineage")}) AS a(id)
        WHERE u.month = %(month)s AND {month_rows_below("%(target)s")} {product}
          AND {month_rows_in_view(target="%(target)s", viewer="%(v_id)s", prefix="%(prefix)s")}
          AND a.id IN (SELECT id FROM scope)
        GROUP BY a.id
    )
    SELECT s.id, s.name, s.type, s.license_key, s.lineage, s.visible,
           own.product_type, own.reserved_seats, own.end_date, own.auto_renew, own.minimum_usage,
           lic.reserved_seats, lic.auto_renew, lic.license_type, agg.*
    FROM scope s
    LEFT JOIN agg ON agg.row_id = s.id
    LEFT JOIN usage_companymonthusage own ON own.company_id = s.id AND own.month = %(month)s
    LEFT JOIN licensing_license lic ON lic.company_id = s.id
    ORDER BY s.lineage
    """  # noqa: S608 - quoted names, parameters
    params = {"target": target.pk, "prefix": target.lineage + "%", "month": scope.month,
              "product": scope.options.product_type, "v_id": scope.actor.company_id,
              "v_lineage": scope.actor.company.lineage + "%"}
    names = _ancestor_names(scope)
    viewer_depth = len(scope.actor.company.ancestor_ids)
    month_text = f"{scope.month:%Y-%m}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        described = [col.name for col in cursor.description]
        while batch := cursor.fetchmany(FETCH):
            for raw in batch:
                yield _company_row(raw, described, names, viewer_depth, month_text, scope)


def _ancestor_names(scope: ReportScope) -> dict[int, str]:
    ids = [int(p) for p in scope.company.lineage.strip("/").split("/")]
    return dict(Company.objects.filter(pk__in=ids).values_list("id", "name"))


def _company_row(raw, described, names, viewer_depth, month_text, scope) -> dict:
    from .builder import PRODUCT_TYPES

    (company_id, name, type_, license_key, lineage, visible, own_product, own_reserved, own_end, own_renew,
     own_minimum, lic_reserved, lic_renew, license_type) = raw[:14]
    agg = dict(zip(described[14:], raw[14:], strict=True))
    names[company_id] = name
    # H3 path, cut to the part the viewer may see (C6): from the viewer's company down
    ids = [int(p) for p in lineage.strip("/").split("/")][viewer_depth:]
    row = {
        "company_id": company_id, "drill": bool(visible) and scope.can_drill_down,
        "path": " / ".join(names.get(i, "") for i in ids),
        "company_name": name, "company_type": type_.capitalize(), "license_key": license_key,
        "license_type": (license_type or "monthly").capitalize(),
        "product_type": PRODUCT_TYPES.get(own_product or "", ""),
        "month": month_text,
        "reserved_seats": own_reserved if own_product is not None else lic_reserved,
        "end_date": own_end.isoformat() if own_end else "",
        "auto_renew": "Yes" if (own_renew if own_product is not None else lic_renew) else "No",
        # L6: the minimum the month's usage row recorded (frozen at the close, what is billed), as
        # getMonthlyUsage and the Usage pages answer; no row, no minimum (docs/decisions.md, issue 8)
        "minimum_usage": own_minimum,
    }
    for figure in ROW_FIGURES:
        value = agg.get(figure) or 0
        item = GATED.get(figure)
        if item and not agg.get(f"on_{item}"):
            value = NOT_ENABLED
        row[figure] = value
    if row["reserved_seats"] is None:
        row["reserved_seats"] = ""
    if row["minimum_usage"] is None:
        row["minimum_usage"] = ""
    row["protected_mailboxes"] = row["exchange_mailboxes" if scope.kind == "exchange" else "email_security_mailboxes"]
    return row


# --- endpoint rows ------------------------------------------------------------------------------------

def _chunks(members: list[ScopeCompany]) -> Iterator[list[ScopeCompany]]:
    for start in range(0, len(members), CHUNK):
        yield members[start:start + CHUNK]


def _endpoint_union(chunk: list[ScopeCompany], month: dt.date) -> tuple[str, list]:
    start, end = month_bounds(month)
    parts, params = [], []
    for member in chunk:
        schema = connection.ops.quote_name(member.schema_name)
        # as usage/rollups.py FIGURES_SQL counts: an endpoint that held its seat all month with its month, one
        # that held it for part of the month with the days it held it (T5, L4), licensed when there are any
        parts.append(
            "SELECT %s::bigint AS company_id, %s::text AS company_name, %s::text AS lineage, "  # noqa: S608 - quoted names, parameters
            "%s::text[] AS enabled, %s::text AS product_type, m.endpoint_id, COALESCE(e.hostname, '') AS hostname, "
            f"m.os_family, m.os_type, m.machine_type, {HELD_ACTIVITY}, "
            "(COALESCE(h.whole, false) OR p.endpoint_id IS NOT NULL) AS licensed "
            f"FROM public.usage_endpointmonth m LEFT JOIN {schema}.telemetry_endpoint e ON e.id = m.endpoint_id "
            f"LEFT JOIN LATERAL (SELECT s.*, {LICENSED_ALL_MONTH} AS whole FROM public.licensing_seatassignment s "
            f"WHERE s.company_id = %s AND s.endpoint_id = m.endpoint_id AND {LICENSED_IN_MONTH}) h ON true "
            "LEFT JOIN LATERAL (SELECT d.endpoint_id, sum(d.uptime_seconds)::bigint AS uptime_seconds, "
            "bit_or(d.modules) AS modules, bit_or(d.xdr_sensors) AS xdr_sensors, "
            "bool_or(d.used_central_scan) AS used_central_scan FROM public.usage_endpointday d "
            "WHERE NOT h.whole AND d.company_id = m.company_id AND d.endpoint_id = m.endpoint_id "
            f"AND d.day >= %s AND d.day < %s AND {LICENSED_ON_DAY} GROUP BY d.endpoint_id) p ON true "
            "WHERE m.company_id = %s AND m.month = %s")
        params += [member.id, member.name, member.lineage, list(member.enabled), member.product_type,
                   start, end, start, end, member.id, end, start, start, end, start.date(), end.date(), member.id,
                   month]
    return " UNION ALL ".join(parts), params


def report_endpoint_rows(*, scope: ReportScope, column: str | None = None, company: Company | None = None,
                         limit: int | None = None) -> Iterator[dict]:
    """Endpoint details (R3) or the endpoints behind one number (R2 drill-down, `column`), for the
    companies the actor may see; `company` narrows to one row's subtree. Streamed."""
    if column not in DRILL_SQL:
        raise ValueError(column)
    members = scope.members()
    if company is not None:
        members = [m for m in members if m.lineage.startswith(company.lineage)]
    produced = 0
    for chunk in _chunks(members):
        union, params = _endpoint_union(chunk, scope.month)
        sql = f"SELECT * FROM ({union}) x WHERE {DRILL_SQL[column]} ORDER BY x.lineage, x.hostname, x.endpoint_id"  # noqa: S608 - quoted names, parameters
        if limit is not None:
            sql += f" LIMIT {int(limit - produced)}"
        cursor = connection.chunked_cursor()
        try:
            cursor.execute(sql, params)
            batch = cursor.fetchmany(FETCH)  # a named cursor describes its rows after the first fetch
            described = [col.name for col in cursor.description or ()]
            while batch:
                for raw in batch:
                    yield _endpoint_row(dict(zip(described, raw, strict=True)))
                    produced += 1
                batch = cursor.fetchmany(FETCH)
        finally:
            cursor.close()
        if limit is not None and produced >= limit:
            return


def _yes(flag) -> str:
    return "Yes" if flag else "No"


def _endpoint_row(x: dict) -> dict:
    modules, sensors = x["modules"], x["xdr_sensors"]
    row = {"company_id": x["company_id"], "endpoint_id": x["endpoint_id"], "company_name": x["company_name"],
           "hostname": x["hostname"], "os_family": x["os_family"], "os_type": x["os_type"].capitalize(),
           "machine_type": x["machine_type"].capitalize(), "uptime_seconds": x["uptime_seconds"],
           "licensed": _yes(x["licensed"])}
    for key, bit in MODULE_BITS.items():
        row[f"m_{key}"] = _yes(modules & bit)
    row["ats"] = _yes(modules & (B["hyperdetect"] | B["sandbox_analyzer"]))
    row["sve"] = _yes(x["used_central_scan"])
    for key, bit in XDR_SENSOR_BITS.items():
        row[f"x_{key}"] = _yes(sensors & bit)
    row["mdr_foundations"] = _yes(modules & B["edr"] and "mdr_foundations" in (x["enabled"] or []))
    return row


# --- chart --------------------------------------------------------------------------------------------

def report_chart_series(*, scope: ReportScope, figures: dict) -> list:
    """Endpoints using each add-on and service per day of the month, over the whole subtree, each
    add-on counted only where it is enabled; `figures` (the report's totals) leave out the series of
    add-ons not enabled. Aggregates only: no network detail leaves here."""
    from .builder import ChartSeries

    if scope.kind != "endpoint":
        return []
    start, end = month_bounds(scope.month)
    days = [(start + dt.timedelta(days=i)).date() for i in range((end - start).days)]
    counts = {key: dict.fromkeys(days, 0) for key, *_ in CHART_SERIES}
    members = _all_members(scope)
    if members:
        # each series counts only the companies where its item is enabled: one id list per series
        columns = ", ".join(f"count(*) FILTER (WHERE {cond} AND x.company_id = ANY(%s::bigint[]))"
                            for _, _, cond, _ in CHART_SERIES)
        params = [[m.id for m in members if item in m.enabled] for *_, item in CHART_SERIES]
        # T5, L4: the days an endpoint held a seat, as the figures count them
        sql = (f"SELECT x.day, {columns} FROM (SELECT d.* FROM public.usage_endpointday d "  # noqa: S608 - parameters
               "WHERE d.company_id = ANY(%s::bigint[]) AND d.day >= %s AND d.day < %s "
               "AND EXISTS (SELECT 1 FROM public.licensing_seatassignment h "
               f"WHERE h.company_id = d.company_id AND h.endpoint_id = d.endpoint_id AND {LICENSED_ON_DAY})) x "
               "GROUP BY x.day")
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, [m.id for m in members], start.date(), end.date()])
            for day, *values in cursor.fetchall():
                for (key, *_), value in zip(CHART_SERIES, values, strict=True):
                    counts[key][day] = value
    gate = {"sve": "sve_vs"}
    series = []
    for key, label, _, _ in CHART_SERIES:
        if figures.get(gate.get(key, key)) == NOT_ENABLED:
            continue
        series.append(ChartSeries(key=key, label=label, points=sorted(counts[key].items())))
    return series
