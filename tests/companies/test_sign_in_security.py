"""Sign-in security: throttled failures (A1, X2) and the invitation link that sets a password (A1)."""

import re
import secrets

import pytest
from django.urls import reverse

from companies import throttle
from companies.models import CompanyStatus
from companies.services import company_set_status, user_invite
from tests.factories import PASSWORD, make_company, make_user

pytestmark = pytest.mark.django_db

SIGN_IN = reverse("accounts:sign-in")
WRONG = "not-the-password-1"  # noqa: S105

# Counters live in the shared Redis for a whole window, and other runs of the suite may use it at
# the same time: every test signs in from addresses and with emails nobody else uses, and clears
# what it counted.
_counted: list[tuple[str, str]] = []


def _unique_address() -> str:
    value = f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"  # documentation range
    _counted.append((throttle.SIGN_IN_ADDRESS, value))
    return value


def _unique_email() -> str:
    value = f"sign-in-{secrets.token_hex(6)}@example.test"
    _counted.append((throttle.SIGN_IN_ACCOUNT, value))
    return value


@pytest.fixture(autouse=True)
def _clear_counters():
    yield
    while _counted:
        scope, value = _counted.pop()
        throttle.failures_clear(scope=scope, value=value)


@pytest.fixture
def address():
    return _unique_address()


@pytest.fixture
def user(platform):
    return make_user(company=make_company(parent=platform), email=_unique_email())


def _post(client, address: str, email: str, password: str):
    return client.post(SIGN_IN, {"username": email, "password": password}, REMOTE_ADDR=address)


def _errors(response) -> list[str]:
    return response.context["form"].non_field_errors()


def test_A1_correct_password_signs_in(client, user, address):
    response = _post(client, address, user.email, PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")


def test_A1_email_is_matched_whatever_its_case(client, user, address):
    assert _post(client, address, user.email.upper(), PASSWORD).status_code == 302


def test_A1_account_lockout_refuses_even_the_correct_password(client, user, address, settings):
    settings.SIGN_IN_MAX_FAILURES_PER_ACCOUNT = 3
    for _ in range(3):
        response = _post(client, address, user.email, WRONG)
        assert _errors(response)[0].startswith("Please enter a correct email and password")
    response = _post(client, address, user.email, PASSWORD)
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    message = _errors(response)[0]
    assert message.startswith("Too many failed sign-ins for this account")
    assert message.endswith("Try again in about 60 minutes.")
    assert message in response.content.decode()


def test_A1_account_lockout_follows_the_account_not_the_address(client, user, address, settings):
    settings.SIGN_IN_MAX_FAILURES_PER_ACCOUNT = 2
    _post(client, address, user.email, WRONG)
    _post(client, _unique_address(), user.email.upper(), WRONG)
    response = _post(client, address, user.email, PASSWORD)
    assert _errors(response)[0].startswith("Too many failed sign-ins for this account")


def test_A1_below_the_limit_the_correct_password_still_works(client, user, address, settings):
    settings.SIGN_IN_MAX_FAILURES_PER_ACCOUNT = 3
    for _ in range(2):
        _post(client, address, user.email, WRONG)
    assert _post(client, address, user.email, PASSWORD).status_code == 302


def test_A1_address_lockout_covers_every_account(client, platform, user, address, settings):
    settings.SIGN_IN_MAX_FAILURES_PER_ADDRESS = 3
    company = user.company
    guessed = [make_user(company=company, email=_unique_email()) for _ in range(3)]
    for victim in guessed:
        _post(client, address, victim.email, WRONG)
    # a fourth account, never guessed, is refused from that address too
    response = _post(client, address, user.email, PASSWORD)
    assert response.status_code == 200
    message = _errors(response)[0]
    assert message.startswith("Too many failed sign-ins from your network address")
    assert message.endswith("Try again in about 60 minutes.")
    # ...and signs in from another address
    assert _post(client, _unique_address(), user.email, PASSWORD).status_code == 302


def test_A1_unknown_email_is_locked_out_with_the_same_message(client, address, settings):
    # the message must not tell which emails have an account
    settings.SIGN_IN_MAX_FAILURES_PER_ACCOUNT = 1
    email = _unique_email()
    _post(client, address, email, WRONG)
    response = _post(client, address, email, WRONG)
    assert _errors(response)[0].startswith("Too many failed sign-ins for this account")


def test_A1_failure_window_comes_from_settings(user, address, settings):
    throttle.sign_in_failure_record(email=user.email, address=address)
    lockout = throttle.lockout_check(scope=throttle.SIGN_IN_ACCOUNT, value=user.email, limit=1,
                                     window=settings.SIGN_IN_FAILURE_WINDOW_SECONDS)
    assert lockout is not None
    assert lockout.minutes_left == settings.SIGN_IN_FAILURE_WINDOW_SECONDS // 60


def test_H4_suspended_company_user_cannot_sign_in(client, user, address):
    company_set_status(actor=None, company=user.company, status=CompanyStatus.SUSPENDED)
    response = _post(client, address, user.email, PASSWORD)
    assert response.status_code == 200
    assert _errors(response)[0].startswith("Please enter a correct email and password")


def test_A1_invitation_link_sets_the_password_and_the_user_signs_in(
        client, platform, address, settings, mailoutbox, django_capture_on_commit_callbacks):
    company = make_company(parent=platform)
    email = _unique_email()
    with django_capture_on_commit_callbacks(execute=True):
        invited = user_invite(actor=None, company=company, email=email.upper(), full_name="New Person")
    assert invited.email == email
    assert not invited.has_usable_password()
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == [email]
    link = re.search(r"https?://\S+/accounts/set-password/\S+/", mailoutbox[0].body).group(0)
    path = link.removeprefix(settings.CONSOLE_URL)

    # the token moves from the URL into the session, then the form is shown
    form_page = client.get(path, follow=True)
    assert form_page.context["validlink"] is True
    new_password = "a-long-new-password-42"  # noqa: S105
    response = client.post(form_page.redirect_chain[-1][0],
                           {"new_password1": new_password, "new_password2": new_password})
    assert response.status_code == 302
    assert response["Location"] == SIGN_IN

    response = _post(client, address, email, new_password)
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
    assert client.get(reverse("dashboard")).status_code == 200

    # the link works once
    client.post(reverse("accounts:sign-out"))
    assert client.get(path, follow=True).context["validlink"] is False


def test_A1_X2_invitation_password_too_short_is_refused_naming_the_field(
        client, platform, settings, mailoutbox, django_capture_on_commit_callbacks):
    company = make_company(parent=platform)
    with django_capture_on_commit_callbacks(execute=True):
        invited = user_invite(actor=None, company=company, email=_unique_email(), full_name="Short")
    link = re.search(r"https?://\S+/accounts/set-password/\S+/", mailoutbox[0].body).group(0)
    form_page = client.get(link.removeprefix(settings.CONSOLE_URL), follow=True)
    response = client.post(form_page.redirect_chain[-1][0],
                           {"new_password1": "short-1", "new_password2": "short-1"})
    assert response.status_code == 200
    assert "new_password2" in response.context["form"].errors
    invited.refresh_from_db()
    assert not invited.has_usable_password()
