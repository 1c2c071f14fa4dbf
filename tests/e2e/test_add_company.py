import pytest
from django.core.management import call_command

from companies.management.commands.seed_demo import DEMO_PASSWORD
from companies.models import Company, User
from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_A1_C3_partner_adds_customer_with_primary_account_then_stops_assisting(live_server, page):
    call_command("seed_demo", quiet_logins=True)
    sign_in(page, live_server, "admin@contoso.example", DEMO_PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.click("nav >> text=Companies")
    page.click("[data-testid=add-company]")

    # step 1: company details
    page.fill("#id_name", "Wide World Importers")
    page.check("input[name=type][value=customer]")
    assert page.is_disabled("#id_manages_security") and page.is_checked("#id_manages_security")  # C1
    page.select_option("#id_country", "NL")
    page.select_option("#id_field_of_activity", "retail")
    page.check("#id_add_primary_account")
    page.fill("#id_primary_full_name", "Wendy Importer")
    page.fill("#id_primary_email", "wendy@wideworld.example")
    page.select_option("#id_primary_timezone", "Europe/Amsterdam")
    page.click("fieldset[data-step='1'] button[data-next='2']")
    # step 2: authentication
    assert page.is_visible("#id_enforce_two_factor")
    page.click("fieldset[data-step='2'] button[data-next='3']")
    # step 3: licensing, then save
    page.click("[data-testid=save-company]")

    page.wait_for_selector("text=Wide World Importers was added.")
    company = Company.objects.get(name="Wide World Importers")
    assert company.parent.name == "Contoso MSP" and company.country == "NL"
    assert User.objects.get(email="wendy@wideworld.example").company == company

    page.click("nav >> text=Companies")
    row = page.locator(f"tr[data-company='{company.pk}']")
    assert "Contoso MSP / Wide World Importers" in row.inner_text()

    page.goto(f"{live_server.url}/companies/{company.pk}/")
    assert page.is_visible("[data-testid=network-link]")
    page.click("[data-testid=assist-off]")
    page.wait_for_selector("[data-testid=network-hidden]")
    assert page.locator("[data-testid=assist]").inner_text() == "No"
    assert not page.is_visible("[data-testid=network-link]")
    response = page.goto(f"{live_server.url}/companies/{company.pk}/network/")
    assert response.status == 404
    page.goto(f"{live_server.url}/accounts/")
    assert "wendy@wideworld.example" not in page.content()


def test_X2_wizard_shows_errors_on_the_step_that_has_them(live_server, page):
    call_command("seed_demo", quiet_logins=True)
    sign_in(page, live_server, "admin@contoso.example", DEMO_PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/companies/add/")
    page.fill("#id_name", "Adatum Dental")  # already a Contoso customer in the demo data
    page.click("fieldset[data-step='1'] button[data-next='2']")
    page.click("fieldset[data-step='2'] button[data-next='3']")
    page.click("[data-testid=save-company]")
    error = page.locator("fieldset[data-step='1'] [data-field=name]")
    error.wait_for()
    assert error.inner_text() == "Contoso MSP already has a company named Adatum Dental."
    assert page.is_visible("fieldset[data-step='1']")
