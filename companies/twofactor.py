"""A3: two-factor authentication with TOTP (RFC 6238), enforced per company.

The services enrol a user and check codes; the middleware keeps a signed-in user who needs a code
on the enrol or verify page until the session has passed one; the two views are those pages.
Views live here rather than in views.py so that everything the second step depends on is read in
one place.
"""

import hmac
from urllib.parse import urlsplit, urlunsplit

import pyotp
import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views import View

from . import throttle
from .audit import audit_record
from .forms import TwoFactorCodeForm
from .models import User

ISSUER = "GZ Console"
SESSION_KEY = "two_factor_verified"  # holds the pk of the user whose code this session passed
# one 30-second step either side: a phone whose clock drifts a little, or a code typed as it
# changes, still works
VALID_WINDOW = 1
CODE_DIGITS = 6
# a code has 10^6 values and three are valid at a time: this many wrong codes per window keeps
# guessing hopeless even for someone who has the password
MAX_CODE_FAILURES = 10
CODE_FAILURES = "two-factor-code"


# --- services ----------------------------------------------------------------------------------------

def two_factor_required(*, user: User) -> bool:
    """The user's company enforces it, or the user turned it on for their own account."""
    return user.company.enforce_two_factor or user.totp_confirmed_at is not None


def two_factor_provisioning_uri(*, user: User) -> str:
    return pyotp.TOTP(user.totp_secret).provisioning_uri(name=user.email, issuer_name=ISSUER)


def two_factor_qr_svg(*, user: User) -> str:
    """The provisioning URI as an inline SVG QR code (no image request, nothing stored)."""
    qr = segno.make(two_factor_provisioning_uri(user=user), error="m")
    return qr.svg_inline(scale=5, border=2, title="QR code for your authenticator app")


@transaction.atomic
def two_factor_enrol_start(*, user: User) -> str:
    """The secret the user enrols with. A pending secret is kept, so that reloading the page does
    not invalidate a QR code the user has already scanned."""
    locked = User.objects.select_for_update().get(pk=user.pk)
    if locked.totp_confirmed_at is not None:
        # replacing a confirmed secret here would let a session without a code drop the second step
        raise ValidationError({NON_FIELD_ERRORS: (
            "Two-factor authentication is already set up for this account. "
            "An administrator can reset it if you lost your authenticator app.")})
    if not locked.totp_secret:
        locked.totp_secret = pyotp.random_base32()
        locked.save(update_fields=["totp_secret"])
    user.totp_secret = locked.totp_secret
    return locked.totp_secret


def _code_step(*, secret: str, code: str, last_step: int) -> int:
    """The time step the code belongs to; refuses a malformed, wrong or already used code."""
    code = "".join((code or "").split())
    if len(code) != CODE_DIGITS or not code.isdigit():
        raise ValidationError({"code": "Enter the 6-digit code shown in your authenticator app."})
    totp = pyotp.TOTP(secret, digits=CODE_DIGITS)
    now = totp.timecode(timezone.now())
    matches = [step for step in range(now - VALID_WINDOW, now + VALID_WINDOW + 1)
               if hmac.compare_digest(totp.generate_otp(step), code)]
    if not matches:
        raise ValidationError({"code": (
            "This code is not correct. Enter the code your authenticator app shows now, and check "
            "that your phone's clock is set automatically.")})
    fresh = [step for step in matches if step > last_step]
    if not fresh:
        # a code seen on the way (over a shoulder, in a proxy log) must not open a second session
        raise ValidationError({"code": "This code was already used. Wait for the next code in your "
                                       "authenticator app and enter that one."})
    return max(fresh)


def _code_check(*, user: User, code: str) -> int:
    window = settings.SIGN_IN_FAILURE_WINDOW_SECONDS
    lockout = throttle.lockout_check(scope=CODE_FAILURES, value=str(user.pk), limit=MAX_CODE_FAILURES,
                                     window=window)
    if lockout is not None:
        raise ValidationError({"code": (f"Too many wrong codes for this account. Try again "
                                        f"{lockout.try_again}.")})
    try:
        return _code_step(secret=user.totp_secret, code=code, last_step=user.totp_last_step)
    except ValidationError:
        throttle.failure_record(scope=CODE_FAILURES, value=str(user.pk), window=window)
        raise


@transaction.atomic
def two_factor_enrol_confirm(*, user: User, code: str) -> User:
    """Turn two-factor authentication on with a first valid code from the pending secret."""
    locked = User.objects.select_for_update().select_related("company").get(pk=user.pk)
    if locked.totp_confirmed_at is not None:
        raise ValidationError({"code": "Two-factor authentication is already set up for this account."})
    if not locked.totp_secret:
        raise ValidationError({"code": "Open the set-up page again to get a QR code, then enter its code."})
    step = _code_check(user=locked, code=code)
    locked.totp_confirmed_at = timezone.now()
    locked.totp_last_step = step
    locked.save(update_fields=["totp_confirmed_at", "totp_last_step"])
    audit_record(actor=locked, company=locked.company, action="user.enrol_two_factor", obj=locked,
                 before={"two_factor": "off"}, after={"two_factor": "on"})
    user.totp_confirmed_at, user.totp_last_step = locked.totp_confirmed_at, step
    return user


@transaction.atomic
def two_factor_verify(*, user: User, code: str) -> User:
    """Check a sign-in code. The row lock makes two requests with the same code take turns, so
    only the first is accepted."""
    locked = User.objects.select_for_update().get(pk=user.pk)
    if locked.totp_confirmed_at is None:
        raise ValidationError({"code": "Two-factor authentication is not set up for this account yet."})
    step = _code_check(user=locked, code=code)
    locked.totp_last_step = step
    locked.save(update_fields=["totp_last_step"])
    user.totp_last_step = step
    return user


# --- the session ---------------------------------------------------------------------------------------

def session_is_verified(request: HttpRequest) -> bool:
    return request.session.get(SESSION_KEY) == request.user.pk


def session_mark_verified(request: HttpRequest) -> None:
    # a new session key at the step up, as at sign-in: a key seen before the code is worth nothing
    request.session.cycle_key()
    request.session[SESSION_KEY] = request.user.pk


def _with_next(url_name: str, next_url: str) -> str:
    return f"{reverse(url_name)}?{urlencode({'next': next_url})}"


class TwoFactorMiddleware:
    """Until the session has passed a code, a user who needs one reaches only the enrol and verify
    pages and sign-out. Static files and the health check are never held back."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if (user.is_authenticated and two_factor_required(user=user) and not session_is_verified(request)
                and not self._open(request)):
            return self._hold(request, user)
        return self.get_response(request)

    @staticmethod
    def _open(request: HttpRequest) -> bool:
        if request.path_info.startswith(settings.STATIC_URL):
            return True
        return request.path in {
            reverse("accounts:two-factor-enrol"), reverse("accounts:two-factor-verify"),
            reverse("accounts:sign-out"), reverse("healthz"),
        }

    @staticmethod
    def _hold(request: HttpRequest, user: User) -> HttpResponse:
        if request.path_info.startswith("/api/"):
            # an API client cannot follow a redirect to a form; it gets a reason it can show
            return JsonResponse({"detail": (
                "Two-factor authentication is required: enter your code in the console first.")},
                status=403)
        step = "accounts:two-factor-verify" if user.totp_confirmed_at else "accounts:two-factor-enrol"
        if request.headers.get("HX-Request"):
            # htmx would swap the whole page into a fragment: have the browser navigate instead,
            # and come back to the page the fragment was for, not to the fragment
            current = urlsplit(request.headers.get("HX-Current-URL", ""))
            response = HttpResponse(status=204)
            response["HX-Redirect"] = _with_next(step, urlunsplit(("", "", current.path or "/",
                                                                   current.query, "")))
            return response
        return HttpResponseRedirect(_with_next(step, request.get_full_path()))


# --- the pages ----------------------------------------------------------------------------------------

def _next_url(request: HttpRequest) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return candidate
    return resolve_url(settings.LOGIN_REDIRECT_URL)


class TwoFactorEnrolView(LoginRequiredMixin, View):
    template_name = "accounts/two_factor_enrol.html"

    def get(self, request):
        if request.user.totp_confirmed_at is not None:
            return self._enrolled(request)
        return self._render(request, TwoFactorCodeForm())

    def post(self, request):
        if request.user.totp_confirmed_at is not None:
            return self._enrolled(request)
        form = TwoFactorCodeForm(request.POST)
        if form.is_valid():
            try:
                two_factor_enrol_confirm(user=request.user, code=form.cleaned_data["code"])
            except ValidationError as error:
                form.add_error(None, error)  # the service's error names the field: it lands there
            else:
                session_mark_verified(request)
                messages.success(request, "Two-factor authentication is on for your account.")
                return redirect(_next_url(request))
        return self._render(request, form)

    def _render(self, request, form: TwoFactorCodeForm) -> HttpResponse:
        try:
            secret = two_factor_enrol_start(user=request.user)
        except ValidationError:  # enrolment was confirmed from another tab meanwhile
            return redirect(_with_next("accounts:two-factor-verify", _next_url(request)))
        return render(request, self.template_name, {
            "form": form, "secret": secret, "qr_svg": two_factor_qr_svg(user=request.user),
            "next": _next_url(request),
        })

    @staticmethod
    def _enrolled(request) -> HttpResponse:
        if session_is_verified(request):
            return redirect(_next_url(request))
        return redirect(_with_next("accounts:two-factor-verify", _next_url(request)))


class TwoFactorVerifyView(LoginRequiredMixin, View):
    template_name = "accounts/two_factor_verify.html"

    def get(self, request):
        return self._elsewhere(request) or render(request, self.template_name, {
            "form": TwoFactorCodeForm(), "next": _next_url(request)})

    def post(self, request):
        elsewhere = self._elsewhere(request)
        if elsewhere is not None:
            return elsewhere
        form = TwoFactorCodeForm(request.POST)
        if form.is_valid():
            try:
                two_factor_verify(user=request.user, code=form.cleaned_data["code"])
            except ValidationError as error:
                form.add_error(None, error)  # the service's error names the field: it lands there
            else:
                session_mark_verified(request)
                return redirect(_next_url(request))
        return render(request, self.template_name, {"form": form, "next": _next_url(request)})

    @staticmethod
    def _elsewhere(request) -> HttpResponse | None:
        if request.user.totp_confirmed_at is None:
            return redirect(_with_next("accounts:two-factor-enrol", _next_url(request)))
        if session_is_verified(request):
            return redirect(_next_url(request))
        return None
