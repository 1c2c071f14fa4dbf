"""companies: createCompany, getCompanyDetails, updateCompanyDetails, findCompaniesByName,
suspendCompany, activateCompany, deleteCompany. The same services and access helpers as
companies/api.py (REST)."""

import re

from django.core.exceptions import ValidationError

from companies.access import access_managed_company
from companies.models import CompanyStatus
from companies.selectors import access_company, company_list
from companies.services import (
    PrimaryAccount,
    company_delete,
    company_set_assist,
    company_set_status,
    company_set_two_factor,
    company_update,
)
from licensing.services import company_onboard

from ..fields import COMPANY_TYPES, INDUSTRIES, company_details, company_id
from ..jsonrpc import Params, RpcContext, ascii_int, invalid_param, rpc_method, service_errors
from .subscription import license_changes

# service field -> the original's parameter, for -32602 details
COMPANY_PARAMS = {
    "name": "name", "type": "type", "country": "country", "field_of_activity": "industry", "address": "address",
    "phone": "phone", "partner_can_assist": "canBeManagedByAbove", "parent": "parentId",
    "primary_account": "accountEmail", "email": "accountEmail", "full_name": "accountFullName",
    "timezone": "accountTimezone", "language": "accountLanguage", "manages_security": "managesSecurity",
    "reserved_seats": "licenseSubscription.reservedSlots", "end_date": "licenseSubscription.endSubscription",
    "auto_renew": "licenseSubscription.autoRenewPeriod", "renew_months": "licenseSubscription.autoRenewPeriod",
    "minimum_usage": "licenseSubscription.minimumUsage", "own_use": "licenseSubscription.ownUse",
    "product_type": "licenseSubscription.ownUse", "protection_model": "licenseSubscription.ownUse",
    "addons": "licenseSubscription.ownUse", "resell": "licenseSubscription.resell",
}
DETAIL_PARAMS = ("name", "address", "country", "phone", "industry")


def _industry(params: Params) -> str | None:
    if "industry" not in params or params.raw["industry"] is None:
        return None
    value = params.raw["industry"]
    code = ascii_int(value) if isinstance(value, str) else params.integer("industry")
    if code is None:
        return value  # our own field-of-activity key; the service judges it
    if code == 0:
        return ""
    if code not in INDUSTRIES:
        raise invalid_param("industry", f"{code} is not an industry code GZ Console knows (docs/jsonrpc-api.md).")
    return INDUSTRIES[code]


def _details(params: Params) -> dict:
    changes = {}
    for name in ("name", "address", "country", "phone"):
        value = params.string(name)
        if value is not None:
            changes[name] = value
    industry = _industry(params)
    if industry is not None:
        changes["field_of_activity"] = industry
    return changes


@rpc_method("companies", "createCompany")
def create_company(ctx: RpcContext, params: dict) -> str:
    p = Params(params, allowed=("type", "name", "parentId", "address", "country", "phone", "industry",
                                "canBeManagedByAbove", "enforce2FA", "accountEmail", "accountFullName",
                                "accountTimezone", "accountLanguage", "licenseSubscription", "managesSecurity"))
    type_code = p.integer("type", required=True)
    if type_code not in COMPANY_TYPES:
        raise invalid_param("type", "0 for a partner, 1 for a customer.")
    name = p.string("name", required=True, max_length=200)
    details = {k: v for k, v in _details(p).items() if k != "name"}
    parent_id = p.id("parentId")
    # under the key's own company, or under a partner it manages
    parent = ctx.company if parent_id in (None, ctx.company.pk) else access_managed_company(ctx.actor, parent_id)
    email = p.string("accountEmail")
    primary = None
    if email is not None:
        primary = PrimaryAccount(full_name=p.string("accountFullName", default="") or "", email=email,
                                 timezone=p.string("accountTimezone", default="UTC") or "UTC",
                                 language=(p.string("accountLanguage", default="en") or "en").split("_")[0])
    licensing = license_changes(p.obj("licenseSubscription"), prefix="licenseSubscription.", creating=True)
    try:
        company = company_onboard(
            actor=None, parent=parent, name=name, type=COMPANY_TYPES[type_code], primary_account=primary,
            partner_can_assist=p.boolean("canBeManagedByAbove", default=True),
            enforce_two_factor=p.boolean("enforce2FA", default=False),
            manages_security=p.boolean("managesSecurity", default=True), **details, **licensing)
    except ValidationError as error:
        raise service_errors(error, COMPANY_PARAMS) from None
    return company_id(company)


@rpc_method("companies", "getCompanyDetails")
def get_company_details(ctx: RpcContext, params: dict) -> dict:
    p = Params(params, allowed=("companyId",))
    target = p.id("companyId")
    company = ctx.company if target is None else access_company(ctx.actor, target)
    return company_details(company, viewer=ctx.company)


@rpc_method("companies", "updateCompanyDetails")
def update_company_details(ctx: RpcContext, params: dict) -> None:
    p = Params(params, allowed=("companyId", "name", "address", "country", "phone", "industry",
                                "canBeManagedByAbove", "enforce2FA", "managesSecurity"))
    company = access_managed_company(ctx.actor, p.id("companyId", required=True))
    changes = _details(p)
    manages = p.boolean("managesSecurity")
    if manages is not None:
        changes["manages_security"] = manages
    assist = p.boolean("canBeManagedByAbove")
    enforce = p.boolean("enforce2FA")
    try:
        if changes:
            company = company_update(actor=None, company=company, **changes)
        if assist is not None and assist != company.partner_can_assist:
            if assist:
                # C4: only the company's own users can let its partner assist again; a key is not a user
                raise invalid_param("canBeManagedByAbove", "only the company's own users can turn this back on, "
                                                           "from My Company (C4).")
            company = company_set_assist(actor=None, company=company, on=False)
        if enforce is not None:
            company_set_two_factor(actor=None, company=company, enforce=enforce)
    except ValidationError as error:
        raise service_errors(error, COMPANY_PARAMS) from None
    return None


def _name_pattern(name_filter: str) -> str:
    """The original's filter: a name, with * matching any run of characters."""
    return "^" + ".*".join(re.escape(part) for part in name_filter.split("*")) + "$"


@rpc_method("companies", "findCompaniesByName")
def find_companies_by_name(ctx: RpcContext, params: dict) -> list[dict]:
    p = Params(params, allowed=("nameFilter",))
    name_filter = p.string("nameFilter", required=True, max_length=200).strip()
    if len(name_filter.replace("*", "")) < 3:
        raise invalid_param("nameFilter", "at least 3 characters besides '*'.")
    companies = (company_list(viewer=ctx.company).filter(name__iregex=_name_pattern(name_filter))
                 [:1000])
    return [company_details(company, viewer=ctx.company) for company in companies]


def _set_status(ctx: RpcContext, params: dict, status: str) -> None:
    p = Params(params, allowed=("companyId",))
    company = access_managed_company(ctx.actor, p.id("companyId", required=True))
    try:
        company_set_status(actor=None, company=company, status=status)
    except ValidationError as error:
        raise service_errors(error, {"status": "companyId"}) from None


@rpc_method("companies", "suspendCompany")
def suspend_company(ctx: RpcContext, params: dict) -> None:
    _set_status(ctx, params, CompanyStatus.SUSPENDED)


@rpc_method("companies", "activateCompany")
def activate_company(ctx: RpcContext, params: dict) -> None:
    _set_status(ctx, params, CompanyStatus.ACTIVE)


@rpc_method("companies", "deleteCompany")
def delete_company(ctx: RpcContext, params: dict) -> None:
    p = Params(params, allowed=("companyId",))
    company = access_managed_company(ctx.actor, p.id("companyId", required=True))
    try:
        company_delete(actor=None, company=company)
    except ValidationError as error:
        raise service_errors(error, {"company": "companyId"}) from None
