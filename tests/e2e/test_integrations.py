"""B1/B4 in the browser: a partner configures ConnectWise, maps a company with a wrong-case agreement
type, sees the mismatch explained, fixes it, and sees a successful sync in the log."""

import datetime as dt

import pytest

from integrations.models import PsaConnection
from tests.e2e.conftest import sign_in
from tests.factories import PASSWORD, make_company, make_partner, make_user
from tests.integrations.conftest import set_active
from tests.integrations.fake_connectwise import FakeConnectWise, serve

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cw():
    fake = FakeConnectWise()
    server, thread = serve(fake)
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_B1_B4_partner_configures_maps_fixes_case_and_syncs(live_server, page, platform, cw):
    from companies.services import platform_ensure

    partner = make_partner(parent=platform_ensure(), name="Kappa MSP")
    admin = make_user(company=partner, email="admin@kappa.example")
    alpha = make_company(parent=partner, name="Alpha Dental")
    month = dt.datetime.now(dt.UTC).date().replace(day=1)
    set_active(alpha, month, 12)
    cw_alpha = cw.add_company("AlphaDental", "Alpha Dental")
    agreement = cw.add_agreement(cw_alpha, "Managed Security")
    cw.add_product("GZ-ENDPOINT")

    sign_in(page, live_server, admin.email, PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.click("[data-nav=integrations]")
    page.fill("#id_site", cw.url)
    page.fill("#id_psa_company_id", cw.company_id)
    page.fill("#id_public_key", cw.public_key)
    page.fill("#id_private_key", cw.private_key)
    page.fill("#id_client_id", cw.client_id)
    page.click("[data-testid=save-connection]")
    page.wait_for_selector("text=The ConnectWise connection was saved.")
    assert page.input_value("#id_private_key") == ""  # never shown again
    assert cw.private_key not in PsaConnection.objects.get().private_key_encrypted

    page.click("[data-testid=test-connection]")
    assert "signed in, version v2025.1.12345" in page.get_by_test_id("test-result").inner_text()

    row = page.locator(f"[data-testid=mapping-{alpha.pk}]")
    row.locator("[data-field=psa_company]").fill("AlphaDental")
    row.locator("[data-field=agreement_type]").fill("managed security")
    row.locator("[data-field=product_identifier]").fill("GZ-ENDPOINT")
    row.get_by_test_id("save-mapping").click()
    row = page.locator(f"[data-testid=mapping-{alpha.pk}]")
    state = row.get_by_test_id("mapping-state")
    state.wait_for()
    assert state.get_attribute("data-state") == "agreement_not_found"
    assert 'Names are case-sensitive: ConnectWise has "Managed Security"' in state.inner_text()
    page.screenshot(path="/tmp/gz-integrations-mismatch.png", full_page=True)

    row.locator("[data-field=agreement_type]").fill("Managed Security")
    row.get_by_test_id("save-mapping").click()
    row = page.locator(f"[data-testid=mapping-{alpha.pk}]")
    assert row.get_by_test_id("mapping-state").get_attribute("data-state") == "ok"

    row.get_by_test_id("sync-now").click()
    page.wait_for_selector("text=12 endpoints sent")
    log_row = page.locator("[data-testid=sync-log] tr[data-outcome=ok]").first
    assert "Alpha Dental" in log_row.inner_text() and "created addition" in log_row.inner_text()
    assert page.locator(f"[data-testid=mapping-{alpha.pk}] [data-testid=sent-quantity]").inner_text().startswith("12")
    assert [a["quantity"] for a in cw.additions[agreement["id"]]] == [12]
    page.screenshot(path="/tmp/gz-integrations-synced.png", full_page=True)
