from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import redirect, render

from companies.access import can_manage_company, in_subtree
from companies.company_forms import apply_service_errors
from companies.selectors import access_company, company_path_for, company_subtree
from companies.views import PageView

from .forms import LicenseForm
from .models import CatalogItem, ItemKind, ModelRule, SeatState
from .services import license_update, licensing_summary


def catalogue_for_page(*, allowed: set[str] | None) -> dict:
    """The catalogue as the selection widget's script reads it: items, model rules and what the
    partner makes available (None: everything)."""
    items = list(CatalogItem.objects.select_related("parent").order_by("kind", "rank"))
    rules = {}
    for model_key, item_key, relation in ModelRule.objects.values_list("protection_model__key", "item__key",
                                                                        "relation"):
        rules.setdefault(model_key, {"includes": [], "excludes": []})[relation].append(item_key)
    return {
        "items": [{"key": i.key, "name": i.name, "kind": i.kind, "parent": i.parent.key if i.parent else None,
                   "description": i.description} for i in items],
        "rules": rules,
        "allowed": sorted(allowed) if allowed is not None else None,
        "kinds": dict(ItemKind.choices),
    }


def parent_resell_keys(parent) -> set[str] | None:
    """What `parent` makes available to a company under it (None for the platform: everything)."""
    from .entitlements import selection_of
    from .models import Purpose

    return None if parent.parent_id is None else selection_of(company=parent, purpose=Purpose.RESELL).keys


class LicensingOverviewView(PageView):
    """Seats and subscriptions of the companies below the partner."""

    page_key = "licensing"

    def get(self, request):
        companies = (company_subtree(company=request.user.company, include_self=False)
                     .select_related("license")
                     .annotate(seats_in_use=Count("seat_assignments",
                                                  filter=Q(seat_assignments__state=SeatState.LICENSED)),
                               trials=Count("seat_assignments", filter=Q(seat_assignments__state=SeatState.TRIAL)))
                     .order_by("lineage"))
        page = Paginator(companies, 50).get_page(request.GET.get("page"))
        own = licensing_summary(company=request.user.company)
        return render(request, "licensing/overview.html", {
            "page": page, "own": own, "company": request.user.company,
            # C6: a pool owned above the viewer (its partner, the platform) is neither named nor counted
            "own_pool_in_view": in_subtree(request.user.company, own["pool_owner"])})


class CompanyLicensingView(PageView):
    """One company's Licensing page: reservation, pool, trials, subscription, selections."""

    page_key = "licensing"

    def _company(self, request, company_id):
        company = access_company(request.user, company_id)
        editable = can_manage_company(request.user, company)
        return company, editable

    def get(self, request, company_id: int):
        company, editable = self._company(request, company_id)
        return self._render(request, company, editable, self._initial_form(company))

    def post(self, request, company_id: int):
        company, editable = self._company(request, company_id)
        if not editable:
            raise Http404
        form = LicenseForm(request.POST)
        if form.is_valid():
            try:
                license_update(actor=request.user, company=company, **form.service_arguments())
            except ValidationError as error:
                apply_service_errors(form, error)
            else:
                messages.success(request, f"Licensing of {company.name} was saved.")
                return redirect("licensing:company", company.pk)
        return self._render(request, company, editable, form, status=400)

    @staticmethod
    def _initial_form(company):
        summary = licensing_summary(company=company)
        lic, own = summary["license"], summary["own_use"].keys
        kinds = dict(CatalogItem.objects.values_list("key", "kind"))
        return LicenseForm(initial={
            "reserve": lic.reserved_seats is not None, "reserved_seats": lic.reserved_seats,
            "has_end_date": lic.end_date is not None, "end_date": lic.end_date, "auto_renew": lic.auto_renew,
            "renew_months": lic.renew_months, "has_minimum": lic.minimum_usage is not None,
            "minimum_usage": lic.minimum_usage,
            "own_product": next((k for k in own if kinds.get(k) == ItemKind.PRODUCT_TYPE), ""),
            "own_model": next((k for k in own if kinds.get(k) == ItemKind.PROTECTION_MODEL), ""),
            "own_use": [k for k in own if kinds.get(k) not in (ItemKind.PRODUCT_TYPE, ItemKind.PROTECTION_MODEL)],
            "resell": sorted(summary["resell"].keys) if summary["resell"] else [],
        })

    def _render(self, request, company, editable, form, status=200):
        summary = licensing_summary(company=company, viewer=request.user.company)
        return render(request, "licensing/company.html", {
            "company": company, "editable": editable, "form": form, **summary,
            "pool_in_view": in_subtree(request.user.company, summary["pool_owner"]),
            "path": company_path_for(company=company, viewer=request.user.company),
            "catalogue": catalogue_for_page(allowed=summary["parent_resell"]),
            "selected": {
                "own": sorted(set(form["own_use"].value() or []) | {form["own_product"].value() or "",
                                                                    form["own_model"].value() or ""} - {""}),
                "resell": sorted(form["resell"].value() or []),
            },
        }, status=status)


