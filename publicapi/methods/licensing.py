"""licensing: getLicenseInfo, setMonthlySubscription, getMonthlyUsage, getMonthlyUsagePerProductType.

Subscriptions are managed through licensing.services.license_update (the same service as the
Licensing page and the REST API); the usage figures are usage.selectors.usage_totals, the same
numbers as the Monthly License Usage report's company row (R7)."""

from django.core.exceptions import ValidationError

from companies.access import access_managed_company, in_subtree
from companies.models import ApiKeyScope, CompanyType
from companies.selectors import access_company
from licensing.models import CatalogItem, ItemKind
from licensing.services import license_update, licensing_summary
from usage.models import CompanyMonthUsage
from usage.selectors import NOT_ENABLED, usage_totals

from ..fields import (
    ADDON_NAMES,
    FIGURE_NAMES,
    MONTHLY_USAGE_FIELDS,
    PRODUCT_TYPE_CODES,
    PRODUCT_TYPES,
    PROTECTION_MODELS,
)
from ..jsonrpc import Params, RpcContext, rpc_method, service_errors
from .subscription import MONTHLY_SUBSCRIPTION, SUBSCRIPTION_FIELDS, license_changes

PROTECTION_MODEL_NAMES = {v: k for k, v in PROTECTION_MODELS.items()}
USAGE_SCOPES = (ApiKeyScope.LICENSING, ApiKeyScope.USAGE)
SUBSCRIPTION_PARAMS = {
    "reserved_seats": "reservedSlots", "end_date": "endSubscription", "auto_renew": "autoRenewPeriod",
    "renew_months": "autoRenewPeriod", "minimum_usage": "minimumUsage", "own_use": "ownUse",
    "product_type": "ownUse.productType", "protection_model": "ownUse.protectionModel", "addons": "ownUse.addons",
    "xdr_sensors": "ownUse.addons", "retention_tier": "ownUse.addons", "resell": "resell",
}
# getLicenseInfo "manage*" flags: the original's name -> the own-use item that grants it
MANAGE_FLAGS = {
    "manageExchange": "security_for_exchange", "manageEncryption": "full_disk_encryption",
    "manageRemoteEnginesScanning": "sve", "manageHyperDetect": "advanced_threat_security",
    "manageSandboxAnalyzer": "advanced_threat_security", "managePatchManagement": "patch_management",
    "manageEventCorrelator": "edr", "manageContainerProtection": "container_protection",
    "manageIntegrityMonitoring": "integrity_monitoring", "manageEmailSecurity": "email_security",
    "manageMdrFoundations": "mdr_foundations", "manageXdr": "xdr",
}


def _selection(keys: set[str], kinds: dict[str, str], *, resell: bool) -> dict:
    products = sorted(PRODUCT_TYPE_CODES[k] for k in keys if k in PRODUCT_TYPE_CODES)
    models = sorted(PROTECTION_MODEL_NAMES.get(k, k) for k in keys if kinds.get(k) == ItemKind.PROTECTION_MODEL)
    addons = sorted(ADDON_NAMES.get(k, k) for k in keys
                    if kinds.get(k) not in (ItemKind.PRODUCT_TYPE, ItemKind.PROTECTION_MODEL))
    if resell:
        return {"productTypes": products, "protectionModels": models, "addons": addons}
    return {"productType": products[0] if products else None, "protectionModel": models[0] if models else None,
            "addons": addons}


@rpc_method("licensing", "getLicenseInfo", scopes=(ApiKeyScope.LICENSING,))
def get_license_info(ctx: RpcContext, params: dict) -> dict:
    p = Params(params, allowed=("companyId", "returnAllProducts"))
    target = p.id("companyId")
    p.boolean("returnAllProducts")  # one product per company here: the answer is the same
    # C2/C3: subscriptions stay visible to reseller-only partners and without assist
    company = ctx.company if target is None else access_company(ctx.actor, target)
    summary = licensing_summary(company=company)
    lic, pool = summary["license"], summary["pool"]
    counts = summary["seat_counts"]
    own_pool = pool.owner_id == company.pk
    effective = summary["own_use"].effective
    kinds = dict(CatalogItem.objects.values_list("key", "kind"))
    info = {
        "subscriptionType": MONTHLY_SUBSCRIPTION,
        "isAddon": False,
        "expiryDate": summary["effective_end_date"].isoformat() if summary["effective_end_date"] else None,
        "usedSlots": pool.used if own_pool else counts["licensed"],
        "totalSlots": lic.reserved_seats,
        "reservedSlots": lic.reserved_seats,
        "licenseKey": company.license_key,
        "endSubscription": lic.end_date.isoformat() if lic.end_date else None,
        "autoRenewPeriod": lic.renew_months if lic.auto_renew else 0,
        "minimumUsage": lic.minimum_usage,
        **{flag: item in effective for flag, item in MANAGE_FLAGS.items()},
        "ownUse": _selection(effective, kinds, resell=False),
        # GZ Console additions
        # C6: what the parent's pool has free, only where the parent is in the caller's view
        "availableToReserve": summary["available_to_reserve"] if company.pk != ctx.company.pk else None,
        "seats": counts,
        # C6: a pool owned above the caller (its partner, the platform) is not named, as in REST
        "poolOwnerId": str(pool.owner_id) if in_subtree(ctx.company, summary["pool_owner"]) else None,
    }
    if company.type == CompanyType.PARTNER and summary["resell"] is not None:
        info["resell"] = _selection(summary["resell"].keys, kinds, resell=True)
    return info


@rpc_method("licensing", "setMonthlySubscription", scopes=(ApiKeyScope.LICENSING,))
def set_monthly_subscription(ctx: RpcContext, params: dict) -> None:
    p = Params(params, allowed=("companyId", *SUBSCRIPTION_FIELDS))
    # administrators of a partner above the company manage its subscription (C2, C3 keep this)
    company = access_managed_company(ctx.actor, p.id("companyId", required=True))
    changes = license_changes({k: v for k, v in params.items() if k != "companyId"}, prefix="")
    try:
        license_update(actor=None, company=company, **changes)
    except ValidationError as error:
        raise service_errors(error, SUBSCRIPTION_PARAMS) from None


def _usage_object(totals: dict) -> dict:
    figures = totals["figures"]
    usage = {name: (0 if figures[figure] == NOT_ENABLED else figures[figure])
             for name, figure in MONTHLY_USAGE_FIELDS.items()}
    # U13: the report's "Not enabled"; over JSON the number stays a number and this says why it is 0
    usage["notEnabled"] = sorted(FIGURE_NAMES[f] for f, v in figures.items() if v == NOT_ENABLED and f in FIGURE_NAMES)
    usage["lateAdjustments"] = {FIGURE_NAMES.get(k, k): v for k, v in sorted(totals["late_adjustments"].items())}
    return usage


def _usage_target(ctx: RpcContext, params: dict):
    """companyId (the key's own company when absent; C6: in its subtree) and targetMonth."""
    p = Params(params, allowed=("companyId", "targetMonth"))
    target = p.id("companyId")
    month = p.month("targetMonth")
    return (ctx.company if target is None else access_company(ctx.actor, target)), month


@rpc_method("licensing", "getMonthlyUsage", scopes=USAGE_SCOPES)
def get_monthly_usage(ctx: RpcContext, params: dict) -> dict:
    company, month = _usage_target(ctx, params)
    # the report's company row: the company and its subtree (U13), every product type
    usage = _usage_object(usage_totals(company=company, month=month, viewer=ctx.company))
    minimum = (CompanyMonthUsage.objects.filter(company=company, month=month)
               .values_list("minimum_usage", flat=True).first())
    usage["minimumUsage"] = {"endpointMonthlyUsage": minimum or 0}
    return usage


@rpc_method("licensing", "getMonthlyUsagePerProductType", scopes=USAGE_SCOPES)
def get_monthly_usage_per_product_type(ctx: RpcContext, params: dict) -> dict:
    company, month = _usage_target(ctx, params)
    usages = []
    for code, product_type in sorted(PRODUCT_TYPES.items()):
        usage = _usage_object(usage_totals(company=company, month=month, product_type=product_type,
                                                     viewer=ctx.company))
        usages.append({"productType": code, **usage})
    return {"usages": usages}
