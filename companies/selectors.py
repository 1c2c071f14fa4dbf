"""Reads of the company tree, always scoped to what the actor may see (SPEC C6)."""

import mimetypes
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import BooleanField, Count, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.http import Http404

from .models import Company, User


def company_subtree(*, company: Company, include_self: bool = True) -> QuerySet[Company]:
    """The company and everything below it: one indexed prefix match on the lineage."""
    qs = Company.objects.filter(lineage__startswith=company.lineage)
    if not include_self:
        qs = qs.exclude(pk=company.pk)
    return qs


def access_company(actor: User, company_id: int) -> Company:
    """The company `company_id` if it lies in the actor's subtree.

    Missing and forbidden answer the same 404, so ids of other companies cannot be probed.
    """
    try:
        return company_subtree(company=actor.company).get(pk=company_id)
    except (Company.DoesNotExist, ValueError, TypeError):
        raise Http404("No such company") from None


def company_path(*, company: Company) -> list[Company]:
    """Ancestors root first, then the company itself (SPEC H3)."""
    ids = company.ancestor_ids
    by_id = Company.objects.in_bulk(ids)
    return [by_id[i] for i in ids if i in by_id] + [company]


def company_schema_census() -> dict:
    """Counts in the schema the connection is in now (the tenant of the request or task)."""
    from django.db import connection

    from usage.telemetry.models import Endpoint

    return {"schema": connection.schema_name, "endpoints": Endpoint.objects.count()}


def company_list(*, viewer: Company, search: str = "", type: str = "", status: str = "",
                 assist: str = "") -> QuerySet[Company]:
    """The viewer's subtree below it, filtered; ordered as a tree (lineage order)."""
    qs = company_subtree(company=viewer, include_self=False)
    if search:
        qs = qs.filter(name__icontains=search)
    if type:
        qs = qs.filter(type=type)
    if status:
        qs = qs.filter(status=status)
    if assist in ("on", "off"):
        qs = qs.filter(partner_can_assist=assist == "on")
    # seats held by the company's licensed endpoints (the seat rows live in the public schema)
    seats = Count("seat_assignments", filter=Q(seat_assignments__state="licensed"))
    return qs.annotate(seats_in_use=seats).order_by("lineage")


def company_paths(*, companies: list[Company], viewer: Company) -> dict[int, list[Company]]:
    """Paths (H3) for a page of companies in one query, cut to the part the viewer may see (C6):
    from the viewer's own company down."""
    ancestor_ids = {i for c in companies for i in c.ancestor_ids}
    by_id = Company.objects.only("id", "name").in_bulk(ancestor_ids)
    paths = {}
    for company in companies:
        ids = company.ancestor_ids
        start = ids.index(viewer.pk) if viewer.pk in ids else len(ids)
        paths[company.pk] = [by_id[i] for i in ids[start:] if i in by_id] + [company]
    return paths


def company_path_for(*, company: Company, viewer: Company) -> list[Company]:
    return company_paths(companies=[company], viewer=viewer)[company.pk]


def companies_with_accounts_managed_by(*, viewer: Company) -> QuerySet[Company]:
    """C5: the viewer's company and the companies below it whose chain down from it has assist
    on, in one query: a company is left out when it, or an ancestor below the viewer, has assist off."""
    hidden = RawSQL(  # noqa: S611 - fixed SQL, values passed as parameters
        "EXISTS (SELECT 1 FROM companies_company off WHERE off.partner_can_assist = false "
        "AND off.lineage LIKE %s AND off.id <> %s "
        "AND companies_company.lineage LIKE off.lineage || '%%')",
        [viewer.lineage + "%", viewer.pk],
        output_field=BooleanField(),
    )
    return company_subtree(company=viewer).alias(hidden=hidden).filter(hidden=False)


def move_targets(*, viewer: Company, company: Company) -> QuerySet[Company]:
    """Partners the company may move under: in the viewer's subtree (the viewer included), not
    the company itself or below it, not its current parent."""
    return (company_subtree(company=viewer).filter(type="partner")
            .exclude(lineage__startswith=company.lineage).exclude(pk=company.parent_id)
            .order_by("lineage"))


@dataclass(frozen=True)
class Logo:
    name: str
    content: bytes
    mimetype: str


DEFAULT_LOGO = Path(settings.BASE_DIR) / "static" / "img" / "default-logo.svg"


def company_logo(*, company: Company) -> Logo:
    """H2: the logo reports and emails for `company` carry: its own, else the platform's (the root
    company's), else the product's default. A logo file that cannot be read counts as none."""
    if company.logo and (logo := _logo_read(company)):
        return logo
    root = Company.objects.filter(parent__isnull=True).exclude(logo="").exclude(pk=company.pk).first()
    if root is not None and (logo := _logo_read(root)):
        return logo
    return Logo(DEFAULT_LOGO.name, DEFAULT_LOGO.read_bytes(), "image/svg+xml")


def _logo_read(company: Company) -> Logo | None:
    try:
        with company.logo.open("rb") as handle:
            content = handle.read()
    except OSError:
        return None
    name = Path(company.logo.name).name
    return Logo(name, content, mimetypes.guess_type(name)[0] or "image/png")
