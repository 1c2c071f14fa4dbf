"""Report pages and exports: parse the options, build the report once, render it (R1-R6)."""


from django import forms
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from companies.access import access_company_network
from companies.views import PageView
from usage.rollups import month_previous

from .builder import (
    DRILL_COLUMNS,
    KIND_TITLES,
    KINDS,
    PRODUCT_TYPES,
    ReportOptions,
    month_parse,
    report_access,
    report_build,
)
from .models import ReportPreference
from .render import (
    report_chart_svg,
    report_csv_iter,
    report_filename,
    report_late_adjustments,
    report_mixed_products,
    report_pdf,
)
from .selectors import DRILL_LABELS

PAGE_ENDPOINTS = 500  # endpoints listed on a page; the CSV lists them all


class ReportForm(forms.Form):
    """R1: the target company, the month and the options."""

    company = forms.IntegerField(required=False, min_value=1)
    month = forms.RegexField(regex=r"^\d{4}-(0[1-9]|1[0-2])$", required=False,
                             error_messages={"invalid": "Enter the month as YYYY-MM."})
    kind = forms.ChoiceField(choices=[(k, KIND_TITLES[k]) for k in KINDS], required=False)
    product_type = forms.ChoiceField(choices=[("", "All product types"), *PRODUCT_TYPES.items()], required=False)
    only_endpoint_details = forms.BooleanField(required=False)
    only_direct = forms.BooleanField(required=False)

    def clean_month(self):
        value = self.cleaned_data["month"]
        if value:
            try:
                month_parse(value)  # X2: 2000-01 up to the current month, as everywhere else
            except ValidationError as error:
                raise forms.ValidationError(error.message_dict["month"]) from None
        return value

    def report_arguments(self, actor) -> dict:
        data = self.cleaned_data
        month = month_parse(data["month"]) if data["month"] else month_previous(timezone.now())
        return {
            "actor": actor,
            "company": report_access(actor, data["company"] or actor.company_id),
            "month": month,
            "kind": data["kind"] or "endpoint",
            "options": ReportOptions(product_type=data["product_type"] or None,
                                     only_endpoint_details=data["only_endpoint_details"],
                                     only_direct=data["only_direct"]),
        }


def _form_errors(form) -> HttpResponse:
    text = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
    return HttpResponse(f"Invalid report options: {text}", status=400, content_type="text/plain")


def _build(request):
    form = ReportForm(request.GET)
    if not form.is_valid():
        return form, None
    try:
        return form, report_build(**form.report_arguments(request.user))
    except ValidationError as error:
        for field, messages in error.message_dict.items():
            form.add_error(field if field in form.fields else None, messages)
        return form, None


def _query(report, **extra) -> str:
    params = {"company": report.company.pk, "month": f"{report.month:%Y-%m}", "kind": report.kind}
    if report.options.product_type:
        params["product_type"] = report.options.product_type
    if report.options.only_endpoint_details:
        params["only_endpoint_details"] = "on"
    if report.options.only_direct:
        params["only_direct"] = "on"
    params.update(extra)
    return urlencode(params)


class ReportIndexView(PageView):
    """The report page: options, the chart, the table with columns to show or hide (R2)."""

    page_key = "reports"

    def get(self, request):
        form, report = _build(request)
        if report is None:
            return render(request, "reports/index.html", {"form": form, "report": None}, status=400)
        preference = ReportPreference.objects.filter(user=request.user, kind=report.kind).first()
        hidden = set(preference.hidden_columns if preference else [])
        endpoints = []
        if not report.show_company_rows and report.can_drill_down:
            endpoints = [[e[key] for key, _ in report.endpoint_columns]
                         for e in report.endpoints_page(limit=PAGE_ENDPOINTS)]
        from companies.selectors import company_subtree

        return render(request, "reports/index.html", {
            "form": form, "report": report,
            "rows": [(row, [(key, row[key]) for key, _ in report.columns]) for row in report.rows]
            if report.show_company_rows else [],
            "chart": report_chart_svg(report),
            **dict(zip(("late_months", "late"), report_late_adjustments(report), strict=True)),
            "mixed": report_mixed_products(report),
            "hidden": hidden,
            "drill_columns": DRILL_COLUMNS if report.can_drill_down else (),
            "query": _query(report),
            "endpoints": endpoints, "page_limit": PAGE_ENDPOINTS,
            "targets": company_subtree(company=request.user.company).order_by("lineage").values_list(
                "id", "name")[:1000],
            "kinds": [(k, KIND_TITLES[k]) for k in KINDS],
            "product_types": PRODUCT_TYPES.items(),
        })


class _ReportExportView(PageView):
    """R4: the report of the query string as a download."""

    page_key = "reports"
    extension = ""

    def respond(self, report) -> HttpResponse:
        raise NotImplementedError

    def get(self, request):
        form, report = _build(request)
        if report is None:
            return _form_errors(form)
        response = self.respond(report)
        response["Content-Disposition"] = f'attachment; filename="{report_filename(report, self.extension)}"'
        return response


class ReportCsvView(_ReportExportView):
    """R3/R4: the CSV, streamed row by row from SQL."""

    extension = "csv"

    def respond(self, report):
        return StreamingHttpResponse(report_csv_iter(report), content_type="text/csv; charset=utf-8")


class ReportPdfView(_ReportExportView):
    extension = "pdf"

    def respond(self, report):
        return HttpResponse(report_pdf(report), content_type="application/pdf")


class ReportDrillView(PageView):
    """R2: the endpoints behind one number of one row; none for a partner that may not see the
    network (C2, C3): the same 404 as a company outside the actor's subtree (C6)."""

    page_key = "reports"

    def get(self, request):
        form, report = _build(request)
        if report is None:
            return _form_errors(form)
        column = request.GET.get("column", "")
        if column not in DRILL_COLUMNS or not report.can_drill_down:
            raise Http404
        # C2/C3/C6: a company the viewer may see the network of, within the report's subtree
        row_company = access_company_network(request.user, request.GET.get("row") or report.company.pk)
        if not row_company.lineage.startswith(report.company.lineage):
            raise Http404
        endpoints = list(report.endpoints_behind(column=column, company=row_company, limit=PAGE_ENDPOINTS + 1))
        return render(request, "reports/drill.html", {
            "report": report, "row_company": row_company, "column": column,
            "column_label": DRILL_LABELS[column],
            "endpoints": [[e[key] for key, _ in report.endpoint_columns] for e in endpoints[:PAGE_ENDPOINTS]],
            "more": len(endpoints) > PAGE_ENDPOINTS,
            "page_limit": PAGE_ENDPOINTS,
            "back": f"{reverse('reports:index')}?{_query(report)}",
        })


class ReportColumnsView(PageView):
    """R2: the columns a user hides, remembered per user and report kind."""

    page_key = "reports"

    def post(self, request):
        from .builder import ENDPOINT_COLUMNS, MAILBOX_COLUMNS

        kind = request.POST.get("kind", "endpoint")
        if kind not in KINDS:
            return JsonResponse({"error": "kind: choose one of " + ", ".join(KINDS)}, status=400)
        known = {key for key, _ in (ENDPOINT_COLUMNS if kind == "endpoint" else MAILBOX_COLUMNS)}
        hidden = request.POST.getlist("hidden")
        unknown = [key for key in hidden if key not in known]
        if unknown:
            return JsonResponse({"error": f"hidden: unknown column {unknown[0]}"}, status=400)
        ReportPreference.objects.update_or_create(user=request.user, kind=kind,
                                                  defaults={"hidden_columns": sorted(set(hidden))})
        return JsonResponse({"hidden": sorted(set(hidden))})
