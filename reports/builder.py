"""The Monthly License Usage report (SPEC R1-R7): one object that every output renders.

`report_build` decides what the actor may see (C2, C3, C6) once; the renderers (web page, CSV,
PDF, email) only draw it. Company rows and endpoint rows are read lazily from SQL, so a report
over 100,000 endpoints never sits in memory whole.
"""

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

from django.core.exceptions import ValidationError
from django.utils import timezone

from companies.models import Company, User

KINDS = ("endpoint", "exchange", "email_security")  # R6
KIND_TITLES = {
    "endpoint": "Monthly License Usage",
    "exchange": "Security for Exchange Monthly License Usage",
    "email_security": "Email Security Monthly License Usage",
}
PRODUCT_TYPES = {"endpoint_security": "Endpoint Security", "edr_standalone": "EDR (standalone)"}  # R1, U11

# R3: the table's columns, in this order, with these exact CSV headers
ENDPOINT_COLUMNS = [
    ("path", "Path"),
    ("company_name", "Company name"),
    ("company_type", "Company type"),
    ("license_key", "License key"),
    ("license_type", "License Type"),
    ("product_type", "Product Type"),
    ("month", "Month"),
    ("licensed_endpoints", "Licensed endpoints"),
    ("endpoint_usage", "Endpoint usage"),
    ("patch_management", "Patch Management usage"),
    ("sve_vs", "SVE: VS"),
    ("sve_vdi_hours", "SVE: VDI"),
    ("container_protection", "Container Protection Usage"),
    ("ats", "ATS usage"),
    ("edr", "EDR usage"),
    ("mdr_foundations", "MDR Foundations"),
    ("reserved_seats", "Reserved seats"),
    ("end_date", "Subscription end date"),
    ("auto_renew", "Subscription auto-renewal"),
    ("minimum_usage", "Minimum usage"),
]
# R6: company, license key, month, protected mailboxes (the path keeps the hierarchy readable)
MAILBOX_COLUMNS = [
    ("path", "Path"),
    ("company_name", "Company name"),
    ("license_key", "License key"),
    ("month", "Month"),
    ("protected_mailboxes", "Protected mailboxes"),
]
# the usage-row figure behind each numeric column
FIGURE_OF = {
    "licensed_endpoints": "licensed_endpoints", "endpoint_usage": "endpoint_usage",
    "patch_management": "patch_management", "sve_vs": "sve_vs", "sve_vdi_hours": "sve_vdi_hours",
    "container_protection": "container_protection", "ats": "ats", "edr": "edr",
    "mdr_foundations": "mdr_foundations",
}
MAILBOX_FIGURE = {"exchange": "exchange_mailboxes", "email_security": "email_security_mailboxes"}
# columns whose numbers open the endpoints behind them (R2)
DRILL_COLUMNS = tuple(FIGURE_OF)


@dataclass(frozen=True)
class ReportOptions:
    product_type: str | None = None  # R1: "endpoint_security" or "edr_standalone"; None = all
    only_endpoint_details: bool = False  # R1: endpoints, no hierarchy
    only_direct: bool = False  # R1: the target and its first-level children only

    def describe(self) -> list[str]:
        parts = [f"Product type: {PRODUCT_TYPES.get(self.product_type or '', 'All')}"]
        if self.only_endpoint_details:
            parts.append("Only endpoint details")
        if self.only_direct:
            parts.append("Only direct companies")
        return parts


@dataclass(frozen=True)
class ChartSeries:
    key: str
    label: str
    points: list[tuple[dt.date, int]]  # one point per day of the month


class LazyRows:
    """Company rows, read from SQL each time they are iterated (never held whole)."""

    def __init__(self, produce):
        self._produce = produce

    def __iter__(self) -> Iterator[dict]:
        return iter(self._produce())


@dataclass
class Report:
    title: str
    company: Company
    month: dt.date
    kind: str
    options: ReportOptions
    columns: list[tuple[str, str]]
    rows: LazyRows
    totals: dict
    can_drill_down: bool
    generated_at: dt.datetime
    actor: User
    endpoint_columns: list[tuple[str, str]] = field(default_factory=list)
    _scope: object = None  # reports.selectors.ReportScope

    @cached_property
    def chart(self) -> list[ChartSeries]:
        """Add-on and service usage over the month, per day (R2); company-level figures only."""
        from .selectors import report_chart_series

        return report_chart_series(scope=self._scope, figures=self.totals["figures"])

    def endpoints(self) -> Iterator[dict]:
        """R3 endpoint details: only endpoints the actor may see (C2, C3); streamed from SQL."""
        from .selectors import report_endpoint_rows

        if self.kind != "endpoint" or not self.can_drill_down:
            return iter(())
        return report_endpoint_rows(scope=self._scope)

    def endpoints_behind(self, *, column: str, company: Company, limit: int | None = None) -> Iterator[dict]:
        """R2 drill-down: the endpoints behind one number (`column`) of `company`'s row, as the actor
        may see them (C2, C3)."""
        from .selectors import report_endpoint_rows

        if self.kind != "endpoint" or not self.can_drill_down:
            return iter(())
        return report_endpoint_rows(scope=self._scope, column=column, company=company, limit=limit)

    def endpoints_page(self, *, limit: int) -> Iterator[dict]:
        from .selectors import report_endpoint_rows

        if self.kind != "endpoint" or not self.can_drill_down:
            return iter(())
        return report_endpoint_rows(scope=self._scope, limit=limit)

    def endpoint_company_ids(self) -> list[int]:
        """The companies whose endpoint rows the report lists (C2, C3: those the actor may see)."""
        if self.kind != "endpoint" or not self.can_drill_down:
            return []
        return [member.id for member in self._scope.members()]

    @property
    def show_company_rows(self) -> bool:
        return not (self.kind == "endpoint" and self.options.only_endpoint_details)

    @property
    def month_label(self) -> str:
        return f"{self.month:%B %Y}"


def report_access(actor: User, company_id) -> Company:
    """The company a report may be made for: the actor's own or one below it (C6); the same 404
    for missing and forbidden. Reports stay open to reseller-only partners (C2) and to partners
    without assist (C3); what they may not see is left out by report_build."""
    from companies.selectors import access_company

    return access_company(actor, company_id)


def month_parse(value) -> dt.date:
    """'2026-11' or a date -> the first day of that month, from 2000-01 up to the current month (as
    every other month input: usage_month_parse); a clear error naming the field."""
    from usage.month_selectors import usage_month_parse

    if isinstance(value, dt.date):
        value = f"{value:%Y-%m}"
    return usage_month_parse(str(value) if value is not None else "")


def report_build(*, actor: User, company: Company, month: dt.date, kind: str = "endpoint",
                 options: ReportOptions = ReportOptions()) -> Report:  # noqa: B008 - frozen, shared safely
    """The Monthly License Usage report of `company` for `month`, as `actor` may see it."""
    from .selectors import report_company_rows, report_scope

    if kind not in KINDS:
        raise ValidationError({"kind": f"Choose one of: {', '.join(KINDS)}."})
    if options.product_type and options.product_type not in PRODUCT_TYPES:
        raise ValidationError({"product_type": f"Choose one of: {', '.join(PRODUCT_TYPES)}."})
    month = month_parse(month)
    scope = report_scope(actor=actor, company=company, month=month, kind=kind, options=options)
    columns = ENDPOINT_COLUMNS if kind == "endpoint" else MAILBOX_COLUMNS
    from .selectors import ENDPOINT_DETAIL_COLUMNS, report_totals

    return Report(
        title=KIND_TITLES[kind], company=company, month=month, kind=kind, options=options,
        columns=list(columns),
        rows=LazyRows(lambda: report_company_rows(scope=scope)),
        totals=report_totals(scope=scope),
        can_drill_down=scope.can_drill_down,
        generated_at=timezone.now(), actor=actor,
        endpoint_columns=list(ENDPOINT_DETAIL_COLUMNS) if kind == "endpoint" else [],
        _scope=scope,
    )
