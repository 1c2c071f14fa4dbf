"""Subscriptions (S1-S5) and minimum usage (L6), and the daily licensing run that applies them."""

import calendar
import datetime as dt
import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from companies.audit import audit_record
from companies.models import Company, CompanyStatus, User

from .models import MAX_SEATS, License
from .seats import license_of, seats_expire_trials, seats_promote_all

logger = logging.getLogger(__name__)


def add_months(day: dt.date, months: int) -> dt.date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _is_month_end(day: dt.date) -> bool:
    return day.day == calendar.monthrange(day.year, day.month)[1]


def renewal_end_date(end: dt.date, months: int) -> dt.date:
    """S3: the end date one renewal later. Plain month arithmetic clamps 31 January + 1 month to
    28 February and then drifts to the 28th for good; a subscription that ends on the last day of
    a month keeps ending on the last day of a month instead (months are calendar months and
    billing is monthly), so 2027-01-31 renews to 2027-02-28 and then 2027-03-31."""
    renewed = add_months(end, months)
    if _is_month_end(end):
        return renewed.replace(day=calendar.monthrange(renewed.year, renewed.month)[1])
    return renewed


def _chain(company: Company) -> list[License]:
    """Licenses of the company and its ancestors, nearest first (one query)."""
    ids = [int(p) for p in company.lineage.strip("/").split("/")]
    by_company = {lic.company_id: lic for lic in License.objects.filter(company_id__in=ids).select_related("company")}
    return [by_company[i] for i in reversed(ids) if i in by_company]


def effective_end_dates(companies: list[Company]) -> dict[int, dt.date | None]:
    """S1 for many companies at once (one query): each one's own end date, else its nearest
    ancestor's, else None."""
    chains = {c.pk: [int(p) for p in c.lineage.strip("/").split("/") if p] or [c.pk] for c in companies}
    ids = {i for chain in chains.values() for i in chain}
    dated = License.objects.filter(company_id__in=ids, end_date__isnull=False)
    ends = dict(dated.values_list("company_id", "end_date"))
    return {pk: next((ends[i] for i in reversed(chain) if i in ends), None) for pk, chain in chains.items()}


def effective_end_date(company: Company) -> tuple[dt.date | None, Company | None]:
    """S1: the company's own end date, else its nearest ancestor's; (None, None) for no end date.
    Also returns whose end date it is."""
    for lic in _chain(company):
        if lic.end_date is not None:
            return lic.end_date, lic.company
    return None, None


def _binding_end_date(company: Company) -> tuple[dt.date | None, Company | None, bool]:
    """S2: the effective end date a child of `company` is held to, whose it is, and whether it
    renews automatically (no end date counts as renewing: it never ends)."""
    end, owner = effective_end_date(company)
    return end, owner, end is None or license_of(owner).auto_renew


def parent_auto_renews(company: Company) -> bool:
    """S2: the parent whose effective end date binds the child renews automatically."""
    if company.parent_id is None:
        return True
    end, owner = effective_end_date(company.parent)
    return end is None or license_of(owner).auto_renew


def _children_beyond(*, company: Company, end_date: dt.date | None,
                     auto_renew: bool) -> tuple[dt.date | None, list[tuple[str, dt.date]]]:
    """S2 seen from the parent: the end date the companies below `company` would inherit through
    it once it has `end_date` and `auto_renew` (None when that date renews or there is none),
    and those of them whose own end date is later."""
    if end_date is not None:
        binding, renews = end_date, auto_renew
    elif company.parent_id is not None:
        binding, _owner, renews = _binding_end_date(company.parent)
    else:
        return None, []
    if binding is None or renews:
        return None, []
    return binding, _dated_beyond(company=company, binding=binding, include_self=False)


def _dated_beyond(*, company: Company, binding: dt.date, include_self: bool) -> list[tuple[str, dt.date]]:
    """(name, end date) of the nearest companies with an end date in `company`'s subtree (itself
    too when `include_self`) whose date is later than `binding`. Only the nearest dated companies
    count: deeper ones are held to those, and were checked against them when their dates were set."""
    dated = License.objects.filter(company__lineage__startswith=company.lineage, end_date__isnull=False)
    if not include_self:
        dated = dated.exclude(company=company)
    dated = list(dated.order_by("company__lineage").values_list("company__lineage", "company__name", "end_date"))
    lineages = [lineage for lineage, _name, _end in dated]
    return [(name, end) for lineage, name, end in dated
            if end > binding and not any(o != lineage and lineage.startswith(o) for o in lineages)]


def subscription_move_check(company: Company, new_parent: Company) -> str | None:
    """H5 with S2: a company (or a company below it) whose own end date is later than the new
    partner's effective end date may move there only when that date renews automatically."""
    binding, owner, renews = _binding_end_date(new_parent)
    if binding is None or renews:
        return None
    beyond = _dated_beyond(company=company, binding=binding, include_self=True)
    if not beyond:
        return None
    listed = ", ".join(f"{name} ({end.isoformat()})" for name, end in beyond[:5])
    more = f" and {len(beyond) - 5} more" if len(beyond) > 5 else ""
    inherited = f" (inherited from {owner.name})" if owner.pk != new_parent.pk else ""
    return (f"{new_parent.name} ends on {binding.isoformat()}{inherited} without auto-renewal, before "
            f"{listed}{more} (S2).")


@transaction.atomic
def subscription_set(*, actor: User | None, company: Company, end_date: dt.date | None, auto_renew: bool,
                     renew_months: int = 12, minimum_usage: int | None = None) -> License:
    lic = License.objects.select_for_update().get_or_create(company=company)[0]
    before = {"end_date": str(lic.end_date) if lic.end_date else None, "auto_renew": lic.auto_renew,
              "renew_months": lic.renew_months, "minimum_usage": lic.minimum_usage}
    errors = {}
    if not isinstance(renew_months, int) or not 1 <= renew_months <= 120:
        errors["renew_months"] = "Renew for 1 to 120 months."
    if end_date is not None and company.parent_id is None:
        # S1: the platform runs the installation; it cannot be suspended (H4), so a date there
        # would only suspend everything below it while the platform itself ran on.
        errors["end_date"] = "The platform has no subscription end date."
    if end_date is not None and company.parent_id is not None:
        parent_end, owner, renews = _binding_end_date(company.parent)
        if parent_end is not None and end_date > parent_end and not renews:
            inherited = f" (inherited from {owner.name})" if owner.pk != company.parent_id else ""
            errors["end_date"] = (f"The end date cannot be later than {parent_end.isoformat()}, the end date of "
                                  f"{company.parent.name}{inherited}, which does not renew automatically (S2).")
    if auto_renew and end_date is None:
        errors["auto_renew"] = "Auto-renewal needs an end date."
    if not errors and (end_date != lic.end_date or auto_renew != lic.auto_renew):
        # S2 also binds when the parent changes: ending earlier, or no longer renewing, must not
        # leave a company below with a later end date of its own.
        binding, beyond = _children_beyond(company=company, end_date=end_date, auto_renew=auto_renew)
        if beyond:
            listed = ", ".join(f"{name} ({end.isoformat()})" for name, end in beyond[:5])
            more = f" and {len(beyond) - 5} more" if len(beyond) > 5 else ""
            field = "end_date" if end_date != lic.end_date else "auto_renew"
            errors[field] = (f"{company.name} would end on {binding.isoformat()} without auto-renewal, before "
                             f"companies below it: {listed}{more}. Change their end dates first, or keep "
                             "auto-renewal on (S2).")
    if minimum_usage is not None:
        if minimum_usage < 0:
            errors["minimum_usage"] = "The minimum usage cannot be negative."
        elif minimum_usage > MAX_SEATS:
            errors["minimum_usage"] = f"Minimum usage: at most {MAX_SEATS}."
        elif lic.reserved_seats is None:
            errors["minimum_usage"] = "Minimum usage needs reserved seats: it consumes them (L6)."
        elif minimum_usage > lic.reserved_seats:
            errors["minimum_usage"] = (f"The minimum usage cannot exceed the {lic.reserved_seats} reserved "
                                       "seats (L6).")
    if errors:
        raise ValidationError(errors)
    lic_end_before = lic.end_date
    lic.end_date, lic.auto_renew, lic.renew_months, lic.minimum_usage = (end_date, auto_renew, renew_months,
                                                                          minimum_usage)
    lic.save(update_fields=["end_date", "auto_renew", "renew_months", "minimum_usage"])
    from usage.rollups import usage_terms_refresh

    usage_terms_refresh(company=company, subtree=end_date != lic_end_before)  # S1: inherited below
    audit_record(actor=actor, company=company, action="license.subscription", obj=lic, before=before,
                 after={"end_date": str(end_date) if end_date else None, "auto_renew": auto_renew,
                        "renew_months": renew_months, "minimum_usage": minimum_usage})
    return lic


def subscriptions_renew(*, today: dt.date) -> int:
    """S3: end dates reached with auto-renewal move on by their months (as often as needed when the
    job ran late). Idempotent: a renewed end date is in the future. Parents go first, so a child
    is held to its parent's end date as renewed today."""
    due = (License.objects.filter(auto_renew=True, end_date__lte=today)
           .order_by("company__depth", "company_id").values_list("pk", flat=True))
    return sum(_subscription_renew_one(license_id=pk, today=today) for pk in list(due))


@transaction.atomic
def _subscription_renew_one(*, license_id: int, today: dt.date) -> bool:
    # Locked and checked again: a second run at the same time (a late job meeting the on-time
    # one) finds the date already moved and does nothing, instead of renewing twice.
    lic = License.objects.select_for_update().select_related("company").get(pk=license_id)
    if not (lic.auto_renew and lic.end_date is not None and lic.end_date <= today) or lic.renew_months < 1:
        return False
    before = lic.end_date
    end = before
    while end <= today:
        end = renewal_end_date(end, lic.renew_months)
    after = {"end_date": None}
    company = lic.company
    if company.parent_id is not None:
        # S2: a child may outlast its parent only when the parent renews; renewing past a parent
        # that does not would break that, so the renewal stops at the parent's end date (and the
        # child is suspended with its parent when that date passes).
        parent_end, owner, renews = _binding_end_date(company.parent)
        if parent_end is not None and not renews and end > parent_end:
            end = max(before, parent_end)
            after["limited_by"] = f"{owner.name} ends {parent_end.isoformat()} without auto-renewal (S2)"
    if end == before:
        return False
    lic.end_date = end
    lic.save(update_fields=["end_date"])
    from usage.rollups import usage_terms_refresh

    usage_terms_refresh(company=company, subtree=True)  # S1, S3: the open month's rows show the new end date
    after["end_date"] = str(end)
    audit_record(actor=None, company=company, action="license.renew", obj=lic,
                 before={"end_date": str(before)}, after=after)
    return True


def subscriptions_suspend_expired(*, today: dt.date) -> int:
    """S4: companies whose effective end date has passed are suspended (H4). Runs after
    subscriptions_renew: an end date still in the past then is one that was not renewed (no
    auto-renewal, or a renewal held to a parent that ends). Already suspended companies are left
    as they are; the platform cannot be suspended and carries no end date."""
    lapsed = sorted(set(License.objects.filter(end_date__lt=today, company__parent__isnull=False)
                        .values_list("company__lineage", flat=True)))
    # the outermost lapsed companies: a subtree scanned once covers the lapsed ones inside it
    roots = [lineage for lineage in lapsed if not any(lineage != o and lineage.startswith(o) for o in lapsed)]
    suspended = 0
    for root in roots:
        candidates = (Company.objects.filter(lineage__startswith=root, status=CompanyStatus.ACTIVE,
                                             parent__isnull=False).order_by("depth", "id"))
        for company in candidates:
            end, _owner = effective_end_date(company)
            if end is not None and end < today:
                suspended += _company_suspend_lapsed(company=company, end=end)
    return suspended


@transaction.atomic
def _company_suspend_lapsed(*, company: Company, end: dt.date) -> int:
    from companies.services import company_set_status

    # Locked first so a concurrent run neither suspends twice nor counts a suspension it did
    # not make; the status hooks then expire the company's endpoints (H4, T5).
    status = Company.objects.select_for_update().filter(pk=company.pk).values_list("status", flat=True).get()
    if status != CompanyStatus.ACTIVE:
        return 0
    company_set_status(actor=None, company=company, status=CompanyStatus.SUSPENDED,
                       reason=f"subscription ended {end.isoformat()}")
    return 1


def licensing_daily(*, today: dt.date | None = None) -> dict[str, int]:
    """The daily licensing run (task `licensing.daily`, command `licensing_daily`): renewals (S3),
    then suspensions (S4, which sees the renewed dates), then trial expiry (L4, T5), then trials
    taking the seats that are free (L4). Each step commits row by row and is idempotent, so a
    run that fails half-way, runs twice, or runs days late is simply run again. `today` defaults
    to the date in UTC (a month is a calendar month in UTC)."""
    today = today or timezone.now().astimezone(dt.UTC).date()
    renewed = subscriptions_renew(today=today)
    suspended = subscriptions_suspend_expired(today=today)
    trials_expired = seats_expire_trials(today=today)
    trials_promoted = seats_promote_all()
    counts = {"renewed": renewed, "suspended": suspended, "trials_expired": trials_expired,
              "trials_promoted": trials_promoted}
    # the plain formatter drops `extra`, so the figures are in the message too
    logger.info("licensing daily run for %s: %s", today.isoformat(), counts,
                extra={"today": today.isoformat(), **counts})
    return counts
