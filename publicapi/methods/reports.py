"""reports: createReport (type 13, Monthly License Usage, instant or monthly), getReportsList,
getDownloadLinks, deleteReport. The report services (reports.builder, reports.delivery, and
reports.schedules for monthly reports) build, keep and send reports for a person: a key acts
through the company administrator who created it (see docs/decisions.md), so report history,
schedules, recipients (R5) and visibility (C2, C3, C6) are exactly the console's for that
administrator."""

import math

from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse

from companies.models import CompanyStatus, Role, User
from reports.builder import ReportOptions, report_access, report_build
from reports.delivery import (
    access_report_file,
    report_file_delete,
    report_file_generate,
    report_history,
    report_parameters_check,
    report_recipients_eligible,
    report_send_now,
)
from reports.models import ReportDelivery, ReportFile, ReportSchedule, ReportSource
from reports.schedules import access_report_schedule, schedule_create, schedule_delete, schedules_visible

from ..fields import PRODUCT_TYPES, company_id
from ..jsonrpc import (
    SERVER_ERROR,
    Params,
    RpcContext,
    RpcError,
    ascii_int,
    invalid_param,
    rpc_method,
    service_errors,
)

MONTHLY_LICENSE_USAGE = 13
INSTANT = 1
MONTHLY = 5
# the original's scheduledInfo.occurrence values; GZ Console schedules monthly only (R5)
OCCURRENCES = {1: "instant", 2: "hourly", 3: "daily", 4: "weekly", 5: "monthly"}
SCHEDULED_KEYS = ("occurrence", "interval", "startHour", "startMinute", "days", "day")
SCHEDULE_PREFIX = "schedule-"
REPORT_PARAMS = {"month": "options.targetMonth", "product_type": "options.productType",
                 "recipients": "emailList", "kind": "type"}
SCHEDULE_PARAMS = {"name": "name", "company": "targetIds", "kind": "type", "product_type": "options.productType",
                   "day_of_month": "scheduledInfo.day", "hour": "scheduledInfo.startHour", "recipients": "emailList"}


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


def _scheduled_info(p: Params) -> dict | None:
    """scheduledInfo: None for an instant report, else the monthly timing (day, hour UTC)."""
    raw = p.obj("scheduledInfo") or {}
    unknown = sorted(set(raw) - set(SCHEDULED_KEYS))
    if unknown:
        raise invalid_param(f"scheduledInfo.{unknown[0]}", f"unknown field; accepted: {', '.join(SCHEDULED_KEYS)}.")
    info = Params({f"scheduledInfo.{k}": v for k, v in raw.items()},
                  allowed=tuple(f"scheduledInfo.{k}" for k in SCHEDULED_KEYS))
    occurrence = info.integer("scheduledInfo.occurrence", default=INSTANT)
    if occurrence == INSTANT:
        return None
    if occurrence != MONTHLY:
        kind = OCCURRENCES.get(occurrence)
        raise invalid_param("scheduledInfo.occurrence", (f"{kind} reports are not supported; " if kind else "")
                            + "use 1 (instant) or 5 (monthly): GZ Console sends scheduled reports once a month.")
    for name in ("interval", "days"):
        if raw.get(name) is not None:
            raise invalid_param(f"scheduledInfo.{name}", "not used by monthly reports (5).")
    day = info.integer("scheduledInfo.day", default=1, minimum=1, maximum=28)  # every month has days 1-28
    hour = info.integer("scheduledInfo.startHour", default=6, minimum=0, maximum=23)
    if info.integer("scheduledInfo.startMinute", default=0) != 0:
        raise invalid_param("scheduledInfo.startMinute", "scheduled reports are sent on the hour: 0.")
    return {"day_of_month": day, "hour": hour}


def _recipient_ids(user: User, company, emails: list[str]) -> list[int]:
    """R5: the users of emailList, each one who may see the report, else -32602 naming emailList."""
    wanted = {e.strip().lower() for e in emails}
    eligible = dict(report_recipients_eligible(owner=user.company, company=company)
                    .filter(email__in=wanted).values_list("email", "pk"))
    if set(eligible) != wanted:
        raise invalid_param("emailList", f"only users who may see the report of {company.name} can receive it (R5).")
    return list(eligible.values())


@rpc_method("reports", "createReport")
def create_report(ctx: RpcContext, params: dict) -> str:
    p = Params(params, allowed=("name", "type", "targetIds", "scheduledInfo", "options", "emailList"))
    name = p.string("name", max_length=200)
    if p.integer("type", required=True) != MONTHLY_LICENSE_USAGE:
        raise invalid_param("type", "GZ Console serves the Monthly License Usage report (13).")
    targets = p.raw.get("targetIds")
    if not isinstance(targets, list) or len(targets) != 1:
        raise invalid_param("targetIds", "a list with one company id.")
    target = Params({"targetIds": targets[0]}, allowed=("targetIds",)).id("targetIds", required=True)
    timing = _scheduled_info(p)
    emails = p.raw.get("emailList") or []
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
        raise invalid_param("emailList", "a list of email addresses.")
    if timing is not None:
        if not (name or "").strip():
            raise invalid_param("name", "required for a scheduled report: it names the schedule.")
        if "targetMonth" in (p.obj("options") or {}):
            raise invalid_param("options.targetMonth", "a scheduled report always covers the previous month.")
        if not emails:
            raise invalid_param("emailList", "a scheduled report is sent by email: list at least one recipient.")
    month, options = _options(p)
    user = key_user(ctx)
    company = report_access(user, target)
    if timing is not None:
        return _create_schedule(user, company, name, options, emails, timing)
    recipient_ids = _recipient_ids(user, company, emails) if emails else []  # before any file is written
    try:
        report_parameters_check(kind="endpoint", month=month, options=options)
        item = report_file_generate(report=report_build(actor=user, company=company, month=month, options=options),
                                    source=ReportSource.DOWNLOAD)
        if recipient_ids:
            report_send_now(actor=user, company_id=company.pk, month=month, options=options,
                            recipient_ids=recipient_ids, built=item)
    except ValidationError as error:
        raise service_errors(error, REPORT_PARAMS) from None
    return str(item.pk)


def _create_schedule(user: User, company, name: str, options: ReportOptions, emails: list[str],
                     timing: dict) -> str:
    """A monthly scheduled report is a report schedule (R5), exactly as made on the schedules page."""
    data = {"name": name, "company": company.pk, "kind": "endpoint", "product_type": options.product_type or "",
            "only_endpoint_details": options.only_endpoint_details, "only_direct": options.only_direct,
            "recipients": _recipient_ids(user, company, emails), **timing}
    try:
        schedule = schedule_create(actor=user, data=data)
    except ValidationError as error:
        raise service_errors(error, SCHEDULE_PARAMS) from None
    return f"{SCHEDULE_PREFIX}{schedule.pk}"


def _report_ref(p: Params) -> tuple[str, int]:
    """reportId: "17" is a generated report (history), "schedule-4" a scheduled report."""
    raw = p.raw.get("reportId")
    if isinstance(raw, str) and raw.strip().startswith(SCHEDULE_PREFIX):
        number = ascii_int(raw.strip()[len(SCHEDULE_PREFIX):])
        if number is None:
            raise invalid_param("reportId", "a report id from createReport or getReportsList.")
        return "schedule", number
    try:
        return "file", p.id("reportId", required=True)
    except RpcError:
        raise invalid_param("reportId", "a report id from createReport or getReportsList.") from None


def _item(item) -> dict:
    return {"id": str(item.pk), "name": item.title, "type": MONTHLY_LICENSE_USAGE if item.kind == "endpoint" else 0,
            "occurrence": INSTANT, "companyId": company_id(item.company_id),
            "month": f"{item.month:%m/%Y}", "createdAt": item.created_at.isoformat()}


def _schedule_item(schedule: ReportSchedule) -> dict:
    return {"id": f"{SCHEDULE_PREFIX}{schedule.pk}", "name": schedule.name,
            "type": MONTHLY_LICENSE_USAGE if schedule.kind == "endpoint" else 0, "occurrence": MONTHLY,
            "companyId": company_id(schedule.company_id), "month": None,
            "createdAt": schedule.created_at.isoformat(),
            "scheduledInfo": {"occurrence": MONTHLY, "day": schedule.day_of_month, "startHour": schedule.hour,
                              "startMinute": 0, "paused": schedule.paused}}


@rpc_method("reports", "getReportsList", not_found="Report not found.")
def get_reports_list(ctx: RpcContext, params: dict) -> dict:
    """Scheduled reports first (by name), then generated reports, newest first; both paged in SQL."""
    p = Params(params, allowed=("name", "type", "page", "perPage"))
    name = p.string("name")
    kind = p.integer("type")
    page = p.integer("page", default=1, minimum=1)
    per_page = p.integer("perPage", default=30, minimum=1, maximum=100)
    user = key_user(ctx)
    items = report_history(actor=user)
    schedules = schedules_visible(actor=user)
    if name:
        items = items.filter(title__icontains=name)
        schedules = schedules.filter(name__icontains=name)
    if kind is not None:
        items = items.filter(kind="endpoint") if kind == MONTHLY_LICENSE_USAGE else items.none()
        schedules = schedules.filter(kind="endpoint") if kind == MONTHLY_LICENSE_USAGE else schedules.none()
    scheduled_total, files_total = schedules.count(), items.count()
    total = scheduled_total + files_total
    start, end = (page - 1) * per_page, page * per_page
    rows = [_schedule_item(schedule) for schedule in schedules[start:end]] if start < scheduled_total else []
    if end > scheduled_total:
        rows += [_item(item) for item in items[max(start - scheduled_total, 0): end - scheduled_total]]
    return {"total": total, "page": page, "perPage": per_page, "pagesCount": math.ceil(total / per_page),
            "items": rows}


def _link(item: ReportFile, fmt: str) -> str:
    return settings.CONSOLE_URL + reverse("jsonrpc:report-download", args=[item.pk, fmt])


def _schedule_instances(user: User, schedule: ReportSchedule) -> list[ReportFile]:
    """The reports a schedule generated that the key's company keeps (its history), newest first."""
    history = report_history(actor=user)  # files with endpoint rows close with the network view (C2, C3)
    sent = ReportDelivery.objects.filter(run__schedule=schedule, report_file__isnull=False).values("report_file")
    return list(history.filter(pk__in=sent))


@rpc_method("reports", "getDownloadLinks", not_found="Report not found.")
def get_download_links(ctx: RpcContext, params: dict) -> dict:
    """One generated report, or every report a schedule generated so far (its instances)."""
    p = Params(params, allowed=("reportId",))
    what, pk = _report_ref(p)
    user = key_user(ctx)
    if what == "schedule":
        instances = _schedule_instances(user, access_report_schedule(user, pk))
    else:
        instances = [access_report_file(user, pk)]
    if not instances:
        return {"readyForDownload": False, "lastInstanceUrl": None, "allInstancesUrls": [], "csvUrl": None,
                "pdfUrl": None}
    last = instances[0]
    return {"readyForDownload": True, "lastInstanceUrl": _link(last, "csv"),
            "allInstancesUrls": [_link(item, fmt) for item in instances for fmt in ("csv", "pdf")],
            "csvUrl": _link(last, "csv"), "pdfUrl": _link(last, "pdf")}


@rpc_method("reports", "deleteReport", not_found="Report not found.")
def delete_report(ctx: RpcContext, params: dict) -> bool:
    """A generated report leaves the history with its CSV and PDF; a scheduled report's schedule is
    deleted (nothing more is sent) and the reports it already sent stay in the history, as on the
    schedules page. Missing and foreign ids answer the same (C6); both are audited (X1)."""
    p = Params(params, allowed=("reportId",))
    what, pk = _report_ref(p)
    user = key_user(ctx)
    if what == "schedule":
        schedule_delete(actor=user, schedule=access_report_schedule(user, pk))
    else:
        report_file_delete(actor=user, file_id=pk)
    return True
