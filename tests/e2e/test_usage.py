"""The Usage pages in a browser, on the demo data (its fleet came through the agent services)."""

import datetime as dt

import pytest
from django.core.management import call_command

from companies.management.commands.seed_demo import DEMO_PASSWORD
from companies.models import Company
from tests.e2e.conftest import sign_in
from usage.models import CompanyMonthUsage
from usage.rollups import month_start

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def cell(page, key: str) -> str:
    return page.locator(f"[data-testid=usage-table] tr[data-figure={key}] td").inner_text().strip()


def test_R7_U13_customer_and_partner_usage_pages(live_server, page):
    call_command("seed_demo", quiet_logins=True)
    adatum = Company.objects.get(name="Adatum Dental")
    current = month_start(dt.datetime.now(dt.UTC))
    previous = month_start(current - dt.timedelta(days=1))
    now_row = CompanyMonthUsage.objects.get(company=adatum, month=current)
    last_row = CompanyMonthUsage.objects.get(company=adatum, month=previous)
    assert now_row.active_endpoints == 12  # the demo fleet

    # the customer's own page: the month so far
    sign_in(page, live_server, "admin@adatum.example", DEMO_PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.click("nav[aria-label=Main] a[data-nav=usage]")
    page.wait_for_url(f"{live_server.url}/usage/")
    assert page.locator("h1").inner_text() == "Usage of Adatum Dental"
    assert "Month so far" in page.get_by_test_id("usage-status").inner_text()
    assert cell(page, "licensed_endpoints") == str(now_row.licensed_endpoints)
    assert cell(page, "endpoint_usage") == str(now_row.endpoint_usage)
    assert cell(page, "patch_management") == str(now_row.patch_management)
    assert cell(page, "container_protection") == "Not enabled"
    assert page.locator("[data-testid=usage-seats] [data-state=licensed]").inner_text() == "12"
    page.screenshot(path="/tmp/gz-usage-customer.png", full_page=True)

    # the month picker: last month
    page.select_option("#id_month", f"{previous:%Y-%m}")
    page.click("[data-testid=month-picker] button[type=submit]")
    page.wait_for_url(f"**/usage/?month={previous:%Y-%m}")
    assert cell(page, "endpoint_usage") == str(last_row.endpoint_usage)
    assert "has ended" in page.get_by_test_id("usage-status").inner_text()

    # the partner opens the customer from its own page; a Fabrikam customer is not its to see (C6)
    page.context.clear_cookies()
    sign_in(page, live_server, "admin@contoso.example", DEMO_PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/usage/")
    assert cell(page, "endpoint_usage") == str(now_row.endpoint_usage)  # Adatum is Contoso's only fleet
    page.click(f"[data-testid=usage-children] tr[data-company='{adatum.pk}'] a")
    page.wait_for_url(f"**/usage/{adatum.pk}/**")
    assert page.locator("h1").inner_text() == "Usage of Adatum Dental"
    assert cell(page, "licensed_endpoints") == str(now_row.licensed_endpoints)
    coho = Company.objects.get(name="Coho Winery")
    response = page.goto(f"{live_server.url}/usage/{coho.pk}/")
    assert response.status == 404 and "Coho Winery" not in page.content()
