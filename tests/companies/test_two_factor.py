"""A3: TOTP enrolment and verification, and the middleware that holds a session until it has a code."""

import time

import pyotp
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from freezegun import freeze_time

from companies import throttle, twofactor
from companies.models import AuditEvent, User
from companies.services import company_set_two_factor, user_reset_two_factor
from companies.twofactor import (
    two_factor_enrol_confirm,
    two_factor_enrol_start,
    two_factor_verify,
)
from tests.factories import PASSWORD, make_company, make_user

pytestmark = pytest.mark.django_db

ENROL = reverse("accounts:two-factor-enrol")
VERIFY = reverse("accounts:two-factor-verify")


@pytest.fixture
def enforced(platform):
    company = make_company(parent=platform)
    admin = make_user(company=company)
    company_set_two_factor(actor=admin, company=company, enforce=True)
    user = make_user(company=company)
    yield user
    # the code-failure counter lives in the shared Redis: leave nothing for the next run
    throttle.failures_clear(scope=twofactor.CODE_FAILURES, value=str(user.pk))


def _sign_in(client, user: User):
    response = client.post(reverse("accounts:sign-in"), {"username": user.email, "password": PASSWORD})
    assert response.status_code == 302
    return response


def _wrong_code(totp: pyotp.TOTP) -> str:
    """A code no step of the accepted window has."""
    now = time.time()
    valid = {totp.at(now + offset) for offset in (-30, 0, 30)}
    return next(code for n in range(1000) if (code := f"{n:06d}") not in valid)


def _enrolled(user: User) -> pyotp.TOTP:
    secret = two_factor_enrol_start(user=user)
    totp = pyotp.TOTP(secret)
    # a code from the previous step, so the test can still use the current one afterwards
    two_factor_enrol_confirm(user=user, code=totp.at(time.time() - 30))
    return totp


def test_A3_enforced_company_user_must_enrol_before_any_page(client, enforced):
    _sign_in(client, enforced)
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302
    assert response["Location"] == f"{ENROL}?next=%2F"
    page = client.get(response["Location"])
    assert page.status_code == 200
    enforced.refresh_from_db()
    # the page shows the pending secret as text and as a QR code of the provisioning URI
    assert enforced.totp_secret and enforced.totp_secret in page.content.decode()
    assert "<svg" in page.content.decode()
    assert enforced.totp_confirmed_at is None


def test_A3_company_without_enforcement_goes_straight_to_dashboard(client, platform):
    user = make_user(company=make_company(parent=platform))
    _sign_in(client, user)
    assert client.get(reverse("dashboard")).status_code == 200


def test_A3_provisioning_uri_names_issuer_and_account(enforced):
    two_factor_enrol_start(user=enforced)
    uri = twofactor.two_factor_provisioning_uri(user=enforced)
    parsed = pyotp.parse_uri(uri)
    assert parsed.issuer == "GZ Console"
    assert parsed.name == enforced.email
    assert parsed.secret == enforced.totp_secret


def test_A3_enrol_start_keeps_the_pending_secret(enforced):
    # a reload must not invalidate a QR code the user already scanned
    assert two_factor_enrol_start(user=enforced) == two_factor_enrol_start(user=enforced)


def test_A3_enrolment_with_a_real_code_opens_the_next_page(client, enforced):
    _sign_in(client, enforced)
    client.get(f"{ENROL}?next=/companies/mine/")
    enforced.refresh_from_db()
    code = pyotp.TOTP(enforced.totp_secret).now()
    response = client.post(ENROL, {"code": code, "next": "/companies/mine/"})
    assert response.status_code == 302
    assert response["Location"] == "/companies/mine/"
    enforced.refresh_from_db()
    assert enforced.totp_confirmed_at is not None
    assert client.get(reverse("dashboard")).status_code == 200
    event = AuditEvent.objects.get(action="user.enrol_two_factor", object_id=str(enforced.pk))
    assert event.after == {"two_factor": "on"}


def test_A3_enrolment_next_must_be_on_this_site(client, enforced):
    _sign_in(client, enforced)
    client.get(ENROL)
    enforced.refresh_from_db()
    response = client.post(ENROL, {"code": pyotp.TOTP(enforced.totp_secret).now(),
                                   "next": "https://evil.example/"})
    assert response["Location"] == reverse("dashboard")


def test_A3_wrong_code_is_refused_naming_the_field(client, enforced):
    _sign_in(client, enforced)
    client.get(ENROL)
    enforced.refresh_from_db()
    response = client.post(ENROL, {"code": _wrong_code(pyotp.TOTP(enforced.totp_secret))})
    assert response.status_code == 200
    assert response.context["form"].errors["code"][0].startswith("This code is not correct.")
    assert 'class="error" role="alert" data-field="code"' in response.content.decode()
    enforced.refresh_from_db()
    assert enforced.totp_confirmed_at is None


@pytest.mark.parametrize("code", ["12345", "abcdef", "1234567"])
def test_A3_X2_malformed_code_is_refused_naming_the_field(enforced, code):
    two_factor_enrol_start(user=enforced)
    with pytest.raises(ValidationError) as caught:
        two_factor_enrol_confirm(user=enforced, code=code)
    assert caught.value.message_dict == {"code": ["Enter the 6-digit code shown in your authenticator app."]}


@freeze_time("2026-03-02 09:00:10")
def test_A3_code_one_step_either_side_is_accepted_two_steps_is_not(enforced):
    totp = _enrolled(enforced)  # with the code of the step before
    now = time.time()
    with pytest.raises(ValidationError, match="not correct"):
        two_factor_verify(user=enforced, code=totp.at(now - 60))
    with pytest.raises(ValidationError, match="not correct"):
        two_factor_verify(user=enforced, code=totp.at(now + 60))
    two_factor_verify(user=enforced, code=totp.at(now + 30))
    enforced.refresh_from_db()
    assert enforced.totp_last_step == totp.timecode(now) + 1


def test_A3_used_code_is_refused(client, enforced):
    totp = _enrolled(enforced)
    code = totp.now()
    _sign_in(client, enforced)
    assert client.get(reverse("dashboard"))["Location"] == f"{VERIFY}?next=%2F"
    assert client.post(VERIFY, {"code": code})["Location"] == "/"
    other = client.__class__()
    _sign_in(other, enforced)
    response = other.post(VERIFY, {"code": code})
    assert response.status_code == 200
    assert response.context["form"].errors["code"][0].startswith("This code was already used.")
    assert other.get(reverse("dashboard")).status_code == 302


@freeze_time("2026-03-02 09:00:10")
def test_A3_code_before_the_enrolment_code_is_refused_as_used(enforced):
    totp = _enrolled(enforced)  # enrolled with the previous step's code
    with pytest.raises(ValidationError, match="already used"):
        two_factor_verify(user=enforced, code=totp.at(time.time() - 30))


def test_A3_user_who_turned_it_on_is_asked_even_without_enforcement(client, platform):
    user = make_user(company=make_company(parent=platform))
    _enrolled(user)
    _sign_in(client, user)
    assert client.get(reverse("dashboard"))["Location"] == f"{VERIFY}?next=%2F"


def test_A3_enrolled_user_cannot_replace_the_secret_without_a_code(client, enforced):
    _enrolled(enforced)
    secret = User.objects.get(pk=enforced.pk).totp_secret
    _sign_in(client, enforced)
    response = client.get(ENROL)
    assert response["Location"].startswith(VERIFY)
    with pytest.raises(ValidationError):
        two_factor_enrol_start(user=enforced)
    assert User.objects.get(pk=enforced.pk).totp_secret == secret


def test_A3_reset_makes_the_user_enrol_again(client, enforced):
    old = _enrolled(enforced)
    admin = enforced.company.users.exclude(pk=enforced.pk).get()
    user_reset_two_factor(actor=admin, user=enforced)
    _sign_in(client, enforced)
    assert client.get(reverse("dashboard"))["Location"] == f"{ENROL}?next=%2F"
    client.get(ENROL)
    enforced.refresh_from_db()
    assert enforced.totp_secret and enforced.totp_secret != old.secret
    response = client.post(ENROL, {"code": pyotp.TOTP(enforced.totp_secret).now()})
    assert response["Location"] == reverse("dashboard")


def test_A3_api_path_answers_403_json_not_a_redirect(client, enforced):
    _sign_in(client, enforced)
    response = client.get("/api/schema/")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert "Two-factor authentication is required" in response.json()["detail"]


def test_A3_htmx_request_is_sent_to_the_enrol_page_whole(client, enforced):
    _sign_in(client, enforced)
    response = client.get("/companies/?page=2", headers={
        "HX-Request": "true", "HX-Current-URL": "http://testserver/companies/mine/?tab=users"})
    assert response.status_code == 204
    assert response["HX-Redirect"] == f"{ENROL}?next=%2Fcompanies%2Fmine%2F%3Ftab%3Dusers"


def test_A3_sign_out_and_health_stay_reachable(client, enforced):
    _sign_in(client, enforced)
    # 503 without a Celery worker here; what matters is that it answers, not redirects
    assert client.get(reverse("healthz")).status_code in {200, 503}
    response = client.post(reverse("accounts:sign-out"))
    assert response["Location"] == reverse("accounts:sign-in")
    assert client.get(reverse("dashboard"))["Location"].startswith(reverse("accounts:sign-in"))


def test_A3_repeated_wrong_codes_lock_the_code_check(enforced, settings):
    totp = _enrolled(enforced)
    wrong = _wrong_code(totp)
    for _ in range(twofactor.MAX_CODE_FAILURES):
        with pytest.raises(ValidationError, match="not correct"):
            two_factor_verify(user=enforced, code=wrong)
    with pytest.raises(ValidationError) as caught:
        two_factor_verify(user=enforced, code=totp.now())
    message = caught.value.message_dict["code"][0]
    assert message.startswith("Too many wrong codes for this account. Try again in about ")
    assert message.endswith(f"{settings.SIGN_IN_FAILURE_WINDOW_SECONDS // 60} minutes.")
