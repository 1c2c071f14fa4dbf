"""Writes to the company tree and accounts. Business rules live here, not in views or models.

Every service validates its input and raises django.core.exceptions.ValidationError with a dict
naming the field, so pages and the API report the same message (X2). Writes are atomic; emails are
sent on commit.
"""

import functools
import hashlib
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat, Substr
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django_countries import countries
from django_tenants.utils import get_public_schema_name, schema_context

from .access import can_manage_company
from .audit import audit_record, snapshot
from .models import (
    ApiKey,
    ApiKeyScope,
    Company,
    CompanyStatus,
    CompanyType,
    FieldOfActivity,
    Role,
    User,
    new_schema_name,
)

PLATFORM_NAME = "GZ Platform"
COMPANY_AUDIT_FIELDS = [
    "name", "type", "parent", "status", "manages_security", "partner_can_assist", "country",
    "field_of_activity", "address", "phone", "logo", "enforce_two_factor",
]
USER_AUDIT_FIELDS = ["email", "full_name", "company", "role", "timezone", "language", "is_active"]
LOGO_TYPES = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp"}

# Checks another app adds to a change of partner (H5): each takes (company, new_parent) and
# returns an error message, or None when the move is fine. Licensing registers its E3 and seat
# checks in its AppConfig.ready().
MOVE_CHECKS: list[Callable[[Company, Company], str | None]] = []
# Run after a move, in the same transaction, with (company, old_parent): licensing moves seats.
MOVE_HOOKS: list[Callable[[Company, Company], None]] = []
# Run after a status change, in the same transaction, with (company, status): licensing expires
# or revives the company's seats (H4, T5).
STATUS_HOOKS: list[Callable[[Company, str], None]] = []
# Checks another app adds to a change of assist (C3/C4): each takes (company, on) and returns a
# problem message, or None when the change is fine (like MOVE_CHECKS).
ASSIST_CHECKS: list[Callable[[Company, bool], str | None]] = []
# pg_advisory_xact_lock(namespace, 0): changes of partner run one at a time (H5, no cycles)
MOVE_LOCK_NAMESPACE = 0x4835  # "H5"


# --- validation ------------------------------------------------------------------------------------

def in_public_schema(func):
    """Company rows are written from the public schema: django-tenants refuses to save a tenant
    while the connection is in another company's schema (a request runs in the user's)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with schema_context(get_public_schema_name()):
            return func(*args, **kwargs)

    return wrapper


PHONE_MESSAGE = "A phone number has digits, spaces and + - ( ) . only."


def phone_is_valid(phone: str) -> bool:
    return all(ch.isdigit() or ch in "+-() ." for ch in phone)


def _validate_company_details(*, name: str, type: str, country: str, field_of_activity: str,
                              phone: str, address: str) -> dict[str, str]:
    errors = {}
    if not name or not name.strip():
        errors["name"] = "Enter the company name."
    elif len(name) > 200:
        errors["name"] = "The company name can have at most 200 characters."
    elif any(unicodedata.category(c) == "Cc" for c in name):  # a line break would break email subjects
        errors["name"] = "The company name cannot contain line breaks, tabs or other control characters."
    if type not in CompanyType.values:
        errors["type"] = "Choose partner or customer."
    if country and country not in dict(countries):
        errors["country"] = f"{country!r} is not an ISO 3166-1 alpha-2 country code."
    if field_of_activity and field_of_activity not in FieldOfActivity.values:
        errors["field_of_activity"] = "Choose a field of activity from the list."
    if phone and not phone_is_valid(phone):
        errors["phone"] = PHONE_MESSAGE
    if len(phone) > 40:
        errors["phone"] = "The phone number can have at most 40 characters."
    if len(address) > 500:
        errors["address"] = "The address can have at most 500 characters."
    elif any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in address):
        # an address may span lines; NUL and the other control characters are refused (PostgreSQL
        # text cannot hold NUL at all: it would be a 500 on save). Name, country, field of activity
        # and phone already refuse every control character by the checks above.
        errors["address"] = "The address cannot contain control characters other than line breaks and tabs."
    return errors


def validate_logo(logo: UploadedFile) -> None:
    """H2: the logo must be a PNG, JPEG, GIF or WebP image of at most LOGO_MAX_BYTES."""
    from PIL import Image, UnidentifiedImageError

    if logo.size > settings.LOGO_MAX_BYTES:
        raise ValidationError({"logo": f"The logo can be at most {settings.LOGO_MAX_BYTES // 1024} KiB."})
    try:
        logo.seek(0)
        image = Image.open(logo)
        image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise ValidationError({"logo": "The logo must be a PNG, JPEG, GIF or WebP image."}) from None
    finally:
        logo.seek(0)
    if image.format not in LOGO_TYPES:
        raise ValidationError({"logo": "The logo must be a PNG, JPEG, GIF or WebP image."})


def _security_options(*, type: str, manages_security: bool, partner_can_assist: bool,
                      reseller_only: bool) -> tuple[bool, bool]:
    """C1: always on for customers; off and locked for reseller-only partners."""
    if type == CompanyType.CUSTOMER:
        return True, partner_can_assist
    if reseller_only:
        return False, partner_can_assist
    return manages_security, partner_can_assist


# --- companies ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrimaryAccount:
    full_name: str
    email: str
    timezone: str = "UTC"
    language: str = "en"


@in_public_schema
@transaction.atomic
def company_create(*, parent: Company | None, name: str, type: str, actor: User | None = None,
                   country: str = "", field_of_activity: str = "", manages_security: bool = True,
                   partner_can_assist: bool = True, address: str = "", phone: str = "",
                   logo: UploadedFile | None = None, enforce_two_factor: bool = False,
                   primary_account: PrimaryAccount | None = None) -> Company:
    """Create a company under `parent` and its schema (cloned from the template schema)."""
    name = (name or "").strip()
    errors = _validate_company_details(name=name, type=type, country=country,
                                       field_of_activity=field_of_activity, phone=phone, address=address)
    if parent is not None and parent.type != CompanyType.PARTNER:
        errors["parent"] = "Only a partner can have companies under it."
    if parent is not None and not errors.get("name") and parent.children.filter(name=name).exists():
        errors["name"] = f"{parent.name} already has a company named {name}."
    if primary_account is None and not partner_can_assist:
        # A1: the primary account is optional only when the partner can assist
        errors["primary_account"] = ("Add a primary account: without assist nobody else can manage "
                                     "this company's users.")
    if errors:
        raise ValidationError(errors)
    if logo:
        validate_logo(logo)
    manages_security, partner_can_assist = _security_options(
        type=type, manages_security=manages_security, partner_can_assist=partner_can_assist,
        reseller_only=type == CompanyType.PARTNER and not manages_security)
    company = Company(parent=parent, name=name, type=type, schema_name=new_schema_name(),
                      country=country, field_of_activity=field_of_activity,
                      manages_security=manages_security, partner_can_assist=partner_can_assist,
                      address=address, phone=phone, enforce_two_factor=enforce_two_factor)
    try:
        with transaction.atomic():
            company.save(verbosity=0)
    except IntegrityError as error:
        # two requests adding the same name at once: the second loses on the sibling constraint
        if "company_name_unique_among_siblings" in str(error) or "company_single_root_name" in str(error):
            raise ValidationError({"name": f"A company named {name} already exists here."}) from None
        raise
    company.lineage = f"{parent.lineage if parent else '/'}{company.pk}/"
    company.depth = parent.depth + 1 if parent else 0
    update = {"lineage": company.lineage, "depth": company.depth}
    if logo:
        company.logo.save(logo.name, logo, save=False)
        update["logo"] = company.logo.name
    Company.objects.filter(pk=company.pk).update(**update)
    audit_record(actor=actor, company=company, action="company.create", obj=company,
                 after=snapshot(company, COMPANY_AUDIT_FIELDS))
    if primary_account is not None:
        user_invite(actor=actor, company=company, email=primary_account.email,
                    full_name=primary_account.full_name, role=Role.COMPANY_ADMIN,
                    timezone=primary_account.timezone, language=primary_account.language)
    return company


def platform_ensure() -> Company:
    """The root company that runs the installation; created once, after the first migrate."""
    platform = Company.objects.filter(parent__isnull=True).first()
    if platform is None:
        platform = company_create(parent=None, name=PLATFORM_NAME, type=CompanyType.PARTNER)
    return platform


def _sibling_name_taken(actor: User | None, company: Company, name: str) -> str:
    """H2 against C6: names are unique among siblings, but a company renaming itself (My Company)
    does not see its siblings, so the answer must not tell it that one is called `name`."""
    if actor is not None and actor.company_id not in company.ancestor_ids:
        return "This name cannot be used. Choose another, or ask your partner."
    return f"Another company under the same partner is named {name}."


@in_public_schema
@transaction.atomic
def company_update(*, actor: User | None, company: Company, logo: UploadedFile | None = None,
                   clear_logo: bool = False, **changes) -> Company:
    """Edit details (H2). Type and place in the tree change through their own services."""
    allowed = {"name", "country", "field_of_activity", "address", "phone", "manages_security"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "This field cannot be changed here."))
    company = Company.objects.select_for_update().get(pk=company.pk)
    before = snapshot(company, COMPANY_AUDIT_FIELDS)
    merged = {f: changes.get(f, getattr(company, f)) for f in allowed}
    merged["name"] = (merged["name"] or "").strip()
    errors = _validate_company_details(name=merged["name"], type=company.type, country=merged["country"],
                                       field_of_activity=merged["field_of_activity"],
                                       phone=merged["phone"], address=merged["address"])
    if (not errors.get("name") and company.parent_id is not None and
            Company.objects.filter(parent_id=company.parent_id, name=merged["name"])
            .exclude(pk=company.pk).exists()):
        errors["name"] = _sibling_name_taken(actor, company, merged["name"])
    if company.type == CompanyType.CUSTOMER and not merged["manages_security"]:
        errors["manages_security"] = "A customer always manages its own endpoint security."
    elif (merged["manages_security"] != company.manages_security and actor is not None
          and not can_manage_company(actor, company)):
        # C1/C2: the same rule as every other change of a company (a partner above decides), so a
        # reseller-only partner cannot grant itself the network through any entry point
        errors["manages_security"] = ("Only the partner above a company can change whether it manages "
                                      "endpoint security.")
    if errors:
        raise ValidationError(errors)
    if logo:
        validate_logo(logo)
    for field, value in merged.items():
        setattr(company, field, value)
    if clear_logo:
        company.logo = ""
    elif logo:
        company.logo.save(logo.name, logo, save=False)
    try:
        with transaction.atomic():
            company.save(update_fields=[*allowed, "logo"])
    except IntegrityError as error:
        # a sibling took the name meanwhile (the constraint, not the check above, saw it)
        if "company_name_unique_among_siblings" in str(error):
            raise ValidationError({"name": _sibling_name_taken(actor, company, merged["name"])}) from None
        raise
    audit_record(actor=actor, company=company, action="company.update", obj=company, before=before,
                 after=snapshot(company, COMPANY_AUDIT_FIELDS))
    return company


@in_public_schema
@transaction.atomic
def company_set_assist(*, actor: User, company: Company, on: bool) -> Company:
    """C3/C4: anyone who manages the company may turn assist off; only the company's own
    administrators may turn it back on (My Company)."""
    if on and actor.company_id != company.pk:
        raise ValidationError({"partner_can_assist": (
            "Only the company's own users can let its partner assist again, from My Company.")})
    if on is False and company.type == CompanyType.PARTNER and company.parent_id is None:
        raise ValidationError({"partner_can_assist": "The platform has no partner."})
    problems = [problem for check in ASSIST_CHECKS if (problem := check(company, on))]
    if problems:
        raise ValidationError({"partner_can_assist": problems})
    before = snapshot(company, COMPANY_AUDIT_FIELDS)
    Company.objects.filter(pk=company.pk).update(partner_can_assist=on)
    company.partner_can_assist = on
    audit_record(actor=actor, company=company, action="company.assist", obj=company, before=before,
                 after=snapshot(company, COMPANY_AUDIT_FIELDS))
    return company


@in_public_schema
@transaction.atomic
def company_set_status(*, actor: User | None, company: Company, status: str, reason: str = "") -> Company:
    """H4: suspend or reactivate. Nothing is deleted; users of a suspended company cannot sign in
    and its endpoints expire (the seat services read the status)."""
    if status not in CompanyStatus.values:
        raise ValidationError({"status": "Choose active or suspended."})
    if company.parent_id is None:
        raise ValidationError({"status": "The platform cannot be suspended."})
    company = Company.objects.select_for_update().get(pk=company.pk)
    if company.status == status:
        return company
    before = snapshot(company, COMPANY_AUDIT_FIELDS)
    company.status = status
    company.suspended_at = timezone.now() if status == CompanyStatus.SUSPENDED else None
    company.save(update_fields=["status", "suspended_at"])
    for hook in STATUS_HOOKS:
        hook(company, status)
    after = snapshot(company, COMPANY_AUDIT_FIELDS)
    if reason:
        after["reason"] = reason
    audit_record(actor=actor, company=company,
                 action="company.suspend" if status == CompanyStatus.SUSPENDED else "company.reactivate",
                 obj=company, before=before, after=after)
    return company


@in_public_schema
@transaction.atomic
def company_set_two_factor(*, actor: User, company: Company, enforce: bool) -> Company:
    """A3: the company, or its partner on its behalf (C3 keeps this without assist)."""
    before = snapshot(company, COMPANY_AUDIT_FIELDS)
    Company.objects.filter(pk=company.pk).update(enforce_two_factor=enforce)
    company.enforce_two_factor = enforce
    audit_record(actor=actor, company=company, action="company.two_factor", obj=company, before=before,
                 after=snapshot(company, COMPANY_AUDIT_FIELDS))
    return company


def _move_reveals(company: Company, new_parent: Company) -> bool:
    """C2/C3/C5 across a move: would the move show the company's network or accounts to a partner
    above it that cannot see them now? Visibility from a partner down is "assist on at every
    company below it down to the target", so only the partners above both places matter (above the
    new place only, a partner is the company's new partner chain, which is the point of a move), and
    of those the lowest decides for all: the chain from it down to the old parent is closed while
    the chain down to the new parent and the company itself are open. The company's own subtree
    gains nothing that the company does not (its own assist closes the rest too)."""
    if not company.partner_can_assist:
        return False
    old_ids, new_ids = company.ancestor_ids, [int(p) for p in new_parent.lineage.strip("/").split("/")]
    shared = 0
    while shared < min(len(old_ids), len(new_ids)) and old_ids[shared] == new_ids[shared]:
        shared += 1
    below_old, below_new = old_ids[shared:], new_ids[shared:]
    assist = dict(Company.objects.filter(pk__in=below_old + below_new).values_list("pk", "partner_can_assist"))
    return all(assist[pk] for pk in below_new) and not all(assist[pk] for pk in below_old)


@in_public_schema
@transaction.atomic
def company_move(*, company: Company, new_parent: Company, actor: User | None = None) -> Company:
    """H5: move a company (and its subtree) under another partner.

    Refused, with a message, when the new parent is not a partner, when the move would create a
    cycle, or when a registered check (products, seats) fails. Usage already recorded stays with
    its months: rollups are keyed by company and month, not by partner.
    """
    with connection.cursor() as cursor:
        # one change of partner at a time: two opposite moves (A under B, B under A), or a longer
        # ring, would each pass the cycle check below on the tree as it was before the other
        cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [MOVE_LOCK_NAMESPACE])
    # both rows locked, in id order (no deadlock with another writer locking the same two), and
    # read after the locks so the checks see any move committed meanwhile
    locked = Company.objects.select_for_update().filter(pk__in={company.pk, new_parent.pk}).order_by("pk")
    by_id = {row.pk: row for row in locked}
    if company.pk not in by_id or new_parent.pk not in by_id:
        raise Company.DoesNotExist("The company or the new partner no longer exists.")
    company, new_parent = by_id[company.pk], by_id[new_parent.pk]
    if company.parent_id is None:
        raise ValidationError({"parent": "The platform cannot move."})
    if new_parent.type != CompanyType.PARTNER:
        raise ValidationError({"parent": f"{new_parent.name} is a customer; only a partner can have "
                                         "companies under it."})
    if new_parent.lineage.startswith(company.lineage):
        raise ValidationError({"parent": f"{company.name} cannot move under {new_parent.name}: "
                                         f"{new_parent.name} is {company.name} itself or below it."})
    if new_parent.pk == company.parent_id:
        return company
    if new_parent.children.filter(name=company.name).exists():
        raise ValidationError({"parent": f"{new_parent.name} already has a company named {company.name}."})
    if _move_reveals(company, new_parent):
        raise ValidationError({"parent": (
            f"{company.name} cannot move under {new_parent.name}: a partner it is under now has assist "
            f"turned off, which hides {company.name}'s network and accounts from the partners above, and "
            f"the move would show them. Turn off assist for {company.name} first; its own administrators "
            "can turn it back on from My Company (it needs at least one administrator of its own, and MDR "
            "Foundations, which needs assist, must be turned off first), or ask the partner that turned "
            "assist off to move it.")})
    problems = [problem for check in MOVE_CHECKS if (problem := check(company, new_parent))]
    if problems:
        raise ValidationError({"parent": problems})
    before = snapshot(company, COMPANY_AUDIT_FIELDS)
    old_prefix = company.lineage  # the move is recorded at the old place: the new partner does not read it
    new_prefix = f"{new_parent.lineage}{company.pk}/"
    depth_shift = new_parent.depth + 1 - company.depth
    Company.objects.filter(lineage__startswith=old_prefix).update(
        lineage=Concat(Value(new_prefix), Substr("lineage", len(old_prefix) + 1)),
        depth=F("depth") + depth_shift,
    )
    old_parent = company.parent
    Company.objects.filter(pk=company.pk).update(parent=new_parent)
    company.refresh_from_db()
    for hook in MOVE_HOOKS:
        hook(company, old_parent)
    audit_record(actor=actor, company=company, action="company.move", obj=company, before=before,
                 after=snapshot(company, COMPANY_AUDIT_FIELDS), lineage=old_prefix)
    # X1 for both partners, each told only of its own side (C6: neither learns the other)
    audit_record(actor=actor, company=old_parent, action="company.move_out", obj=company,
                 before={"parent": old_parent.pk})
    audit_record(actor=actor, company=new_parent, action="company.move_in", obj=company,
                 after={"parent": new_parent.pk})
    return company


@in_public_schema
@transaction.atomic
def company_delete(*, actor: User | None, company: Company) -> None:
    """Delete a company created by mistake (the JSON-RPC deleteCompany). Billing history must never
    vanish from a partner's sums, so only an empty company goes: no companies below it, no
    endpoints, no seats or recorded usage, no reservation of its own. Anything else is suspended
    instead (H4). The company's schema is dropped with it."""
    from django_tenants.utils import tenant_context

    company = Company.objects.select_for_update().get(pk=company.pk)
    if company.parent_id is None:
        raise ValidationError({"company": "The platform cannot be deleted."})
    problems = []
    if company.children.exists():
        problems.append("it has companies under it")
    if company.seat_assignments.exists():
        problems.append("it has endpoints holding seats")
    if company.month_usage.exists():
        problems.append("it has recorded usage")
    license = getattr(company, "license", None)
    if license is not None and license.reserved_seats is not None:
        problems.append("it has reserved seats (remove the reservation first)")
    if not problems:
        from usage.telemetry.models import Endpoint

        with tenant_context(company):
            if Endpoint.objects.exists():
                problems.append("it has endpoints")
    if problems:
        raise ValidationError({"company": f"{company.name} cannot be deleted: {'; '.join(problems)}. "
                                          "Suspend it instead."})
    audit_record(actor=actor, company=company.parent, action="company.delete", obj=company,
                 before=snapshot(company, COMPANY_AUDIT_FIELDS), after={"deleted": True})
    company.users.all().delete()
    company.delete(force_drop=True)


# --- accounts ----------------------------------------------------------------------------------------

def _validate_user_fields(*, email: str, full_name: str, role: str, timezone_name: str,
                          language: str) -> dict[str, str]:
    import zoneinfo

    from django.core.validators import validate_email

    errors = {}
    try:
        validate_email(email)
    except ValidationError:
        errors["email"] = "Enter a valid email address."
    if not full_name or not full_name.strip():
        errors["full_name"] = "Enter the user's full name."
    if role not in Role.values:
        errors["role"] = "Choose a role from the list."
    if timezone_name not in zoneinfo.available_timezones():
        errors["timezone"] = f"{timezone_name!r} is not a known timezone."
    if language not in dict(settings.LANGUAGES):
        errors["language"] = f"{language!r} is not a supported language."
    return errors


def user_create(*, company: Company, email: str, full_name: str, role: str = Role.REPORTER,
                password: str | None = None, **details) -> User:
    return User.objects.create_user(
        email=email, password=password, company=company, full_name=full_name, role=role, **details
    )


def invitation_url(user: User) -> str:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return settings.CONSOLE_URL + reverse("accounts:set-password", args=[uid, token])


@transaction.atomic
def user_invite(*, actor: User | None, company: Company, email: str, full_name: str,
                role: str = Role.REPORTER, timezone: str = "UTC", language: str = "en") -> User:
    """A1/C5: a new account gets an email with a link to set its password."""
    email = (email or "").strip().lower()
    errors = _validate_user_fields(email=email, full_name=full_name, role=role, timezone_name=timezone,
                                   language=language)
    if not errors.get("email") and User.objects.filter(email=email).exists():
        # emails are sign-in names, unique across the installation, so a refusal cannot be avoided;
        # it names no company (docs/decisions.md)
        errors["email"] = "This email address cannot be used for a new account. Use another address."
    if errors:
        raise ValidationError(errors)
    user = User.objects.create_user(email=email, password=None, company=company,
                                    full_name=full_name.strip(), role=role, timezone=timezone,
                                    language=language)
    audit_record(actor=actor, company=company, action="user.invite", obj=user,
                 after=snapshot(user, USER_AUDIT_FIELDS))
    link = invitation_url(user)
    transaction.on_commit(lambda: send_mail(
        subject=f"Your GZ Console account for {company.name}",
        message=(f"Hello {user.full_name},\n\nAn account was created for you in GZ Console for "
                 f"{company.name}.\nSet your password here (the link works once, for 3 days):\n\n"
                 f"{link}\n"),
        from_email=None, recipient_list=[user.email],
    ))
    return user


@transaction.atomic
def user_update(*, actor: User, user: User, **changes) -> User:
    allowed = {"full_name", "role", "timezone", "language"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "This field cannot be changed here."))
    before = snapshot(user, USER_AUDIT_FIELDS)
    merged = {f: changes.get(f, getattr(user, f)) for f in allowed}
    errors = _validate_user_fields(email=user.email, full_name=merged["full_name"], role=merged["role"],
                                   timezone_name=merged["timezone"], language=merged["language"])
    if user.pk == actor.pk and merged["role"] != Role.COMPANY_ADMIN and user.role == Role.COMPANY_ADMIN:
        errors["role"] = "You cannot remove your own administrator role."
    if errors:
        raise ValidationError(errors)
    for field, value in merged.items():
        setattr(user, field, value)
    user.save(update_fields=list(allowed))
    audit_record(actor=actor, company=user.company, action="user.update", obj=user, before=before,
                 after=snapshot(user, USER_AUDIT_FIELDS))
    return user


@transaction.atomic
def user_set_active(*, actor: User, user: User, active: bool) -> User:
    if user.pk == actor.pk and not active:
        raise ValidationError({"is_active": "You cannot deactivate your own account."})
    before = snapshot(user, USER_AUDIT_FIELDS)
    user.is_active = active
    # open sessions end at their next request: the auth backend refuses inactive users
    user.save(update_fields=["is_active"])
    audit_record(actor=actor, company=user.company, action="user.activate" if active else "user.deactivate",
                 obj=user, before=before, after=snapshot(user, USER_AUDIT_FIELDS))
    return user


@transaction.atomic
def user_reset_two_factor(*, actor: User, user: User) -> User:
    """The user enrols again at the next sign-in."""
    user.totp_secret = ""
    user.totp_confirmed_at = None
    user.totp_last_step = 0
    user.save(update_fields=["totp_secret", "totp_confirmed_at", "totp_last_step"])
    audit_record(actor=actor, company=user.company, action="user.reset_two_factor", obj=user,
                 after={"two_factor": "reset"})
    return user


# --- API keys ------------------------------------------------------------------------------------------

API_KEY_PREFIX = "gzk_"


def api_key_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def api_key_create(*, actor: User, company: Company, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """A4: returns the key and its secret; the secret is shown once and only its hash is kept."""
    errors = {}
    if not name or not name.strip():
        errors["name"] = "Name the key so you can recognise it later."
    bad = [s for s in scopes if s not in ApiKeyScope.values]
    if not scopes:
        errors["scopes"] = "Choose at least one scope."
    elif bad:
        errors["scopes"] = f"Unknown scope: {', '.join(bad)}."
    if errors:
        raise ValidationError(errors)
    prefix = secrets.token_hex(4)
    raw = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(company=company, name=name.strip(), prefix=prefix,
                                key_hash=api_key_hash(raw), scopes=sorted(set(scopes)), created_by=actor)
    audit_record(actor=actor, company=company, action="api_key.create", obj=key,
                 after={"name": key.name, "prefix": prefix, "scopes": key.scopes})
    return key, raw


@transaction.atomic
def api_key_revoke(*, actor: User, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(actor=actor, company=key.company, action="api_key.revoke", obj=key,
                     before={"revoked": False}, after={"revoked": True})
    return key


def api_key_authenticate(raw: str) -> ApiKey | None:
    if not raw.startswith(API_KEY_PREFIX):
        return None
    key = (ApiKey.objects.select_related("company")
           .filter(key_hash=api_key_hash(raw), revoked_at__isnull=True).first())
    if key is None or key.company.status != CompanyStatus.ACTIVE:
        return None
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    return key
