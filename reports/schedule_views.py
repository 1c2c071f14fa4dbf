"""Pages for sending reports by email, report schedules, runs and the report history (R5).
Thin: parse input, call one service or selector, render."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from companies.company_forms import apply_service_errors
from companies.models import Role
from companies.selectors import access_company
from companies.views import PageView
from usage.rollups import month_previous

from . import schedules as schedule_services
from .builder import ReportOptions, month_parse, report_access
from .delivery import (
    access_report_file,
    access_report_run,
    report_file_delete,
    report_file_may_delete,
    report_history,
    report_run_retry_now,
    report_runs_visible,
    report_send_now,
)
from .forms import ScheduleForm, SendNowForm
from .models import RunStatus

RUNS_SHOWN = 50
HISTORY_SHOWN = 100


class AdminPageView(PageView):
    """Schedules are managed by company administrators (R5); for anyone else a page about a
    particular schedule answers 404, like a missing or foreign id (C6)."""

    page_key = "reports"

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated and request.user.role != Role.COMPANY_ADMIN:
            raise Http404 if kwargs else PermissionDenied
        return super().dispatch(request, *args, **kwargs)


def _schedule_data(form: ScheduleForm) -> dict:
    data = dict(form.cleaned_data)
    data["recipients"] = data.get("recipients") or []
    return data


class ScheduleListView(AdminPageView):
    def get(self, request):
        return render(request, "reports/schedules.html", {
            "schedules": schedule_services.schedules_visible(actor=request.user),
            "runs": report_runs_visible(actor=request.user).filter(schedule__isnull=False)[:RUNS_SHOWN],
        })


class ScheduleCreateView(AdminPageView):
    def get(self, request):
        initial = {"company": request.GET.get("company") or request.user.company_id, "day_of_month": 1, "hour": 6,
                   "kind": "endpoint"}
        return self._render(request, ScheduleForm(initial=initial, owner=request.user.company))

    def post(self, request):
        form = ScheduleForm(request.POST, owner=request.user.company)
        if form.is_valid():
            try:
                schedule = schedule_services.schedule_create(actor=request.user, data=_schedule_data(form))
            except ValidationError as error:
                apply_service_errors(form, error)
            else:
                messages.success(request, f"Schedule \u201c{schedule.name}\u201d created.")
                return redirect("reports:schedule", schedule.pk)
        return self._render(request, form, status=400)

    def _render(self, request, form, status=200):
        return render(request, "reports/schedule_form.html", {"form": form, "schedule": None}, status=status)


class ScheduleRecipientsView(AdminPageView):
    """htmx: the recipient checkboxes for the company chosen in the schedule form."""

    def get(self, request):
        form = ScheduleForm(initial={"company": request.GET.get("company")}, owner=request.user.company)
        return render(request, "reports/schedule_recipients.html", {"form": form})


class ScheduleDetailView(AdminPageView):
    def get(self, request, schedule_id):
        schedule = schedule_services.access_report_schedule(request.user, schedule_id)
        initial = {field: getattr(schedule, field) for field in (
            "name", "kind", "product_type", "only_endpoint_details", "only_direct", "day_of_month", "hour")}
        initial["company"] = schedule.company_id
        initial["recipients"] = list(schedule.recipients.values_list("pk", flat=True))
        return self._render(request, schedule, ScheduleForm(initial=initial, owner=request.user.company))

    def post(self, request, schedule_id):
        schedule = schedule_services.access_report_schedule(request.user, schedule_id)
        form = ScheduleForm(request.POST, owner=request.user.company)
        if form.is_valid():
            try:
                schedule_services.schedule_update(actor=request.user, schedule=schedule, data=_schedule_data(form))
            except ValidationError as error:
                apply_service_errors(form, error)
            else:
                messages.success(request, "Schedule saved.")
                return redirect("reports:schedule", schedule.pk)
        return self._render(request, schedule, form, status=400)

    def _render(self, request, schedule, form, status=200):
        runs = report_runs_visible(actor=request.user).filter(schedule=schedule)[:RUNS_SHOWN]
        return render(request, "reports/schedule_form.html", {"form": form, "schedule": schedule, "runs": runs},
                      status=status)


class SchedulePauseView(AdminPageView):
    def post(self, request, schedule_id):
        schedule = schedule_services.access_report_schedule(request.user, schedule_id)
        paused = request.POST.get("paused") == "1"
        schedule_services.schedule_pause(actor=request.user, schedule=schedule, paused=paused)
        messages.success(request, f"Schedule \u201c{schedule.name}\u201d {'paused' if paused else 'resumed'}.")
        if request.POST.get("next") == "list":
            return redirect("reports:schedules")
        return redirect("reports:schedule", schedule.pk)


class ScheduleDeleteView(AdminPageView):
    def post(self, request, schedule_id):
        schedule = schedule_services.access_report_schedule(request.user, schedule_id)
        name = schedule.name
        schedule_services.schedule_delete(actor=request.user, schedule=schedule)
        messages.success(request, f"Schedule \u201c{name}\u201d deleted.")
        return redirect("reports:schedules")


# --- Send by email now ----------------------------------------------------------------------------------

def _options(data) -> ReportOptions:
    return ReportOptions(product_type=data.get("product_type") or None,
                         only_endpoint_details=data.get("only_endpoint_details") in (True, "1", "on", "true"),
                         only_direct=data.get("only_direct") in (True, "1", "on", "true"))


class SendNowView(PageView):
    """R5: send the report on screen (company, month, kind, options in the query) by email now."""

    page_key = "reports"

    def get(self, request):
        company = report_access(request.user, request.GET.get("company") or request.user.company_id)
        try:
            month = month_parse(request.GET.get("month") or month_previous(timezone.now().date()))
        except ValidationError:
            month = month_previous(timezone.now().date())
        options = _options(request.GET)
        initial = {"company": company.pk, "month": f"{month:%Y-%m}", "kind": request.GET.get("kind") or "endpoint",
                   "product_type": options.product_type or "", "only_endpoint_details": options.only_endpoint_details,
                   "only_direct": options.only_direct, "recipients": [request.user.pk]}
        form = SendNowForm(initial=initial)
        form.set_recipient_choices(owner=request.user.company, company=company)
        return self._render(request, form, company, month, options)

    def post(self, request):
        company = report_access(request.user, request.POST.get("company"))
        form = SendNowForm(request.POST)
        form.set_recipient_choices(owner=request.user.company, company=company)
        if form.is_valid():
            data = form.cleaned_data
            try:
                run = report_send_now(actor=request.user, company_id=company.pk, month=data["month"],
                                      kind=data["kind"], options=_options(data), recipient_ids=data["recipients"])
            except ValidationError as error:
                apply_service_errors(form, error)
            else:
                return redirect("reports:run", run.pk)
        try:
            month = month_parse(request.POST.get("month"))
        except ValidationError:
            month = None
        return self._render(request, form, company, month, _options(request.POST), status=400)

    def _render(self, request, form, company, month, options, status=200):
        return render(request, "reports/email_send.html", {
            "form": form, "company": company, "month": month, "options": options.describe(),
        }, status=status)


class RunDetailView(PageView):
    """A run's status, recipient by recipient; polls while it is being sent or waiting to retry."""

    page_key = "reports"

    def get(self, request, run_id):
        run = access_report_run(request.user, run_id)
        template = "reports/schedule_run_status.html" if request.headers.get("HX-Request") else \
            "reports/schedule_run.html"
        return render(request, template, {
            "run": run, "deliveries": run.deliveries.select_related("recipient").order_by("email"),
            "polling": not run.is_final,
        })


class RunRetryView(PageView):
    page_key = "reports"

    def post(self, request, run_id):
        run = access_report_run(request.user, run_id)
        if run.status != RunStatus.FAILED:
            messages.error(request, "Only a failed run can be sent again.")
        else:
            report_run_retry_now(actor=request.user, run=run)
            messages.success(request, "Sending again.")
        return redirect("reports:run", run.pk)


# --- Report history ---------------------------------------------------------------------------------------

class HistoryView(PageView):
    page_key = "reports"

    def get(self, request):
        files = report_history(actor=request.user)
        company = None
        if request.GET.get("company"):
            company = access_company(request.user, request.GET["company"])
            files = files.filter(company=company)
        files = list(files[:HISTORY_SHOWN])
        for item in files:
            item.may_delete = report_file_may_delete(actor=request.user, item=item)
        return render(request, "reports/history.html", {
            "files": files, "company": company,
            "runs": report_runs_visible(actor=request.user).filter(schedule__isnull=True)[:RUNS_SHOWN],
        })


class HistoryDeleteView(PageView):
    """Delete a report from the history (CSV and PDF); another company's id answers 404 (C6)."""

    page_key = "reports"

    def post(self, request, file_id):
        item = access_report_file(request.user, file_id)
        title = item.title
        report_file_delete(actor=request.user, file_id=item.pk)
        messages.success(request, f"Report \u201c{title}\u201d deleted.")
        return redirect("reports:history")


class HistoryDownloadView(PageView):
    page_key = "reports"

    def get(self, request, file_id, fmt):
        if fmt not in ("csv", "pdf"):
            raise Http404("No such format")
        item = access_report_file(request.user, file_id)
        if fmt == "csv":
            return FileResponse(item.csv_file.open("rb"), as_attachment=True, filename=item.csv_name,
                                content_type="text/csv; charset=utf-8")
        return FileResponse(item.pdf_file.open("rb"), as_attachment=True, filename=item.pdf_name,
                            content_type="application/pdf")


def send_now_url(*, company_id: int, month, kind: str = "endpoint", options: ReportOptions | None = None) -> str:
    """The address of the send-by-email page for a report, for links from the report page."""
    from urllib.parse import urlencode

    options = options or ReportOptions()
    query = {"company": company_id, "month": f"{month:%Y-%m}", "kind": kind}
    if options.product_type:
        query["product_type"] = options.product_type
    if options.only_endpoint_details:
        query["only_endpoint_details"] = "1"
    if options.only_direct:
        query["only_direct"] = "1"
    return reverse("reports:send") + "?" + urlencode(query)
