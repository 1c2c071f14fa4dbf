"""reports: createReport (type 13, Monthly License Usage, instant), getReportsList,
getDownloadLinks. The report services (reports.builder, reports.delivery) build, keep and send
reports for a person: a key acts through the company administrator who created it (see
docs/decisions.md), so report history, recipients (R5) and visibility (C2, C3, C6) are exactly
the console's for that administrator."""

import math

from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse

from companies.models import CompanyStatus, Role, User
from reports.builder import ReportOptions, report_access, report_build
from reports.delivery import (
    access_report_file,
    report_file_generate,
    report_history,
    report_parameters_check,
    report_recipients_eligible,
    report_send_now,
)
from reports.models import ReportSource

from ..fields import PRODUCT_TYPES, company_id
from ..jsonrpc import SERVER_ERROR, Params, RpcContext, RpcError, invalid_param, rpc_method, service_errors

MONTHLY_LICENSE_USAGE = 13
INSTANT = 1
REPORT_PARAMS = {"month": "options.targetMonth", "product_type": "options.productType",
                 "recipients": "emailList", "kind": "type"}


def key_user(ctx: RpcContext) -> User:
    """The administrator who created the key, still active in the key's company."""
    user = ctx.api_key.created_by
    if (user is None or not user.is_active or user.company_id != ctx.api_key.company_id
            or user.role != Role.COMPANY_ADMIN or user.company.status != CompanyStatus.ACTIVE):
        raise RpcError(SERVER_ERROR, "Reports over the API act for the administrator who created the key, and "
                                     "that account is no longer an active administrator: create a new key.")
    return user


def _options(p: Params) -> tuple[str | None, ReportOptions]:
    raw = p.obj("options") or {}
    unknown = sorted(set(raw) - {"targetMonth", "productType", "onlyDirectCompanies", "onlyEndpointDetails"})
    if unknown:
        raise invalid_param(f"options.{unknown[0]}", "unknown option; accepted: targetMonth, productType, "
                                                     "onlyDirectCompanies, onlyEndpointDetails.")
    month = Params({"options.targetMonth": raw.get("targetMonth")},
                   allowed=("options.targetMonth",)).month("options.targetMonth")
    product = raw.get("productType")
    if product is not None and (isinstance(product, bool) or product not in PRODUCT_TYPES):
        raise invalid_param("options.productType", "0 for Endpoint Security, 1 for EDR.")
    for flag in ("onlyDirectCompanies", "onlyEndpointDetails"):
        if not isinstance(raw.get(flag, False), bool):
            raise invalid_param(f"options.{flag}", "must be true or false.")
    return month, ReportOptions(product_type=PRODUCT_TYPES.get(product) if product is not None else None,
                                only_endpoint_details=raw.get("onlyEndpointDetails", False),
                                only_direct=raw.get("onlyDirectCompanies", False))


@rpc_method("reports", "createReport")
def create_report(ctx: RpcContext, params: dict) -> str:
    p = Params(params, allowed=("name", "type", "targetIds", "scheduledInfo", "options", "emailList"))
    p.string("name", max_length=200)
    if p.integer("type", required=True) != MONTHLY_LICENSE_USAGE:
        raise invalid_param("type", "GZ Console serves the Monthly License Usage report (13).")
    targets = p.raw.get("targetIds")
    if not isinstance(targets, list) or len(targets) != 1:
        raise invalid_param("targetIds", "a list with one company id.")
    target = Params({"targetIds": targets[0]}, allowed=("targetIds",)).id("targetIds", required=True)
    scheduled = p.obj("scheduledInfo") or {}
    if scheduled.get("occurrence", INSTANT) != INSTANT:
        raise invalid_param("scheduledInfo.occurrence", "only instant reports (1) over the API; schedules are "
                                                        "set on the console's Reports page.")
    emails = p.raw.get("emailList") or []
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
        raise invalid_param("emailList", "a list of email addresses.")
    month, options = _options(p)
    user = key_user(ctx)
    company = report_access(user, target)
    try:
        report_parameters_check(kind="endpoint", month=month, options=options)
        item = report_file_generate(report=report_build(actor=user, company=company, month=month, options=options),
                                    source=ReportSource.DOWNLOAD)
        if emails:
            # R5: recipients must be users who may see the report
            wanted = {e.strip().lower() for e in emails}
            eligible = dict(report_recipients_eligible(owner=user.company, company=company)
                            .filter(email__in=wanted).values_list("email", "pk"))
            if set(eligible) != wanted:
                raise invalid_param("emailList", f"only users who may see the report of {company.name} can "
                                                 "receive it (R5).")
            report_send_now(actor=user, company_id=company.pk, month=month, options=options,
                            recipient_ids=list(eligible.values()))
    except ValidationError as error:
        raise service_errors(error, REPORT_PARAMS) from None
    return str(item.pk)


def _item(item) -> dict:
    return {"id": str(item.pk), "name": item.title, "type": MONTHLY_LICENSE_USAGE if item.kind == "endpoint" else 0,
            "occurrence": INSTANT, "companyId": company_id(item.company_id),
            "month": f"{item.month:%m/%Y}", "createdAt": item.created_at.isoformat()}


@rpc_method("reports", "getReportsList", not_found="Report not found.")
def get_reports_list(ctx: RpcContext, params: dict) -> dict:
    p = Params(params, allowed=("name", "type", "page", "perPage"))
    name = p.string("name")
    kind = p.integer("type")
    page = p.integer("page", default=1, minimum=1)
    per_page = p.integer("perPage", default=30, minimum=1, maximum=100)
    items = report_history(actor=key_user(ctx))
    if name:
        items = items.filter(title__icontains=name)
    if kind is not None:
        items = items.filter(kind="endpoint") if kind == MONTHLY_LICENSE_USAGE else items.none()
    total = items.count()
    rows = items[(page - 1) * per_page: page * per_page]
    return {"total": total, "page": page, "perPage": per_page, "pagesCount": math.ceil(total / per_page),
            "items": [_item(item) for item in rows]}


@rpc_method("reports", "getDownloadLinks", not_found="Report not found.")
def get_download_links(ctx: RpcContext, params: dict) -> dict:
    p = Params(params, allowed=("reportId",))
    item = access_report_file(key_user(ctx), p.id("reportId", required=True))

    def link(fmt: str) -> str:
        return settings.CONSOLE_URL + reverse("jsonrpc:report-download", args=[item.pk, fmt])

    return {"readyForDownload": True, "lastInstanceUrl": link("csv"),
            "allInstancesUrls": [link("csv"), link("pdf")], "csvUrl": link("csv"), "pdfUrl": link("pdf")}
