"""What each company may use and resell (E1-E7). A selection is a set of catalogue items; the
protection model's included items come with it and are not stored separately."""

import datetime as dt
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from companies.audit import audit_record
from companies.models import Company, CompanyType, User

from .models import CatalogItem, Entitlement, ItemKind, License, MdrContact, ModelRule, Purpose

MDR = "mdr_foundations"
MDR_BUNDLES = {"secure_plus", "secure_extra"}  # E5
MDR_LEGACY_CUTOFF = dt.date(2024, 4, 1)  # E6


@dataclass
class Selection:
    """A company's selection for one purpose, with what the model adds."""

    keys: set[str] = field(default_factory=set)  # stored
    included: set[str] = field(default_factory=set)  # by the protection model
    excluded: set[str] = field(default_factory=set)  # by the protection model

    @property
    def effective(self) -> set[str]:
        return self.keys | self.included


def catalogue() -> dict[str, CatalogItem]:
    return {item.key: item for item in CatalogItem.objects.select_related("parent")}


def model_rules() -> dict[str, dict[str, set[str]]]:
    rules: dict[str, dict[str, set[str]]] = {}
    for model_key, item_key, relation in ModelRule.objects.values_list(
            "protection_model__key", "item__key", "relation"):
        rules.setdefault(model_key, {"includes": set(), "excludes": set()})[relation].add(item_key)
    return rules


def selection_of(*, company: Company, purpose: str) -> Selection:
    """The stored keys and, for own use, what the chosen model includes and excludes."""
    if company.parent_id is None and purpose == Purpose.RESELL:
        return Selection(keys=set(CatalogItem.objects.values_list("key", flat=True)))
    keys = set(Entitlement.objects.filter(company=company, purpose=purpose, disabled_at__isnull=True)
               .values_list("item__key", flat=True))
    selection = Selection(keys=keys)
    if purpose == Purpose.OWN_USE:
        models_chosen = keys & set(CatalogItem.objects.filter(kind=ItemKind.PROTECTION_MODEL)
                                   .values_list("key", flat=True))
        rules = model_rules()
        for model_key in models_chosen:
            selection.included |= rules.get(model_key, {}).get("includes", set())
            selection.excluded |= rules.get(model_key, {}).get("excludes", set())
    return selection


def effective_own_use(company: Company) -> set[str]:
    return selection_of(company=company, purpose=Purpose.OWN_USE).effective


def mdr_contact_complete(company: Company) -> bool:
    contact = MdrContact.objects.filter(company=company).first()
    return contact is not None and contact.is_complete


def _resell_of_parent(company: Company) -> set[str]:
    return selection_of(company=company.parent, purpose=Purpose.RESELL).keys


def validate_own_use(*, company: Company, keys: set[str]) -> tuple[set[str], set[str]]:
    """E1-E3, E5-E7 for an own-use selection. Returns (keys to store, included by the model)."""
    items = catalogue()
    unknown = sorted(keys - set(items))
    if unknown:
        raise ValidationError({"own_use": f"Unknown product, add-on or service: {', '.join(unknown)}."})
    by_kind: dict[str, set[str]] = {}
    for key in keys:
        by_kind.setdefault(items[key].kind, set()).add(key)
    product_types = by_kind.get(ItemKind.PRODUCT_TYPE, set())
    if len(product_types) != 1:
        raise ValidationError({"product_type": "Choose one product type: Endpoint Security or EDR."})
    product_type = next(iter(product_types))
    models_chosen = by_kind.get(ItemKind.PROTECTION_MODEL, set())
    extras = keys - product_types
    if product_type != "endpoint_security":
        if extras:
            raise ValidationError({"product_type": f"{items[product_type].name} takes no protection model, "
                                                   "add-ons or services (E1)."})
        return keys, set()
    if len(models_chosen) != 1:
        raise ValidationError({"protection_model": "Choose one protection model for Endpoint Security."})
    model_key = next(iter(models_chosen))
    rules = model_rules().get(model_key, {"includes": set(), "excludes": set()})
    excluded = keys & rules["excludes"]
    if excluded:
        names = ", ".join(sorted(items[k].name for k in excluded))
        raise ValidationError({"addons": f"{items[model_key].name} does not allow {names}."})
    stored = keys - rules["includes"]  # included items come with the model
    effective = stored | rules["includes"]
    sensors = by_kind.get(ItemKind.XDR_SENSOR, set())
    if sensors and "xdr" not in effective:
        raise ValidationError({"xdr_sensors": "XDR sensor categories need the XDR add-on."})
    tiers = by_kind.get(ItemKind.RETENTION_TIER, set())
    if "data_retention" in effective and len(tiers) != 1:
        raise ValidationError({"retention_tier": "Choose one Data Retention tier."})
    if tiers and "data_retention" not in effective:
        raise ValidationError({"retention_tier": "A Data Retention tier needs the Data Retention add-on."})
    if company.parent_id is not None:
        allowed = _resell_of_parent(company)
        missing = sorted(k for k in stored if k not in allowed)
        if missing:
            names = ", ".join(items[k].name for k in missing)
            raise ValidationError({"own_use": f"{company.parent.name} does not resell {names} (E3)."})
        if model_key in MDR_BUNDLES and company.parent.parent_id is not None \
                and not mdr_contact_complete(company.parent):
            raise ValidationError({"protection_model": (
                f"{items[model_key].name} can be resold only by a partner whose MDR contact details are "
                f"complete: {company.parent.name} has to fill them in on its My Company page (E5).")})
    if MDR in effective:
        _check_mdr_own_use(company)
    return stored, rules["includes"]


def _check_mdr_own_use(company: Company) -> None:
    """E6: every requirement for MDR Foundations for own use, each with its own message."""
    if company.parent is None:
        problems = [] if company.type == CompanyType.CUSTOMER else ["MDR Foundations for own use is for customer "
                                                                    "companies."]
        raise ValidationError({"services": problems or ["MDR Foundations needs a partner."]})
    problems = mdr_own_use_problems(company, company.parent)
    if problems:
        raise ValidationError({"services": problems})


def mdr_own_use_problems(company: Company, parent: Company) -> list[str]:
    """E6 for `company` under its direct partner `parent` (its partner now, or the one a move would give
    it): what is missing, one message each. The platform as direct partner asks for nothing of itself."""
    problems = []
    if company.type != CompanyType.CUSTOMER:
        problems.append("MDR Foundations for own use is for customer companies.")
    if parent.parent_id is not None and MDR not in selection_of(company=parent, purpose=Purpose.RESELL).keys:
        problems.append(f"{parent.name} does not resell MDR Foundations.")
    if not company.partner_can_assist:
        problems.append(f"{company.name} must let its partner assist with security management.")
    if parent.parent_id is not None and not parent.partner_can_assist:
        problems.append(f"{parent.name} must let its own partner assist with security management.")
    if parent.parent_id is not None and not mdr_contact_complete(parent):
        legacy = License.objects.filter(company=parent, mdr_onboarding_started_on__lt=MDR_LEGACY_CUTOFF).exists()
        if not legacy:
            problems.append(f"{parent.name} has to complete its MDR contact details (or have started MDR "
                            "onboarding before April 2024).")
    return problems


def _mdr_keys() -> set[str]:
    """The own-use keys that bring MDR Foundations: the service itself and the models including it."""
    return {MDR} | set(ModelRule.objects.filter(item__key=MDR, relation=ModelRule.Relation.INCLUDES)
                       .values_list("protection_model__key", flat=True))


def validate_resell(*, company: Company, keys: set[str]) -> set[str]:
    """E3-E5 for a reselling selection."""
    if company.type != CompanyType.PARTNER:
        raise ValidationError({"resell": "Only partners resell products (E4)."})
    items = catalogue()
    unknown = sorted(keys - set(items))
    if unknown:
        raise ValidationError({"resell": f"Unknown product, add-on or service: {', '.join(unknown)}."})
    if company.parent_id is not None:
        allowed = _resell_of_parent(company)
        missing = sorted(k for k in keys if k not in allowed)
        if missing:
            names = ", ".join(items[k].name for k in missing)
            raise ValidationError({"resell": f"{company.parent.name} does not resell {names} (E3)."})
    bundles = keys & MDR_BUNDLES
    if bundles and not mdr_contact_complete(company):
        names = " and ".join(sorted(items[k].name for k in bundles))
        raise ValidationError({"resell": (
            f"{names} can be resold only by a partner whose MDR contact details are complete: fill in "
            f"{company.name}'s MDR contact details first (E5).")})
    return keys


def _children_using(company: Company, removed: set[str]) -> list[str]:
    """E3: children whose own-use or reselling selection uses an item being removed."""
    if not removed:
        return []
    rows = (Entitlement.objects.filter(company__parent=company, item__key__in=removed, disabled_at__isnull=True)
            .values_list("company__name", "item__name").order_by("company__name", "item__name"))
    # a child's model brings its included items: removing the model is caught above, since the
    # model itself is stored in the child's selection
    return [f"{child} uses {item}" for child, item in rows]


@transaction.atomic
def entitlements_set(*, actor: User | None, company: Company, purpose: str, keys: set[str]) -> Selection:
    """Replace a company's selection for one purpose, after every check."""
    keys = set(keys)
    if purpose == Purpose.OWN_USE:
        stored, _included = validate_own_use(company=company, keys=keys)
    elif purpose == Purpose.RESELL:
        stored = validate_resell(company=company, keys=keys)
    else:
        raise ValidationError({"purpose": "Choose own use or reselling."})
    current = selection_of(company=company, purpose=purpose).keys
    if purpose == Purpose.RESELL:
        users = _children_using(company, current - stored)
        if users:
            raise ValidationError({"resell": [f"Cannot stop reselling while {u}." for u in users]})
    items = catalogue()
    now = timezone.now()
    Entitlement.objects.filter(company=company, purpose=purpose, disabled_at__isnull=True).exclude(
        item__key__in=stored).update(disabled_at=now)
    Entitlement.objects.bulk_create(
        [Entitlement(company=company, purpose=purpose, item=items[k], enabled_at=now) for k in stored - current])
    if stored != current:
        audit_record(actor=actor, company=company, action=f"entitlements.{purpose}", obj=company,
                     before={"items": sorted(current)}, after={"items": sorted(stored)})
    return selection_of(company=company, purpose=purpose)


def entitlement_move_check(company: Company, new_parent: Company) -> str | None:
    """H5: the new partner must resell everything the company uses or resells."""
    new_resell = selection_of(company=new_parent, purpose=Purpose.RESELL).keys
    used = set(Entitlement.objects.filter(company=company, disabled_at__isnull=True)
               .values_list("item__key", flat=True))
    missing = sorted(used - new_resell)
    if not missing:
        return None
    names = ", ".join(CatalogItem.objects.filter(key__in=missing).order_by("rank").values_list("name", flat=True))
    return f"{new_parent.name} does not resell {names}, which {company.name} uses."


def entitlement_mdr_move_check(company: Company, new_parent: Company) -> str | None:
    """H5/E6 (U10): a company using MDR Foundations for own use moves only under a partner with which E6
    still holds (resells MDR, assist on, complete MDR contact details or legacy onboarding). E6 looks at a
    company's direct partner only, and a move changes only the moved company's: the companies below it
    keep theirs, so only the moved company is checked."""
    if not Entitlement.objects.filter(company=company, purpose=Purpose.OWN_USE, disabled_at__isnull=True,
                                      item__key__in=_mdr_keys()).exists():
        return None
    problems = mdr_own_use_problems(company, new_parent)
    if not problems:
        return None
    return (f"{company.name} uses MDR Foundations, which it cannot keep under {new_parent.name} (E6): "
            + " ".join(problems))


def entitlement_mdr_assist_check(company: Company, on: bool) -> str | None:
    """C3/E6: assist cannot be turned off while MDR Foundations for own use needs it: the company's own,
    or that of a customer directly under it (E6 wants both the customer and its direct partner to have
    assist on). Registered in companies.services.ASSIST_CHECKS."""
    if on:
        return None
    users = list(Entitlement.objects.filter(Q(company=company) | Q(company__parent=company),
                                            purpose=Purpose.OWN_USE, disabled_at__isnull=True,
                                            item__key__in=_mdr_keys())
                 .values_list("company__name", flat=True).distinct().order_by("company__name"))
    if not users:
        return None
    return (f"Assist cannot be turned off for {company.name} while {', '.join(users)} "
            f"{'uses' if len(users) == 1 else 'use'} MDR Foundations: it needs assist on for the customer and "
            "its partner (E6). Remove MDR Foundations first.")


@transaction.atomic
def mdr_contact_set(*, actor: User | None, company: Company, **fields) -> MdrContact:
    if company.type != CompanyType.PARTNER:
        raise ValidationError({"mdr_contact": "MDR contact details belong to partners."})
    unknown = set(fields) - set(MdrContact.REQUIRED)
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "Unknown field."))
    contact, _ = MdrContact.objects.select_for_update().get_or_create(company=company)
    before = {f: getattr(contact, f) for f in MdrContact.REQUIRED}
    errors = {}
    from django.core.validators import validate_email

    for name, value in fields.items():
        value = (value or "").strip()
        if value and name.endswith("_email"):
            try:
                validate_email(value)
            except ValidationError:
                errors[name] = "Enter a valid email address."
        setattr(contact, name, value)
    if errors:
        raise ValidationError(errors)
    contact.save()
    audit_record(actor=actor, company=company, action="mdr_contact.update", obj=contact, before=before,
                 after={f: getattr(contact, f) for f in MdrContact.REQUIRED})
    return contact


def own_use_during(*, company_ids: list[int], start, end) -> dict[int, dict[str, list[tuple]]]:
    """Own-use items enabled at any time in [start, end), per company: {key: [(enabled_at,
    disabled_at or None), ...]}, with what each stored protection model includes (U13 and friends)."""
    rows = (Entitlement.objects.filter(company_id__in=company_ids, purpose=Purpose.OWN_USE, enabled_at__lt=end)
            .filter(models_q_active_since(start)).values_list("company_id", "item__key", "enabled_at", "disabled_at"))
    rules = model_rules()
    result: dict[int, dict[str, list[tuple]]] = {}
    for company_id, key, enabled, disabled in rows:
        per_company = result.setdefault(company_id, {})
        per_company.setdefault(key, []).append((enabled, disabled))
        for included in rules.get(key, {}).get("includes", set()):
            per_company.setdefault(included, []).append((enabled, disabled))
    return result


def models_q_active_since(start):
    from django.db.models import Q

    return Q(disabled_at__isnull=True) | Q(disabled_at__gt=start)
