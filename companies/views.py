"""Thin views: parse input, call one selector or service, render."""

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View
from django_tenants.utils import tenant_context

from licensing.forms import LicenseForm

from . import services
from .access import (
    access_company_network,
    access_managed_company,
    access_user,
    accounts_manageable,
    can_manage_company,
    network_visible,
)
from .audit import audit_events_visible
from .capabilities import can_open, can_view_network_role
from .company_forms import (
    ApiKeyForm,
    CompanyCreateForm,
    CompanyDetailsForm,
    CompanyFilterForm,
    InviteForm,
    MoveForm,
    apply_service_errors,
)
from .models import ApiKey, CompanyType, Role, User
from .selectors import (
    access_company,
    companies_with_accounts_managed_by,
    company_list,
    company_path_for,
    company_paths,
    company_subtree,
    move_targets,
)

COMPANIES_PER_PAGE = 50


class PageView(LoginRequiredMixin, View):
    """A console page; `page_key` names the capability that opens it."""

    page_key = ""

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated and not can_open(request.user, self.page_key):
            # a page about a particular object answers 404, like a missing or foreign id (C6)
            raise Http404 if kwargs else PermissionDenied
        return super().dispatch(request, *args, **kwargs)


class DashboardView(PageView):
    page_key = "dashboard"

    def get(self, request):
        company = request.user.company
        below = company_subtree(company=company, include_self=False)
        counts = dict(below.values_list("type").annotate(n=Count("id")).order_by())
        return render(request, "companies/dashboard.html", {
            "company": company,
            "partners_below": counts.get(CompanyType.PARTNER, 0),
            "customers_below": counts.get(CompanyType.CUSTOMER, 0),
            "users_count": company.users.count(),
        })


# --- Companies ---------------------------------------------------------------------------------------

class CompanyListView(PageView):
    page_key = "companies"

    def get(self, request):
        form = CompanyFilterForm(request.GET)
        filters = form.cleaned_data if form.is_valid() else {}
        companies = company_list(viewer=request.user.company, **filters)
        page = Paginator(companies, COMPANIES_PER_PAGE).get_page(request.GET.get("page"))
        rows = list(page.object_list)
        paths = company_paths(companies=rows, viewer=request.user.company)
        query = request.GET.copy()
        query.pop("page", None)
        template = "companies/_list_rows.html" if request.headers.get("HX-Request") else "companies/list.html"
        return render(request, template, {
            "form": form, "page": page, "query": query.urlencode(),
            "rows": [(company, paths[company.pk]) for company in rows],
            "can_add": request.user.role == Role.COMPANY_ADMIN,
        })


class CompanyCreateView(PageView):
    """The add-company wizard: company details, authentication, licensing (one form, three steps)."""

    page_key = "companies"

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated and request.user.role != Role.COMPANY_ADMIN:
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get(self, request):
        return self._render(request, CompanyCreateForm(), LicenseForm())

    @staticmethod
    def _licensing(license_form, company_type: str) -> dict:
        """The wizard hides "Products for reselling" unless the type is partner (E4); its boxes are
        still posted if they were ticked before the type changed, and do not apply then."""
        arguments = license_form.service_arguments()
        if company_type != CompanyType.PARTNER:
            arguments["resell"] = set()
        return arguments

    def post(self, request):
        from licensing.services import company_onboard

        form = CompanyCreateForm(request.POST, request.FILES)
        license_form = LicenseForm(request.POST)
        if form.is_valid() and license_form.is_valid():
            data = form.cleaned_data
            primary = None
            if data["add_primary_account"]:
                primary = services.PrimaryAccount(
                    full_name=data["primary_full_name"], email=data["primary_email"],
                    timezone=data["primary_timezone"] or "UTC", language=data["primary_language"] or "en")
            try:
                company = company_onboard(
                    actor=request.user, parent=request.user.company, name=data["name"], type=data["type"],
                    country=data["country"], field_of_activity=data["field_of_activity"],
                    manages_security=data["manages_security"], partner_can_assist=data["partner_can_assist"],
                    address=data["address"], phone=data["phone"], logo=data["logo"],
                    enforce_two_factor=data["enforce_two_factor"], primary_account=primary,
                    **self._licensing(license_form, data["type"]))
            except ValidationError as error:
                _primary_errors_to_fields(error)
                _split_errors(error, form, license_form)
            else:
                messages.success(request, f"{company.name} was added.")
                return redirect("companies:detail", company.pk)
        return self._render(request, form, license_form, status=400)

    def _render(self, request, form, license_form, status=200):
        from licensing.seats import pool_of
        from licensing.views import catalogue_for_page, parent_resell_keys

        parent = request.user.company
        return render(request, "companies/create.html", {
            "form": form, "license_form": license_form,
            "catalogue": catalogue_for_page(allowed=parent_resell_keys(parent)),
            "available_to_reserve": pool_of(parent).free,
            "selected": {"own": sorted(set(license_form["own_use"].value() or [])
                                       | {license_form["own_product"].value() or "",
                                          license_form["own_model"].value() or ""} - {""}),
                         "resell": sorted(license_form["resell"].value() or [])},
        }, status=status)


LICENSE_FIELDS = {"reserved_seats", "end_date", "auto_renew", "renew_months", "minimum_usage", "own_use",
                  "resell", "product_type", "protection_model", "addons", "services", "xdr_sensors",
                  "retention_tier"}


def _split_errors(error: ValidationError, form, license_form) -> None:
    """Company errors go on the details step, licensing errors on the licensing step."""
    if not hasattr(error, "error_dict"):
        apply_service_errors(form, error)
        return
    company_part = {k: v for k, v in error.error_dict.items() if k not in LICENSE_FIELDS}
    license_part = {k: v for k, v in error.error_dict.items() if k in LICENSE_FIELDS}
    if company_part:
        apply_service_errors(form, ValidationError(company_part))
    if license_part:
        apply_service_errors(license_form, ValidationError(license_part))


def _primary_errors_to_fields(error: ValidationError) -> None:
    # the invitation reports its own field names; on this form they carry the primary_ prefix
    if hasattr(error, "error_dict"):
        for field in ("full_name", "email", "timezone", "language"):
            if field in error.error_dict:
                error.error_dict[f"primary_{field}"] = error.error_dict.pop(field)


class CompanyDetailView(PageView):
    page_key = "companies"

    def get(self, request, company_id: int):
        user = request.user
        company = access_company(user, company_id)
        manageable = can_manage_company(user, company)
        return render(request, "companies/detail.html", {
            "company": company,
            "path": company_path_for(company=company, viewer=user.company),
            "can_manage": manageable,
            "network_visible": can_view_network_role(user) and network_visible(user.company, company),
            "accounts_manageable": accounts_manageable(user, company),
            "move_targets": move_targets(viewer=user.company, company=company)[:500] if manageable else [],
            "events": audit_events_visible(viewer_company=user.company, company=company)[:50],
        })


class CompanyEditView(PageView):
    page_key = "companies"

    def get(self, request, company_id: int):
        company = access_managed_company(request.user, company_id)
        form = CompanyDetailsForm(initial={f: getattr(company, f) for f in
                                           ("name", "country", "field_of_activity", "address", "phone")})
        return render(request, "companies/edit.html", {"company": company, "form": form})

    def post(self, request, company_id: int):
        company = access_managed_company(request.user, company_id)
        form = CompanyDetailsForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.company_update(
                    actor=request.user, company=company, logo=data["logo"],
                    clear_logo=bool(request.POST.get("clear_logo")),
                    **{f: data[f] for f in ("name", "country", "field_of_activity", "address", "phone")})
            except ValidationError as error:
                apply_service_errors(form, error)
            else:
                messages.success(request, "The company details were saved.")
                return redirect("companies:detail", company.pk)
        return render(request, "companies/edit.html", {"company": company, "form": form}, status=400)


class CompanyActionView(PageView):
    """Suspend, reactivate, move, assist off, two-factor: POST-only actions on a managed company."""

    page_key = "companies"

    def post(self, request, company_id: int, action: str):
        company = access_managed_company(request.user, company_id)
        try:
            self._run(request, company, action)
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, message)
        return redirect("companies:detail", company.pk)

    def _run(self, request, company, action):
        actor = request.user
        if action == "suspend":
            services.company_set_status(actor=actor, company=company, status="suspended")
            messages.success(request, f"{company.name} is suspended.")
        elif action == "reactivate":
            services.company_set_status(actor=actor, company=company, status="active")
            messages.success(request, f"{company.name} is active again.")
        elif action == "assist-off":
            services.company_set_assist(actor=actor, company=company, on=False)
            messages.success(request, f"You can no longer assist {company.name} with security management.")
        elif action in ("two-factor-on", "two-factor-off"):
            services.company_set_two_factor(actor=actor, company=company, enforce=action == "two-factor-on")
            messages.success(request, "Two-factor authentication setting saved.")
        elif action == "move":
            form = MoveForm(request.POST)
            if not form.is_valid():
                raise ValidationError({"parent": "Choose the new partner."})
            try:
                new_parent = access_company(actor, form.cleaned_data["new_parent"])
            except Http404:
                raise ValidationError({"parent": "Choose the new partner from the list."}) from None
            services.company_move(actor=actor, company=company, new_parent=new_parent)
            messages.success(request, f"{company.name} now belongs to {new_parent.name}.")
        else:
            raise Http404


class CompanyNetworkView(PageView):
    """The company's endpoints, read from its own schema (C1-C3: hidden without assist)."""

    page_key = "dashboard"

    def get(self, request, company_id: int):
        if not can_view_network_role(request.user):
            raise Http404
        company = access_company_network(request.user, company_id)
        from usage.telemetry.models import Endpoint

        with tenant_context(company):
            page = Paginator(Endpoint.objects.order_by("hostname"), 100).get_page(request.GET.get("page"))
            endpoints = list(page.object_list)
        return render(request, "companies/network.html", {
            "company": company, "page": page, "endpoints": endpoints,
            "path": company_path_for(company=company, viewer=request.user.company),
        })


# --- My Company --------------------------------------------------------------------------------------

class MyCompanyView(PageView):
    page_key = "my_company"

    def get(self, request):
        return self._render(request, CompanyDetailsForm(initial={
            f: getattr(request.user.company, f)
            for f in ("name", "country", "field_of_activity", "address", "phone")}))

    def post(self, request):
        user = request.user
        company = user.company
        if user.role != Role.COMPANY_ADMIN:
            raise PermissionDenied
        action = request.POST.get("action")
        try:
            if action in ("assist-on", "assist-off"):
                services.company_set_assist(actor=user, company=company, on=action == "assist-on")
                messages.success(request, "Your partner's assist setting was saved.")
            elif action in ("two-factor-on", "two-factor-off"):
                services.company_set_two_factor(actor=user, company=company, enforce=action == "two-factor-on")
                messages.success(request, "Two-factor authentication setting saved.")
            elif action == "mdr":
                from licensing.entitlements import mdr_contact_set
                from licensing.forms import MdrContactForm

                mdr_form = MdrContactForm(request.POST)
                if not mdr_form.is_valid():
                    return self._render(request, None, status=400, mdr_form=mdr_form)
                try:
                    mdr_contact_set(actor=user, company=company, **mdr_form.cleaned_data)
                except ValidationError as error:
                    apply_service_errors(mdr_form, error)
                    return self._render(request, None, status=400, mdr_form=mdr_form)
                messages.success(request, "MDR contact details saved.")
            elif action == "details":
                form = CompanyDetailsForm(request.POST, request.FILES)
                if not form.is_valid():
                    return self._render(request, form, status=400)
                data = form.cleaned_data
                try:
                    services.company_update(
                        actor=user, company=company, logo=data["logo"],
                        clear_logo=bool(request.POST.get("clear_logo")),
                        **{f: data[f] for f in ("name", "country", "field_of_activity", "address", "phone")})
                except ValidationError as error:
                    apply_service_errors(form, error)
                    return self._render(request, form, status=400)
                messages.success(request, "Your company details were saved.")
            else:
                raise Http404
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, message)
        return redirect("companies:my-company")

    def _render(self, request, form, status=200, mdr_form=None):
        from licensing.forms import MdrContactForm
        from licensing.models import MdrContact

        company = request.user.company
        company.refresh_from_db()
        contact = MdrContact.objects.filter(company=company).first()
        if form is None:
            form = CompanyDetailsForm(initial={f: getattr(company, f) for f in
                                               ("name", "country", "field_of_activity", "address", "phone")})
        if mdr_form is None:
            initial = {f: getattr(contact, f) for f in MdrContact.REQUIRED} if contact else None
            mdr_form = MdrContactForm(initial=initial)
        return render(request, "companies/my_company.html", {
            "company": company, "form": form, "mdr_form": mdr_form,
            "mdr_complete": contact is not None and contact.is_complete,
            "partner": company.parent if company.parent_id else None,
            "path": company_path_for(company=company, viewer=company),
            "is_admin": request.user.role == Role.COMPANY_ADMIN,
            "network_visible": can_view_network_role(request.user) and network_visible(company, company),
            "events": audit_events_visible(viewer_company=company, company=company)[:50],
        }, status=status)


# --- Accounts ----------------------------------------------------------------------------------------

class AccountListView(PageView):
    page_key = "accounts"

    def get(self, request, invite_form=None, key_form=None, new_key=None, status=200):
        user = request.user
        managed = companies_with_accounts_managed_by(viewer=user.company)
        users = (User.objects.filter(company__in=managed).select_related("company")
                 .order_by("company__lineage", "full_name"))
        return render(request, "companies/accounts.html", {
            "users": users,
            "managed_companies": managed.order_by("lineage"),
            "invite_form": invite_form or InviteForm(initial={"company": user.company_id}),
            "key_form": key_form or ApiKeyForm(),
            "api_keys": ApiKey.objects.filter(company=user.company).order_by("-created_at"),
            "new_key": new_key,
            "roles": Role.choices,
        }, status=status)

    def post(self, request):
        user = request.user
        action = request.POST.get("action")
        if action == "invite":
            form = InviteForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                try:
                    from .access import access_company_accounts

                    company = access_company_accounts(user, data["company"] or user.company_id)
                    services.user_invite(actor=user, company=company, email=data["email"],
                                         full_name=data["full_name"], role=data["role"],
                                         timezone=data["timezone"], language=data["language"])
                except ValidationError as error:
                    apply_service_errors(form, error)
                else:
                    messages.success(request, f"An invitation was sent to {data['email']}.")
                    return redirect("accounts:list")
            return self.get(request, invite_form=form, status=400)
        if action == "create-key":
            form = ApiKeyForm(request.POST)
            if form.is_valid():
                try:
                    key, raw = services.api_key_create(actor=user, company=user.company,
                                                       name=form.cleaned_data["name"],
                                                       scopes=form.cleaned_data["scopes"])
                except ValidationError as error:
                    apply_service_errors(form, error)
                else:
                    # A4: the secret is shown on this response only; it is never stored in clear
                    return self.get(request, new_key=(key, raw))
            return self.get(request, key_form=form, status=400)
        if action == "revoke-key":
            # the key's id; anything that is not a number is a key that does not exist (404, not 500)
            key_id = request.POST.get("key", "")
            key = (ApiKey.objects.filter(company=user.company, pk=int(key_id)).first()
                   if key_id.isascii() and key_id.isdigit() and len(key_id) <= 18 else None)
            if key is None:
                raise Http404
            services.api_key_revoke(actor=user, key=key)
            messages.success(request, f"The API key {key.name} was revoked.")
            return redirect("accounts:list")
        raise Http404


class AccountActionView(PageView):
    page_key = "accounts"

    def post(self, request, user_id: int, action: str):
        target = access_user(request.user, user_id)
        try:
            if action == "deactivate":
                services.user_set_active(actor=request.user, user=target, active=False)
            elif action == "activate":
                services.user_set_active(actor=request.user, user=target, active=True)
            elif action == "reset-two-factor":
                services.user_reset_two_factor(actor=request.user, user=target)
            elif action == "role":
                # the service refuses an unknown role, naming the field
                services.user_update(actor=request.user, user=target, role=request.POST.get("role"))
            else:
                raise Http404
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, message)
        else:
            messages.success(request, f"{target.full_name}: saved.")
        return redirect(reverse("accounts:list"))
