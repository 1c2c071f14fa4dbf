"""Thin views for the Integrations page (SPEC B1-B4): parse input, call one service, render."""

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views import View

from companies.company_forms import apply_service_errors
from companies.views import PageView
from usage.rollups import month_start

from . import services
from .access import access_billed_company, access_plan_company
from .forms import ConnectionForm, MappingForm, PlanForm
from .models import SyncOutcome, SyncTrigger
from .selectors import connection_of, integration_page


def _month():
    return month_start(timezone.now())


def _render(request, connection_form=None, status=200):
    partner = request.user.company
    context = integration_page(partner=partner, month=_month())
    connection = context["connection"]
    if connection_form is None:
        initial = ({"site": connection.site, "psa_company_id": connection.psa_company_id,
                    "client_id": connection.client_id, "enabled": connection.enabled} if connection else {})
        connection_form = ConnectionForm(initial=initial)
    for row in context["rows"]:
        mapping = row["mapping"]
        row["form"] = MappingForm(prefix=f"m{row['company'].pk}", initial={
            "psa_company": mapping.psa_company if mapping else "",
            "agreement_type": mapping.agreement_type if mapping else "",
            "product_identifier": mapping.product_identifier if mapping else ""})
    context["connection_form"] = connection_form
    return render(request, "integrations/index.html", context, status=status)


class IntegrationsView(PageView):
    page_key = "integrations"

    def get(self, request):
        return _render(request)


class ConnectionSaveView(PageView):
    page_key = "integrations"

    def post(self, request):
        form = ConnectionForm(request.POST)
        if form.is_valid():
            try:
                services.connection_save(actor=request.user, partner=request.user.company, **form.cleaned_data)
            except ValidationError as error:
                apply_service_errors(form, error)
            else:
                messages.success(request, "The ConnectWise connection was saved.")
                return redirect("integrations:index")
        return _render(request, form, status=400)


class ConnectionTestView(PageView):
    page_key = "integrations"

    def post(self, request):
        connection = connection_of(request.user.company)
        if connection is None:
            messages.error(request, "Save the ConnectWise connection first.")
        else:
            services.connection_test(connection=connection)
        return redirect("integrations:index")


class MappingSaveView(PageView):
    page_key = "integrations"

    def post(self, request, company_id: int):
        company = access_billed_company(request.user, company_id)
        form = MappingForm(request.POST, prefix=f"m{company.pk}")
        form.is_valid()
        try:
            mapping = services.mapping_save(actor=request.user, company=company, **{
                f: form.cleaned_data.get(f, "") for f in ("psa_company", "agreement_type", "product_identifier")})
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, f"{company.name}: {message}")
        else:
            level = messages.success if mapping.state == "ok" else messages.warning
            level(request, f"{company.name}: {mapping.get_state_display()}. {mapping.state_detail}")
        return redirect("integrations:index")


class CompanySyncView(PageView):
    """"Sync now" for one company: pushed while the partner waits, so the outcome shows at once; a
    failure that may pass is handed to the retrying task."""

    page_key = "integrations"

    def post(self, request, company_id: int):
        from .tasks import sync_company

        company = access_billed_company(request.user, company_id)
        month = _month()
        attempt = services.addition_sync(company_id=company.pk, month=month, trigger=SyncTrigger.MANUAL, force=True)
        if attempt is None:
            messages.info(request, f"{company.name}: nothing to send.")
        elif attempt.outcome == SyncOutcome.OK:
            messages.success(request, f"{company.name}: {attempt.quantity} endpoints sent. {attempt.answer}")
        else:
            messages.error(request, f"{company.name}: not synced. {attempt.answer}")
            if attempt.retryable:
                transaction.on_commit(lambda: sync_company.apply_async(
                    (company.pk, month.isoformat(), SyncTrigger.RETRY, True), countdown=30))
        return redirect("integrations:index")


class SyncAllView(PageView):
    page_key = "integrations"

    def post(self, request):
        from .tasks import sync_partner

        if connection_of(request.user.company) is None:
            messages.error(request, "Save the ConnectWise connection first.")
        else:
            partner_id, month = request.user.company.pk, _month().isoformat()
            transaction.on_commit(lambda: sync_partner.delay(partner_id, month))
            messages.success(request, "Sync started: the log below shows each company as it is sent.")
        return redirect("integrations:index")


class SyncLogView(PageView):
    """The log, refreshed in place while a sync runs."""

    page_key = "integrations"

    def get(self, request):
        context = integration_page(partner=request.user.company, month=_month())
        return render(request, "integrations/_log.html", {"attempts": context["attempts"]})


class PlanSetView(LoginRequiredMixin, View):
    """B2: a partner's plan, set from the company edit page by a partner above it."""

    def post(self, request, company_id: int):
        company = access_plan_company(request.user, company_id)
        form = PlanForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose Standard or Basic.")
        else:
            try:
                services.partner_plan_set(actor=request.user, company=company, plan=form.cleaned_data["plan"])
            except ValidationError as error:
                for message in error.messages:
                    messages.error(request, message)
            else:
                messages.success(request, f"{company.name} is on the {company.get_plan_display()} plan.")
        return redirect("companies:edit", company.pk)
