"""Reading monthly usage: one company's own row, or a partner's subtree summed in SQL (U13)."""

import datetime as dt

from django.db import connection
from django.db.models import Exists, OuterRef, Q, Subquery, Sum
from django.utils import timezone

from companies.models import Company

from .models import CompanyMonthUsage, LateAdjustment, MonthClose
from .rollups import GATED, month_previous

NOT_ENABLED = "Not enabled"


def usage_after_move(company: Company, old_parent: Company) -> None:
    """H5: usage already recorded stays with the months it belongs to. Finalized months keep the place
    in the tree they were frozen with, and so does an ended month not closed yet (it ended with the old
    partner); the current month follows the company (and its subtree) to its new partner at once, as the
    next rollup would. The subtree's rollup locks are taken first: a rollup that read the old lineage
    finishes before, one that starts after waits for the move."""
    from .rollups import month_start, rollup_locks_take

    ids = list(Company.objects.filter(lineage__startswith=company.lineage).values_list("pk", flat=True))
    rollup_locks_take(ids)
    CompanyMonthUsage.objects.filter(company_id__in=ids, month__gte=month_start(timezone.now()),
                                     finalized_at__isnull=True) \
        .update(lineage=Subquery(Company.objects.filter(pk=OuterRef("company_id")).values("lineage")[:1]))


def rows_in_view(rows, *, company: Company, subtree: bool, viewer: Company | None = None):
    """`rows` (company-month rows or late adjustments) of the company, or with `subtree` of every company
    that was below it in their month (H5), as `viewer` may read them (C6). The company's own users, and
    a partner that was above a row in its month, read it as it was billed; otherwise a partner above the
    company now reads only the rows of companies below it now: a company that has since moved elsewhere
    was never the viewer's, and its figures could otherwise be worked out by subtracting the rows listed
    from the total. `viewer` None: no one's view (internal). usage.models.month_rows_in_view is the same
    rule in SQL."""
    if not subtree:
        return rows.filter(company=company)
    rows = rows.filter(lineage__names=company.pk)
    if viewer is not None and viewer.pk != company.pk:
        rows = rows.filter(Q(lineage__names=viewer.pk) | Q(company__lineage__startswith=company.lineage))
    return rows


def usage_totals(*, company: Company, month: dt.date, product_type: str | None = None,
                 subtree: bool = True, viewer: Company | None = None) -> dict:
    """The month's figures for `company`: its own row, plus (subtree=True) every company below it.

    An add-on enabled for none of the summed companies reads "Not enabled" (U13). `product_type`
    keeps only companies of that product type (U11: an EDR report shows nothing of Endpoint
    Security companies). Late adjustments recorded for the previous month are returned apart.
    A month's rows are summed by the place in the tree they hold for that month (H5), as `viewer` may
    read them (rows_in_view).
    """
    rows = rows_in_view(CompanyMonthUsage.objects.filter(month=month), company=company, subtree=subtree,
                        viewer=viewer)
    if product_type:
        rows = rows.filter(product_type=product_type)
    aggregates = {figure: Sum(figure) for figure in CompanyMonthUsage.FIGURES}
    # one aggregate per add-on: does any summed company have it enabled this month?
    enabled_items = sorted(set(GATED.values()))
    for item in enabled_items:
        aggregates[f"on_{item}"] = Sum(1, filter=Q(enabled__contains=[item]))
    aggregates["rows"] = Sum(1)
    totals = rows.aggregate(**aggregates)
    figures = {figure: totals[figure] or 0 for figure in CompanyMonthUsage.FIGURES}
    for figure, item in GATED.items():
        if not totals[f"on_{item}"]:
            figures[figure] = NOT_ENABLED
    # U12: the adjustments this month's report carries: recorded after the last report was made, for
    # any finalized month before it (usually the previous one)
    adjustments = rows_in_view(LateAdjustment.objects.filter(reported_in=month), company=company, subtree=subtree,
                               viewer=viewer)
    if product_type:  # each adjustment counts under its company's product type of the finalized month
        adjustments = adjustments.filter(Exists(CompanyMonthUsage.objects.filter(
            company=OuterRef("company"), month=OuterRef("month"), product_type=product_type)))
    late: dict[str, int] = {}
    late_months: set[dt.date] = set()
    for adjusted_month, delta in adjustments.values_list("month", "delta"):
        late_months.add(adjusted_month)
        for key, value in delta.items():
            late[key] = late.get(key, 0) + value
    months = sorted(late_months)
    return {"figures": figures, "companies": totals["rows"] or 0, "late_adjustments": late,
            "late_adjustments_month": months[-1] if months else month_previous(month),
            "late_adjustments_months": months or [month_previous(month)]}



# Per (company, month): when every company of the company's subtree that existed before the month
# ended, or has a row for the month (its telemetry may be dated before it was added), had its row
# for the month finalized (the latest of those times), or NULL while any row is missing or still open.
SUBTREE_CLOSED_SQL = """
SELECT p.company_id, p.month,
       CASE WHEN count(*) FILTER (WHERE u.finalized_at IS NULL) = 0 THEN max(u.finalized_at) END
FROM unnest(%(ids)s::bigint[], %(months)s::date[]) AS p(company_id, month)
JOIN public.companies_company c ON c.id = p.company_id
JOIN public.companies_company d ON d.lineage LIKE c.lineage || '%%'
LEFT JOIN public.usage_companymonthusage u ON u.company_id = d.id AND u.month = p.month
WHERE d.created_at < ((p.month + interval '1 month')::timestamp AT TIME ZONE 'UTC') OR u.id IS NOT NULL
GROUP BY p.company_id, p.month
"""


def months_closed_at(*, pairs: list[tuple[int, dt.date]]) -> dict[tuple[int, dt.date], dt.datetime | None]:
    """U12: for each (company, month), when the month was frozen for the company's reports (the
    company and its subtree), or None while it is not. The month close finalizes company by company
    and writes MonthClose once all are done; a report waits only for its own subtree, so a company
    whose last rollup keeps failing holds back its own partners' report emails and PSA pushes, not
    every partner's. Two queries at most, whatever the number of pairs."""
    closed = dict(MonthClose.objects.filter(month__in={month for _, month in pairs})
                  .values_list("month", "finalized_at"))
    result = {pair: closed.get(pair[1]) for pair in pairs}
    open_pairs = [pair for pair, at in result.items() if at is None]
    if open_pairs:
        with connection.cursor() as cursor:
            cursor.execute(SUBTREE_CLOSED_SQL, {"ids": [company_id for company_id, _ in open_pairs],
                                                "months": [month for _, month in open_pairs]})
            for company_id, month, at in cursor.fetchall():
                result[(company_id, month)] = at
    return result


def month_closed_at(*, company_ids: list[int], month: dt.date) -> dict[int, dt.datetime | None]:
    """months_closed_at for one month."""
    closed = months_closed_at(pairs=[(company_id, month) for company_id in company_ids])
    return {company_id: closed[(company_id, month)] for company_id in company_ids}
