"""Reads for the billing integration: which companies a partner bills, what they count, the log."""

import datetime as dt

from django.db import connection
from django.db.models import Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce

from companies.models import Company, PartnerPlan
from usage.models import month_rows_below

from .models import PsaAddition, PsaConnection, SyncAttempt

MONTHLY = "monthly"
LOG_ROWS = 50


def is_monthly_q(prefix: str = "") -> Q:
    """B2: companies on a monthly subscription (S5: every company without its own licence row is)."""
    return Q(**{f"{prefix}license__isnull": True}) | Q(**{f"{prefix}license__license_type": MONTHLY})


def integration_allowed(partner: Company) -> bool:
    """B2: partners on the Basic plan cannot enable the integration."""
    return partner.is_partner and partner.plan != PartnerPlan.BASIC


def billed_companies(*, partner: Company) -> QuerySet[Company]:
    """The companies a partner bills: its direct companies (a partner below bills its own)."""
    return Company.objects.filter(parent=partner).order_by("name", "pk")


def active_endpoint_counts(*, company_ids: list[int], month: dt.date, partner_id: int | None = None) -> dict[int, int]:
    """Endpoints active in the month (at least one heartbeat) per company, a partner's subtree summed:
    one query whatever the number of companies, from the rollups' company-month rows. H5: the rows
    that were below the company *under its partner of today* (or under `partner_id`, the partner
    whose addition is pushed) in that month (a company that moved since is not this partner's to bill
    for that month)."""
    with connection.cursor() as cursor:
        cursor.execute(ACTIVE_SQL, {"ids": list(company_ids), "month": month, "partner": partner_id})
        return dict(cursor.fetchall())


# per company, the month's rows below it and its partner: the stored lineage's ids are GIN-indexed
# (usage 0004), and the partner must come right before the company in that lineage
ACTIVE_SQL = f"""
SELECT c.id, COALESCE((
    SELECT sum(u.active_endpoints) FROM usage_companymonthusage u
    WHERE u.month = %(month)s
      AND {month_rows_below("COALESCE(%(partner)s::bigint, c.parent_id)", "c.id")}
      AND strpos(u.lineage, '/' || COALESCE(%(partner)s::bigint, c.parent_id) || '/' || c.id || '/') > 0
), 0)::int
FROM companies_company c
WHERE c.id = ANY(%(ids)s)
"""  # noqa: S608 - our own constant


def connection_of(partner: Company) -> PsaConnection | None:
    return PsaConnection.objects.filter(company=partner).first()


def integration_page(*, partner: Company, month: dt.date) -> dict:
    """Everything the Integrations page shows, in a fixed number of queries."""
    connection = connection_of(partner)
    companies = list(billed_companies(partner=partner)
                     .annotate(monthly=Coalesce(Sum(1, filter=is_monthly_q()), Value(0)))
                     .select_related("psa_mapping"))
    counts = active_endpoint_counts(company_ids=[c.pk for c in companies], month=month)
    # H5: only what this partner's connection sent (a company that moved in keeps its old partner's addition)
    additions = {a.company_id: a for a in PsaAddition.objects.filter(company__in=companies, month=month,
                                                                     connection=connection)} if connection else {}
    rows = []
    for company in companies:
        mapping = getattr(company, "psa_mapping", None)
        if mapping is not None and connection is not None and mapping.connection_id != connection.pk:
            mapping = None
        rows.append({"company": company, "mapping": mapping, "monthly": bool(company.monthly),
                     "active": counts.get(company.pk, 0), "addition": additions.get(company.pk)})
    attempts = (list(SyncAttempt.objects.filter(connection=connection).select_related("company")[:LOG_ROWS])
                if connection else [])
    return {"connection": connection, "rows": rows, "attempts": attempts, "month": month,
            "allowed": integration_allowed(partner)}
