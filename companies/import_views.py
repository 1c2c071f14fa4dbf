"""H6 pages: upload a CSV file, see its dry run, start the import and follow its progress.

Thin: each view parses input, calls one service or selector from companies.imports, renders.
"""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render

from .imports import (
    MAX_FILE_BYTES,
    MAX_ROWS,
    access_import_job,
    import_allowed,
    import_job_create,
    import_jobs_recent,
    import_progress,
    import_request_apply,
)
from .models import ImportStatus
from .views import PageView

ERRORS_PER_PAGE = 200
# while the job is in one of these, the page polls the status fragment
POLLING = {ImportStatus.PENDING, ImportStatus.VALIDATING, ImportStatus.IMPORTING}


class ImportUploadForm(forms.Form):
    file = forms.FileField(label="CSV file",
                           widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}))


class ImportPageView(PageView):
    """Import pages: company administrators of partner companies only."""

    page_key = "companies"

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated and not import_allowed(request.user):
            # a job's pages answer 404, like a missing or another company's job (C6)
            raise Http404 if kwargs else PermissionDenied
        return super().dispatch(request, *args, **kwargs)


class ImportUploadView(ImportPageView):
    def get(self, request):
        return self._render(request, ImportUploadForm())

    def post(self, request):
        form = ImportUploadForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                job = import_job_create(actor=request.user, upload=form.cleaned_data["file"])
            except ValidationError as exc:
                for message in exc.message_dict.get("file", exc.messages):
                    form.add_error("file", message)
            else:
                return redirect("companies:import-job", job_id=job.pk)
        return self._render(request, form, status=400)

    def _render(self, request, form, status=200):
        return render(request, "companies/import_upload.html", {
            "form": form, "jobs": import_jobs_recent(company=request.user.company),
            "max_megabytes": MAX_FILE_BYTES // 1024 // 1024, "max_rows": MAX_ROWS,
        }, status=status)


class ImportJobView(ImportPageView):
    def get(self, request, job_id: int):
        job = access_import_job(request.user, job_id)
        errors = Paginator(job.errors, ERRORS_PER_PAGE).get_page(request.GET.get("page"))
        return render(request, "companies/import_job.html", {
            "job": job, "errors": errors, "preview": job.preview, "progress": import_progress(job=job),
            "polling": job.status in POLLING,
        })


class ImportStatusView(ImportPageView):
    """The fragment the job page polls every second while the job is checked or imported."""

    def get(self, request, job_id: int):
        job = access_import_job(request.user, job_id)
        polling = job.status in POLLING
        response = render(request, "companies/import_status.html", {
            "job": job, "progress": import_progress(job=job), "polling": polling,
        })
        if not polling and request.headers.get("HX-Request"):
            # the job reached a state whose page differs (errors, Import button, result): reload it
            response["HX-Refresh"] = "true"
        return response


class ImportApplyView(ImportPageView):
    http_method_names = ["post"]

    def post(self, request, job_id: int):
        job = access_import_job(request.user, job_id)
        try:
            import_request_apply(actor=request.user, job=job)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        return redirect("companies:import-job", job_id=job.pk)
