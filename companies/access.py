"""Visibility and management rules (SPEC C1-C6, A2, C5): one place that every page, API call,
export and email asks. Lookups by id answer the same 404 for missing and not-yours."""

from django.http import Http404

from .models import Company, CompanyType, Role, User
from .selectors import access_company


def _path_below(viewer: Company, target: Company) -> list[Company]:
    """Companies strictly below `viewer` down to `target` inclusive (one query)."""
    ids = [int(p) for p in target.lineage.strip("/").split("/")]
    viewer_index = ids.index(viewer.pk)
    below_ids = ids[viewer_index + 1:]
    by_id = Company.objects.in_bulk(below_ids)
    return [by_id[i] for i in below_ids]


def in_subtree(viewer: Company, target: Company) -> bool:
    return target.lineage.startswith(viewer.lineage)


def network_visible(viewer: Company, target: Company) -> bool:
    """C1/C2/C3: the viewer's company manages security, and every company from just below it down
    to the target lets its partner assist."""
    if not in_subtree(viewer, target) or not viewer.manages_security:
        return False
    if viewer.pk == target.pk:
        return True
    return all(company.partner_can_assist for company in _path_below(viewer, target))


def accounts_manageable(actor: User, target: Company) -> bool:
    """C5: an administrator manages the accounts of its own company, and of the companies below it
    whose chain down from it has assist on."""
    if actor.role != Role.COMPANY_ADMIN or not in_subtree(actor.company, target):
        return False
    if actor.company_id == target.pk:
        return True
    return all(company.partner_can_assist for company in _path_below(actor.company, target))


def can_manage_company(actor: User, target: Company) -> bool:
    """Edit, suspend, move, subscription: administrators of a partner above the company (C2 keeps
    this for reseller-only partners; C3 keeps it when assist is off)."""
    return (actor.role == Role.COMPANY_ADMIN and actor.company.type == CompanyType.PARTNER
            and target.pk != actor.company_id and in_subtree(actor.company, target))


def access_company_network(actor: User, company_id: int) -> Company:
    company = access_company(actor, company_id)
    if not network_visible(actor.company, company):
        raise Http404("No such company")
    return company


def access_company_accounts(actor: User, company_id: int) -> Company:
    company = access_company(actor, company_id)
    if not accounts_manageable(actor, company):
        raise Http404("No such company")
    return company


def access_managed_company(actor: User, company_id: int) -> Company:
    company = access_company(actor, company_id)
    if not can_manage_company(actor, company):
        raise Http404("No such company")
    return company


def access_user(actor: User, user_id: int) -> User:
    """A user account the actor may manage (C5), or 404."""
    try:
        user = User.objects.select_related("company").get(pk=user_id)
    except (User.DoesNotExist, ValueError, TypeError):
        raise Http404("No such account") from None
    if not accounts_manageable(actor, user.company):
        raise Http404("No such account")
    return user

