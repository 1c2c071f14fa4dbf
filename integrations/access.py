"""Lookups by id for the Integrations page: the same 404 for missing and not-yours (SPEC C6)."""

from django.http import Http404

from companies.access import access_managed_company
from companies.models import Company, CompanyType, Role, User


def access_billed_company(actor: User, company_id) -> Company:
    """A company the actor's partner bills (one of its direct companies), for its administrators."""
    if actor.role != Role.COMPANY_ADMIN or actor.company.type != CompanyType.PARTNER:
        raise Http404("No such company")
    try:
        return Company.objects.select_related("parent").get(pk=company_id, parent_id=actor.company_id)
    except (Company.DoesNotExist, ValueError, TypeError):
        raise Http404("No such company") from None


def access_plan_company(actor: User, company_id) -> Company:
    """A partner below the actor whose plan the actor may set (the partners above it manage it)."""
    company = access_managed_company(actor, company_id)
    if company.type != CompanyType.PARTNER:
        raise Http404("No such company")
    return company
