"""Licensing changes made from one form or API call: seats, subscription and selections together,
in one transaction, each rule checked by its own service."""

import datetime as dt

from django.db import transaction

from companies.models import Company, CompanyType, User
from companies.services import PrimaryAccount, company_create

from .entitlements import entitlements_set, selection_of
from .models import CatalogItem, Purpose
from .seats import license_of, reservation_set
from .subscriptions import subscription_set

UNCHANGED = object()


@transaction.atomic
def license_update(*, actor: User | None, company: Company, reserved_seats=UNCHANGED, end_date=UNCHANGED,
                   auto_renew=UNCHANGED, renew_months=UNCHANGED, minimum_usage=UNCHANGED,
                   own_use: set[str] | None = None, resell: set[str] | None = None) -> None:
    """Apply every given part; the first rule that refuses rolls back the whole change."""
    lic = license_of(company)
    target = {
        "end_date": lic.end_date if end_date is UNCHANGED else end_date,
        "auto_renew": lic.auto_renew if auto_renew is UNCHANGED else auto_renew,
        "renew_months": lic.renew_months if renew_months is UNCHANGED else renew_months,
        "minimum_usage": lic.minimum_usage if minimum_usage is UNCHANGED else minimum_usage,
    }
    if reserved_seats is not UNCHANGED and reserved_seats != lic.reserved_seats:
        # the minimum may not exceed the reservation at any moment: lower it first, set it last
        if lic.minimum_usage is not None:
            subscription_set(actor=actor, company=company, **{**target, "minimum_usage": None})
        reservation_set(actor=actor, company=company, seats=reserved_seats)
    subscription_set(actor=actor, company=company, **target)
    # E4: a customer's empty selection is nothing to do; anything else goes to validate_resell, which refuses it
    if resell or (resell is not None and company.type == CompanyType.PARTNER):
        entitlements_set(actor=actor, company=company, purpose=Purpose.RESELL, keys=resell)
    if own_use is not None:
        entitlements_set(actor=actor, company=company, purpose=Purpose.OWN_USE, keys=own_use)


@transaction.atomic
def company_onboard(*, actor: User, parent: Company, name: str, type: str,
                    primary_account: PrimaryAccount | None = None, reserved_seats: int | None = None,
                    end_date: dt.date | None = None, auto_renew: bool = False, renew_months: int = 12,
                    minimum_usage: int | None = None, own_use: set[str] | None = None,
                    resell: set[str] | None = None, **details) -> Company:
    """The add-company wizard: details, authentication and licensing in one transaction."""
    company = company_create(actor=actor, parent=parent, name=name, type=type,
                             primary_account=primary_account, **details)
    license_update(actor=actor, company=company, reserved_seats=reserved_seats, end_date=end_date,
                   auto_renew=auto_renew, renew_months=renew_months, minimum_usage=minimum_usage,
                   own_use=own_use or None, resell=resell or None)
    return company


def licensing_summary(*, company: Company, viewer: Company | None = None) -> dict:
    """What the Licensing page shows for one company. The trial endpoints are an endpoint list: only
    for a viewer that sees the company's network (C1-C3), like the REST API's trials."""
    from companies.access import network_visible

    from .models import SeatAssignment, SeatState
    from .seats import available_to_reserve, pool_of
    from .subscriptions import effective_end_date

    lic = license_of(company)
    pool = pool_of(company)
    end, end_owner = effective_end_date(company)
    counts = dict.fromkeys(SeatState.values, 0)
    for state, n in _state_counts(company):
        counts[state] = n
    return {
        "license": lic,
        "pool": pool,
        "pool_owner": pool.owner,
        "available_to_reserve": available_to_reserve(company=company),
        "effective_end_date": end,
        "end_date_owner": end_owner,
        "seat_counts": counts,
        "trials": SeatAssignment.objects.filter(company=company, state=SeatState.TRIAL)
        .order_by("first_seen_at")[:200] if viewer is not None and network_visible(viewer, company) else [],
        "own_use": (own := selection_of(company=company, purpose=Purpose.OWN_USE)),
        "own_use_names": list(CatalogItem.objects.filter(key__in=own.effective).order_by("kind", "rank")
                              .values_list("name", flat=True)),
        "resell": selection_of(company=company, purpose=Purpose.RESELL) if company.type == CompanyType.PARTNER
        else None,
        "parent_resell": selection_of(company=company.parent, purpose=Purpose.RESELL).keys
        if company.parent_id else None,
    }


def _state_counts(company: Company):
    from django.db.models import Count

    from .models import SeatAssignment

    return (SeatAssignment.objects.filter(company=company).values_list("state")
            .annotate(n=Count("id")).order_by())
