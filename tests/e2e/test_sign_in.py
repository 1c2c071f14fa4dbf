import pytest
from django.core.management import call_command

from companies.management.commands.seed_demo import DEMO_PASSWORD
from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_demo_partner_signs_in_and_sees_dashboard(live_server, page):
    call_command("seed_demo", quiet_logins=True)
    sign_in(page, live_server, "admin@contoso.example", DEMO_PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    assert page.get_by_test_id("dashboard-company").inner_text() == "Contoso MSP"
    # Contoso MSP has two customers in the demo tree
    assert page.get_by_test_id("customers-below").inner_text() == "2"
    nav = page.locator("nav[aria-label=Main] a").all_inner_texts()
    assert nav == ["Dashboard", "Companies", "Licensing", "Usage", "Reports", "Integrations", "My Company",
                   "Accounts"]
    page.screenshot(path="/tmp/gz-dashboard.png")


def test_C6_browser_cannot_open_another_companys_page_by_url(live_server, page):
    from companies.models import Company

    call_command("seed_demo", quiet_logins=True)
    foreign = Company.objects.get(name="Coho Winery")  # a Fabrikam customer
    sign_in(page, live_server, "admin@contoso.example", DEMO_PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    response = page.goto(f"{live_server.url}/companies/{foreign.pk}/")
    assert response.status == 404
    assert "Coho Winery" not in page.content()


def test_wrong_password_shows_clear_error(live_server, page):
    call_command("seed_demo", quiet_logins=True)
    sign_in(page, live_server, "admin@contoso.example", "not-the-password")
    assert page.get_by_role("alert").inner_text().startswith("Please enter a correct email and password")
