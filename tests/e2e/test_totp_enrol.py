import time

import pyotp
import pytest

from companies import throttle, twofactor
from companies.services import company_set_two_factor
from tests.e2e.conftest import sign_in
from tests.factories import PASSWORD, make_company, make_user

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_A3_enforced_user_enrols_with_authenticator_code_and_reaches_dashboard(live_server, page):
    company = make_company(name="Tailspin Toys")
    user = make_user(company=company)
    company_set_two_factor(actor=user, company=company, enforce=True)

    sign_in(page, live_server, user.email, PASSWORD)
    page.wait_for_url(f"{live_server.url}/accounts/two-factor/enrol/**")
    assert page.locator(".qr svg").is_visible()  # the QR code, drawn inline
    totp = pyotp.TOTP(page.get_by_test_id("totp-secret").inner_text().strip())

    valid = {totp.at(time.time() + offset) for offset in (-30, 0, 30)}
    page.fill("#id_code", next(code for code in ("000000", "111111", "222222") if code not in valid))
    page.click("#two-factor-form button[type=submit]")
    assert page.locator(".error[data-field=code]").inner_text().startswith("This code is not correct.")

    page.fill("#id_code", totp.now())
    page.click("#two-factor-form button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert page.get_by_test_id("dashboard-company").inner_text() == "Tailspin Toys"
    user.refresh_from_db()
    assert user.totp_confirmed_at is not None
    throttle.failures_clear(scope=twofactor.CODE_FAILURES, value=str(user.pk))
