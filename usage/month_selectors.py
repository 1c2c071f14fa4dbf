"""Reads behind getMonthlyUsage (R7) and the Usage pages: one company's month as the report shows it.

Built on usage.selectors.usage_totals, the selector the Monthly License Usage report uses, so the API,
the pages and the report never disagree. Every read is a fixed number of queries whatever the size
of the subtree (sums happen in SQL). Company-level figures only: nothing here names an endpoint, so
C2/C3 allow these reads for every company in the caller's subtree.
"""

import datetime as dt
import re

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count, Q, Sum
from django.utils import timezone

from companies.models import Company, CompanyType
from licensing.models import SeatAssignment, SeatState

from .models import ANCESTORS_SQL, CompanyMonthUsage, month_rows_below, month_rows_in_view
from .rollups import GATED, RETENTION_DELTA, month_start
from .selectors import NOT_ENABLED, month_closed_at, months_closed_at, rows_in_view, usage_totals

# R3 headers where the report has one; the others in the same words
FIGURE_LABELS = {
    "active_endpoints": "Active endpoints",
    "licensed_endpoints": "Licensed endpoints",
    "endpoint_usage": "Endpoint usage",
    "patch_management": "Patch Management usage",
    "full_disk_encryption": "Full Disk Encryption usage",
    "edr": "EDR usage",
    "integrity_monitoring": "Integrity Monitoring usage",
    "ats": "ATS usage",
    "hyperdetect": "ATS: HyperDetect",
    "sandbox_analyzer": "ATS: Sandbox Analyzer",
    "xdr_identity": "XDR: Identity Providers",
    "xdr_productivity": "XDR: Productivity",
    "xdr_network": "XDR: Network",
    "xdr_cloud": "XDR: Cloud Workloads",
    "sve_vs": "SVE: VS",
    "sve_vdi_hours": "SVE: VDI",
    "container_protection": "Container Protection Usage",
    "mdr_foundations": "MDR Foundations",
    "exchange_mailboxes": "Security for Exchange mailboxes",
    "email_security_mailboxes": "Email Security mailboxes",
}
PRODUCT_TYPES = ("endpoint_security", "edr_standalone")
MONTH_PATTERN = re.compile(r"([0-9]{4})-([0-9]{2})")  # ASCII digits only, matched whole
HISTORY_MONTHS = 24

RETENTION_SQL = f"""
SELECT t.key, sum(t.value::int)
FROM usage_companymonthusage u, jsonb_each_text(u.data_retention) AS t(key, value)
WHERE u.month = %(month)s AND (u.company_id = %(company)s OR %(subtree)s AND {month_rows_below("%(company)s")})
  AND (%(product_type)s = '' OR u.product_type = %(product_type)s)
  AND {month_rows_in_view(target="%(company)s", viewer="%(viewer)s", prefix="%(prefix)s")}
GROUP BY t.key ORDER BY t.key
"""  # noqa: S608 - our own constants


def usage_month_parse(value: str, *, field: str = "month", today: dt.date | None = None) -> dt.date:
    """'2026-11' -> 2026-11-01. Bad input, or a month still to come, is a ValidationError naming the field."""
    match = MONTH_PATTERN.fullmatch(value or "")
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 2000:
        raise ValidationError({field: f"Give a month as YYYY-MM (for example 2026-11), not {value[:20]!r}."})
    month = dt.date(int(match.group(1)), int(match.group(2)), 1)
    current = month_start(today or timezone.now())
    if month > current:
        raise ValidationError({field: f"{value} has not started yet: usage exists up to {current:%Y-%m}."})
    return month


def usage_months(*, company: Company, subtree: bool = True, limit: int = HISTORY_MONTHS,
                 viewer: Company | None = None) -> list[dict]:
    """Months with usage for the company (its subtree when `subtree`, as `viewer` may read it), newest
    first; the current month is always listed. Three queries at most."""
    rows = rows_in_view(CompanyMonthUsage.objects.all(), company=company, subtree=subtree, viewer=viewer)
    months = set(rows.order_by().values_list("month", flat=True).distinct())
    months.add(month_start(timezone.now()))
    newest = sorted(months, reverse=True)[:limit]
    current = month_start(timezone.now())
    # U12: final once the company's subtree is, even before the whole installation's close
    closed = months_closed_at(pairs=[(company.pk, month) for month in newest if month < current])
    closed = {month for (_, month), at in closed.items() if at is not None}
    return [{"month": m, "finalized": m in closed} for m in newest]


def _retention(*, company: Company, month: dt.date, subtree: bool, product_type: str,
               viewer: Company | None) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(RETENTION_SQL, {"month": month, "company": company.pk, "subtree": subtree,
                                       "product_type": product_type, "viewer": viewer.pk if viewer else None,
                                       "prefix": company.lineage + "%"})
        return {key: int(total) for key, total in cursor.fetchall()}


def seat_state_counts(*, company: Company, subtree: bool = True) -> dict[str, int]:
    """Endpoints by seat state now (licensed, trial, expired): counts, never endpoint rows. One query."""
    seats = SeatAssignment.objects.all()
    seats = (seats.filter(company__lineage__startswith=company.lineage) if subtree
             else seats.filter(company=company))
    counts = seats.aggregate(**{state: Count("pk", filter=Q(state=state)) for state in SeatState.values})
    return {state: counts[state] for state in SeatState.values}


def _before(company: Company, month: dt.date) -> bool:
    """Did `month` end before the company was added?"""
    return month_start(company.created_at) > month


def usage_month_detail(*, company: Company, month: dt.date, product_type: str = "",
                       subtree: bool | None = None, viewer: Company | None = None) -> dict:
    """The month's figures as the report shows them: `usage_totals` (a partner's figures sum its
    subtree, U13; "Not enabled" for add-ons none of them has), the late adjustments recorded for the
    month before (U12), Data Retention charged per tier (U8), the company's own seats, minimum and
    subscription (R3, L6), and whether the month is finalized. Rows as `viewer` may read them
    (rows_in_view). A fixed number of queries."""
    if subtree is None:
        subtree = company.type == CompanyType.PARTNER
    totals = usage_totals(company=company, month=month, product_type=product_type or None, subtree=subtree,
                          viewer=viewer)
    own = CompanyMonthUsage.objects.filter(company=company, month=month).first()
    # the same companies as the totals: the subtree or the company, of the product type asked for (U11, U13)
    with_retention = rows_in_view(CompanyMonthUsage.objects.filter(month=month, enabled__contains=["data_retention"]),
                                  company=company, subtree=subtree, viewer=viewer)
    if product_type:
        with_retention = with_retention.filter(product_type=product_type)
    retention_on = with_retention.exists()
    retention = (_retention(company=company, month=month, subtree=subtree, product_type=product_type, viewer=viewer)
                 if retention_on else NOT_ENABLED)
    figures = totals["figures"]
    minimum = own.minimum_usage if own else None
    billed = None
    if not subtree:
        # L6: billing for the month is max(minimum, actual usage)
        billed = max(minimum or 0, figures["endpoint_usage"])
    # U12: a company's month is final once its own row is; a partner's sum, once its subtree's rows are
    own_final = own.finalized_at if own and not subtree else None
    finalized_at = own_final or month_closed_at(company_ids=[company.pk], month=month)[company.pk]
    current = month_start(timezone.now())
    status = "finalized" if finalized_at else ("open" if month == current else "awaiting close")
    if status == "awaiting close" and not totals["companies"] and _before(company, month):
        status = "finalized"  # ended before the company existed, nothing recorded: no close will come
    return {
        "company": company,
        "month": month,
        "status": status,
        "finalized_at": finalized_at,
        "computed_at": own.computed_at if own else None,
        "subtree": subtree,
        "product_type": product_type,
        "companies": totals["companies"],
        "figures": figures,
        "gated": sorted(GATED),
        "data_retention": retention,
        "reserved_seats": own.reserved_seats if own else None,
        "minimum_usage": minimum,
        "billed_endpoint_usage": billed,
        "end_date": own.end_date if own else None,
        "auto_renew": own.auto_renew if own else False,
        "late_adjustments": {"month": totals["late_adjustments_month"], "months": totals["late_adjustments_months"],
                             "figures": totals["late_adjustments"]},
    }


def late_rows(detail: dict) -> list[tuple[str, int]]:
    """U12: the late adjustments as (label, change), in report order, Data Retention tiers last."""
    late = detail["late_adjustments"]["figures"]
    rows = [(label, late[key]) for key, label in FIGURE_LABELS.items() if late.get(key)]
    rows += [(f"Data Retention ({key.removeprefix(RETENTION_DELTA)})", value) for key, value in sorted(late.items())
             if key.startswith(RETENTION_DELTA) and value]
    return rows


def figure_rows(detail: dict) -> list[dict]:
    """The figures in report order with their labels, for pages."""
    return [{"key": key, "label": label, "value": detail["figures"][key],
             "not_enabled": detail["figures"][key] == NOT_ENABLED}
            for key, label in FIGURE_LABELS.items()]


HISTORY_FIGURES = ("licensed_endpoints", "endpoint_usage")

# each child sums the month's rows that were below both it and the parent in that month (H5)
CHILDREN_SQL = f"""
WITH below AS (
    SELECT a.id, sum(u.licensed_endpoints) AS licensed, sum(u.endpoint_usage) AS usage
    FROM usage_companymonthusage u
    CROSS JOIN LATERAL unnest({ANCESTORS_SQL.format("u.lineage")}) AS a(id)
    WHERE u.month = %(month)s AND {month_rows_below("%(parent)s")}
      AND {month_rows_in_view(target="%(parent)s", viewer="%(viewer)s", prefix="%(prefix)s")}
    GROUP BY a.id
)
SELECT c.id, c.name, c.type, COALESCE(b.licensed, 0), COALESCE(b.usage, 0)
FROM companies_company c LEFT JOIN below b ON b.id = c.id
WHERE c.parent_id = %(parent)s
ORDER BY c.name LIMIT %(limit)s
"""  # noqa: S608 - our own constants


def usage_history(*, company: Company, subtree: bool, limit: int = HISTORY_MONTHS,
                  viewer: Company | None = None) -> list[dict]:
    """Licensed endpoints and endpoint usage per month, newest first, summed over the subtree when
    `subtree` (U13). A subtree's month is finalized once every company in it is (months_closed_at), as
    the page's status and the month list say. One grouped query, and two more for a subtree."""
    rows = rows_in_view(CompanyMonthUsage.objects.all(), company=company, subtree=subtree, viewer=viewer)
    sums = list(rows.values("month").annotate(**{f: Sum(f) for f in HISTORY_FIGURES},
                                              finalized=Count("pk", filter=Q(finalized_at__isnull=False)))
                .order_by("-month")[:limit])
    if subtree and sums:
        closed = months_closed_at(pairs=[(company.pk, row["month"]) for row in sums])
        return [{**row, "finalized": closed[(company.pk, row["month"])] is not None} for row in sums]
    return [{**row, "finalized": bool(row["finalized"])} for row in sums]


CHILDREN_LIMIT = 500  # rows on the Usage page; the page says when a partner has more (the report lists all)


def usage_children(*, company: Company, month: dt.date, limit: int | None = None,
                   viewer: Company | None = None) -> list[dict]:
    """The companies directly below `company`, each with its subtree's licensed endpoints and endpoint
    usage for the month (U13, "only direct companies"), as `viewer` may read them (rows_in_view: from
    above, only companies below `company` now). One query."""
    with connection.cursor() as cursor:
        cursor.execute(CHILDREN_SQL, {"month": month, "parent": company.pk, "viewer": viewer.pk if viewer else None,
                                      "prefix": company.lineage + "%", "limit": limit or CHILDREN_LIMIT})
        return [{"id": pk, "name": name, "type": type_, "licensed_endpoints": licensed, "endpoint_usage": usage}
                for pk, name, type_, licensed, usage in cursor.fetchall()]
