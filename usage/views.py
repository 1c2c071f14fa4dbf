"""Usage pages: the user's own company (/usage/) and a company below it (/usage/<id>/).

Company-level figures only (C3 lets a partner see them without assist, C2 a reseller-only partner);
the figures are those of the report and of getMonthlyUsage (usage.month_selectors). The open
month's figures refresh themselves while the page is open (htmx), as the rollups run.
"""

from django.shortcuts import render
from django.utils import timezone

from companies.models import CompanyType
from companies.selectors import access_company, company_path_for
from companies.views import PageView

from .forms import UsageMonthForm
from .month_selectors import (
    figure_rows,
    late_rows,
    seat_state_counts,
    usage_children,
    usage_history,
    usage_month_detail,
    usage_months,
)
from .rollups import month_start

REFRESH_SECONDS = 60


class UsageView(PageView):
    page_key = "usage"

    def get(self, request, company_id=None):
        viewer = request.user.company
        # C6: a company outside the user's subtree answers 404, as a missing one does
        company = viewer if company_id is None else access_company(request.user, company_id)
        is_partner = company.type == CompanyType.PARTNER
        months = usage_months(company=company, viewer=viewer)
        form = UsageMonthForm(request.GET or None, months=months, is_partner=is_partner)
        month, scope = month_start(timezone.now()), ("subtree" if is_partner else "company")
        invalid = form.is_bound and not form.is_valid()  # X2: 400 naming the field; the current month is shown
        if form.is_bound and not invalid:
            month = form.cleaned_data["month"] or month
            scope = form.cleaned_data.get("scope") or scope
        subtree = scope == "subtree"
        detail = usage_month_detail(company=company, month=month, subtree=subtree, viewer=viewer)
        context = {
            "company": company,
            "own": company.pk == viewer.pk,
            "path": company_path_for(company=company, viewer=viewer),
            "form": form,
            "detail": detail,
            "rows": figure_rows(detail),
            "late_rows": late_rows(detail),
            "seats": seat_state_counts(company=company, subtree=subtree),
            "history": usage_history(company=company, subtree=subtree, viewer=viewer),
            "children": usage_children(company=company, month=month, viewer=viewer) if is_partner else [],
            "children_total": company.children.count() if is_partner else 0,
            "scope": scope,
            "refresh_seconds": REFRESH_SECONDS if detail["status"] == "open" and not invalid else None,
        }
        status = 400 if invalid else 200
        if request.headers.get("HX-Request"):
            return render(request, "usage/_figures.html", context, status=status)
        return render(request, "usage/index.html", context, status=status)
