"""The original's licenseSubscription / setMonthlySubscription parameters, read into the keyword
arguments of licensing.services (license_update, company_onboard)."""

from typing import Any

from licensing.models import MAX_SEATS

from ..fields import ADDONS, PRODUCT_TYPES, PROTECTION_MODELS
from ..jsonrpc import date_param, invalid_param

MONTHLY_SUBSCRIPTION = 3  # the only subscription type under this model (S5)
SUBSCRIPTION_FIELDS = ("type", "reservedSlots", "removeReservedSlots", "endSubscription", "autoRenewPeriod",
                       "minimumUsage", "assignedProductType", "ownUse", "resell")


def _int(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_param(name, "must be an integer.")
    if value < minimum or (maximum is not None and value > maximum):
        raise invalid_param(name, f"must be from {minimum}" + (f" to {maximum}." if maximum else " up."))
    return value


def _names(name: str, value: Any) -> list[str]:
    """A list of names, or an object of name -> true/false (the original uses both shapes)."""
    if isinstance(value, dict):
        if not all(isinstance(v, bool) for v in value.values()):
            raise invalid_param(name, "values must be true or false.")
        return [k for k, v in value.items() if v]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise invalid_param(name, "a list of names, or an object of name: true/false.")


def _addon_keys(name: str, value: Any) -> set[str]:
    keys = set()
    for addon in _names(name, value):
        if addon not in ADDONS:
            raise invalid_param(name, f"unknown add-on or service {addon!r}; known: {', '.join(ADDONS)}.")
        keys.add(ADDONS[addon])
    return keys


def _product_type(name: str, value: Any) -> str:
    if isinstance(value, bool) or value not in PRODUCT_TYPES:
        raise invalid_param(name, "0 for Endpoint Security, 1 for EDR.")
    return PRODUCT_TYPES[value]


def _protection_model(name: str, value: Any) -> str:
    if value not in PROTECTION_MODELS:
        raise invalid_param(name, f"one of {', '.join(PROTECTION_MODELS)}.")
    return PROTECTION_MODELS[value]


def _own_use(prefix: str, value: Any, assigned: Any) -> set[str] | None:
    if value is None and assigned is None:
        return None
    own = value or {}
    if not isinstance(own, dict):
        raise invalid_param(f"{prefix}ownUse", "must be an object.")
    unknown = sorted(set(own) - {"productType", "protectionModel", "addons"})
    if unknown:
        raise invalid_param(f"{prefix}ownUse.{unknown[0]}", "unknown field; use productType, protectionModel, "
                                                              "addons.")
    product = own.get("productType", assigned)
    if product is None:
        raise invalid_param(f"{prefix}ownUse.productType", "required.")
    keys = {_product_type(f"{prefix}ownUse.productType", product)}
    if "protectionModel" in own:
        keys.add(_protection_model(f"{prefix}ownUse.protectionModel", own["protectionModel"]))
    elif keys == {"endpoint_security"}:
        keys.add("a_la_carte")  # the model with nothing bundled, when none is named
    if "addons" in own:
        keys |= _addon_keys(f"{prefix}ownUse.addons", own["addons"])
    return keys


def _resell(prefix: str, value: Any) -> set[str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_param(f"{prefix}resell", "must be an object.")
    unknown = sorted(set(value) - {"productTypes", "protectionModels", "addons"})
    if unknown:
        raise invalid_param(f"{prefix}resell.{unknown[0]}", "unknown field; use productTypes, protectionModels, "
                                                              "addons.")
    keys = set()
    products = value.get("productTypes", [])
    if not isinstance(products, list):
        raise invalid_param(f"{prefix}resell.productTypes", "must be a list.")
    keys |= {_product_type(f"{prefix}resell.productTypes", p) for p in products}
    models = value.get("protectionModels", [])
    if not isinstance(models, list):
        raise invalid_param(f"{prefix}resell.protectionModels", "must be a list.")
    keys |= {_protection_model(f"{prefix}resell.protectionModels", m) for m in models}
    if "addons" in value:
        keys |= _addon_keys(f"{prefix}resell.addons", value["addons"])
    return keys


def license_changes(raw: dict | None, *, prefix: str, creating: bool = False) -> dict:
    """Only the given parts: what is absent stays as it is (license_update's UNCHANGED)."""
    if raw is None:
        return {}
    def name(field: str) -> str:
        return f"{prefix}{field}"

    unknown = sorted(set(raw) - set(SUBSCRIPTION_FIELDS) - ({"companyId"} if not prefix else set()))
    if unknown:
        raise invalid_param(name(unknown[0]), f"unknown field; accepted: {', '.join(SUBSCRIPTION_FIELDS)}.")
    if "type" in raw and raw["type"] != MONTHLY_SUBSCRIPTION:
        raise invalid_param(name("type"), "GZ Console has monthly subscriptions only (3).")
    changes: dict[str, Any] = {}
    if raw.get("removeReservedSlots") is True:
        if raw.get("reservedSlots") is not None:
            raise invalid_param(name("removeReservedSlots"), "cannot be sent with reservedSlots.")
        changes["reserved_seats"] = None
    elif raw.get("removeReservedSlots") not in (None, False):
        raise invalid_param(name("removeReservedSlots"), "must be true or false.")
    if raw.get("reservedSlots") is not None:
        changes["reserved_seats"] = _int(name("reservedSlots"), raw["reservedSlots"], maximum=MAX_SEATS)
    if "endSubscription" in raw:
        changes["end_date"] = date_param(name("endSubscription"), raw["endSubscription"])
        if changes["end_date"] is None:
            changes["auto_renew"] = False
    if raw.get("autoRenewPeriod") is not None:
        months = _int(name("autoRenewPeriod"), raw["autoRenewPeriod"], maximum=120)
        changes["auto_renew"] = months > 0
        if months:
            changes["renew_months"] = months
    if "minimumUsage" in raw:
        minimum = raw["minimumUsage"]
        if isinstance(minimum, dict):  # the shape getMonthlyUsage answers with
            minimum = minimum.get("endpointMonthlyUsage")
        changes["minimum_usage"] = (None if minimum in (None, 0)
                                    else _int(name("minimumUsage"), minimum, maximum=MAX_SEATS))
    own = _own_use(prefix, raw.get("ownUse"), raw.get("assignedProductType"))
    if own is not None:
        changes["own_use"] = own
    resell = _resell(prefix, raw.get("resell"))
    if resell is not None:
        changes["resell"] = resell
    if creating and changes.get("end_date") is None:
        changes.pop("end_date", None)
    return changes
