import pytest
from django.core.management import call_command

from companies.management.commands.seed_demo import DEMO_PASSWORD
from companies.models import Company
from licensing.entitlements import effective_own_use, mdr_contact_set
from licensing.models import License
from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _fill_wizard(page, live_server, name):
    page.goto(f"{live_server.url}/companies/add/")
    page.fill("#id_name", name)
    page.check("input[name=type][value=customer]")
    page.click("fieldset[data-step='1'] button[data-next='2']")
    page.click("fieldset[data-step='2'] button[data-next='3']")
    page.check("#id_reserve")
    page.fill("#id_reserved_seats", "10")
    page.check("input[name=own_product][value=endpoint_security]")
    page.check("input[name=own_model][value=secure_plus]")
    page.check("input[name=own_use][value=patch_management]")
    page.check("input[name=own_use][value=full_disk_encryption]")


def test_E2_E5_L1_partner_creates_customer_with_reservation_and_secure_plus(live_server, page):
    call_command("seed_demo", quiet_logins=True)
    contoso = Company.objects.get(name="Contoso MSP")
    mdr_contact_set(actor=None, company=contoso, escalation_phone="")  # incomplete MDR contacts
    sign_in(page, live_server, "admin@contoso.example", DEMO_PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    _fill_wizard(page, live_server, "Northwind Traders")

    # L3: Contoso reserves 200 and Adatum Dental carved 25 of them
    assert page.get_by_test_id("available-to-reserve").first.inner_text() == "175 seats available to reserve"
    # E2: what Secure Plus includes is shown as the user picks
    for key in ("edr", "advanced_threat_security", "mdr_foundations"):
        assert page.locator(f".selection[data-purpose=own] [data-status-for={key}]").inner_text() == \
            "Included in Secure Plus"
        assert page.is_disabled(f"input[name=own_use][value={key}]")
    page.screenshot(path="/tmp/gz-wizard-licensing.png", full_page=True)

    page.click("[data-testid=save-company]")
    error = page.get_by_test_id("license-errors")
    error.wait_for()
    assert "Secure Plus can be resold only by a partner whose MDR contact details are complete" in error.inner_text()
    assert not Company.objects.filter(name="Northwind Traders").exists()  # nothing half-written

    # complete the MDR contact details on My Company, then try again
    page.goto(f"{live_server.url}/companies/mine/")
    page.fill("#id_escalation_phone", "+1 555 0199")
    page.click("[data-testid=save-mdr]")
    page.wait_for_selector("text=MDR contact details saved.")
    assert page.get_by_test_id("mdr-state").inner_text().startswith("Complete")
    _fill_wizard(page, live_server, "Northwind Traders")
    page.click("[data-testid=save-company]")
    page.wait_for_selector("text=Northwind Traders was added.")

    company = Company.objects.get(name="Northwind Traders")
    assert License.objects.get(company=company).reserved_seats == 10
    assert {"secure_plus", "patch_management", "full_disk_encryption", "edr", "mdr_foundations",
            "advanced_threat_security"} <= effective_own_use(company)
    page.goto(f"{live_server.url}/licensing/{company.pk}/")
    assert page.get_by_test_id("seat-source").inner_text() == "10 reserved"
