"""Writes for the ConnectWise billing sync (SPEC B1-B4, X1).

Connection settings and mappings are validated here and audited (X1); keys are encrypted before
they are stored. The sync pushes one addition per billed company and month: the addition's PSA id
is kept as soon as it is known, and before creating one the sync looks for an addition it made
earlier whose answer was lost, so a retry or a re-run updates instead of creating a second one.
"""

import calendar
import datetime as dt
import ipaddress
import logging
import socket
import urllib.parse

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from companies.audit import audit_record
from companies.models import Company, CompanyType, PartnerPlan, User
from usage.models import CompanyMonthUsage
from usage.rollups import month_bounds, month_previous, month_start
from usage.selectors import month_closed_at

from .connectwise import ConnectWiseClient, Credentials, PsaError, psa_date
from .crypto import SecretUnreadable, decrypt, encrypt
from .models import (
    CompanyMapping,
    MappingState,
    PsaAddition,
    PsaConnection,
    PsaZeroing,
    SyncAttempt,
    SyncOutcome,
    SyncTrigger,
)
from .selectors import active_endpoint_counts, integration_allowed, is_monthly_q

logger = logging.getLogger(__name__)

UPDATE_INTERVAL = dt.timedelta(hours=4)  # B3: at most every four hours
CONNECTION_AUDIT_FIELDS = ["site", "psa_company_id", "client_id", "enabled"]
MAPPING_AUDIT_FIELDS = ["psa_company", "agreement_type", "product_identifier"]
BASIC_MESSAGE = "The billing integration is not available on the Basic plan."
TURNED_OFF_MESSAGE = "The ConnectWise connection is turned off."
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
ZEROING_TRIES = 24  # a left-behind addition is tried hourly for a day, then left to the partner (PsaZeroing)
MOVED = "The company moved to another partner, which bills this month:"  # what a zeroing's log entries start with


def addition_description(*, company: Company, month: dt.date) -> str:
    """What the addition says on the invoice; also how the sync recognises an addition it created."""
    return f"GZ Console endpoints {month:%Y-%m} (company {company.pk})"


def month_last_day(month: dt.date) -> dt.date:
    """B3: an addition's cancelled date. ConnectWise bills an addition on every invoice from its effective
    date until its cancelled date; without one, month N's invoice would bill the additions of months 1..N."""
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


class KeysUnreadable(PsaError):
    """The stored keys were encrypted with another key (SECRET_KEY or FIELD_ENCRYPTION_KEY changed)."""


def client_for(connection: PsaConnection, **options) -> ConnectWiseClient:
    # checked again at each use: a name can be pointed elsewhere after it was saved
    refused = _private_address(urllib.parse.urlsplit(connection.site).hostname or "")
    if refused:
        raise PsaError(refused, retryable=False)
    try:
        public_key, private_key = decrypt(connection.public_key_encrypted), decrypt(connection.private_key_encrypted)
    except SecretUnreadable as error:
        raise KeysUnreadable(str(error), retryable=False) from None
    return ConnectWiseClient(Credentials(site=connection.site, company_id=connection.psa_company_id,
                                         public_key=public_key, private_key=private_key,
                                         client_id=connection.client_id), **options)


# --- settings -----------------------------------------------------------------------------------------

def _connection_audit(connection: PsaConnection) -> dict:
    return {f: getattr(connection, f) for f in CONNECTION_AUDIT_FIELDS}


def _validate_site(site: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(site)
        parts.port  # noqa: B018 - X2: a port out of range raises here, not later in every request
    except ValueError:  # "https://[zz" (a broken IPv6 literal), "https://x:99999"
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return "Enter the address of your ConnectWise site, like https://na.myconnectwise.net."
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS and not settings.DEBUG:
        return "Use an https:// address: the keys must not travel unencrypted."
    return _private_address(parts.hostname)


def _private_address(hostname: str) -> str | None:
    """Refuse a site that resolves to this machine or a private network (unless the settings allow
    it, as outside production): the console calls the address on the partner's behalf."""
    if settings.PSA_ALLOW_PRIVATE_ADDRESSES:
        return None
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(hostname, None)}
    except (OSError, UnicodeError):
        return f"The address {hostname} could not be found. Check the site address."
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            return (f"The address {hostname} is on a private network or this machine; the console only "
                    "calls public ConnectWise sites.")
    return None


@transaction.atomic
def connection_save(*, actor: User, partner: Company, site: str, psa_company_id: str, client_id: str,
                    public_key: str = "", private_key: str = "", enabled: bool = True) -> PsaConnection:
    """B1/B2/X1: create or change the partner's connection. Empty keys keep the stored ones."""
    if not integration_allowed(partner):
        raise ValidationError({"__all__": BASIC_MESSAGE if partner.is_partner else
                               "Only partners bill companies through ConnectWise."})
    existing = PsaConnection.objects.select_for_update().filter(company=partner).first()
    site, psa_company_id, client_id = site.strip().rstrip("/"), psa_company_id.strip(), client_id.strip()
    public_key, private_key = public_key.strip(), private_key.strip()
    errors: dict[str, str] = {}
    if site_error := _validate_site(site):
        errors["site"] = site_error
    if not psa_company_id:
        errors["psa_company_id"] = "Enter the company id you sign in to ConnectWise with."
    if not client_id:
        errors["client_id"] = "Enter the client id of your ConnectWise API integration."
    if existing is None or public_key or private_key:
        # new keys come as a pair: half a key pair would fail every request
        if not public_key:
            errors["public_key"] = "Enter the public key of the API member."
        if not private_key:
            errors["private_key"] = "Enter the private key of the API member."
    if errors:
        raise ValidationError(errors)
    before = _connection_audit(existing) if existing else None
    connection = existing or PsaConnection(company=partner)
    connection.site, connection.psa_company_id, connection.client_id = site, psa_company_id, client_id
    connection.enabled = enabled
    keys_replaced = bool(public_key)
    if keys_replaced:
        connection.public_key_encrypted = encrypt(public_key)
        connection.private_key_encrypted = encrypt(private_key)
    connection.save()
    after = _connection_audit(connection)
    if keys_replaced:  # X1 says that the keys changed, never what they are
        after["keys"] = "replaced"
        before = {**(before or {}), "keys": "kept" if existing else ""}
    audit_record(actor=actor, company=partner, action="integration.connection", obj=connection,
                 before=before, after=after)
    return connection


def connection_test(*, connection: PsaConnection) -> PsaConnection:
    """Ask the PSA who it is with the stored credentials and keep what it answered."""
    try:
        client = client_for_test(connection)
        info = client.system_info() if client else {}
    except PsaError as error:
        ok, answer = False, error.answer
    else:
        if client is None:
            ok, answer = False, "The stored keys cannot be read; enter them again."
        else:
            version = info.get("version") or "unknown version"
            ok, answer = True, f"ConnectWise answered {client.last_status}: signed in, version {version}."
    PsaConnection.objects.filter(pk=connection.pk).update(last_test_at=timezone.now(), last_test_ok=ok,
                                                          last_test_answer=answer)
    connection.refresh_from_db()
    return connection


def client_for_test(connection: PsaConnection) -> ConnectWiseClient | None:
    """The client for "test connection"; None when the stored keys cannot be read."""
    try:
        return client_for(connection, timeout=10.0, max_wait_seconds=10.0)
    except KeysUnreadable:
        return None


@transaction.atomic
def partner_plan_set(*, actor: User, company: Company, plan: str) -> Company:
    """B2/X1: a partner's plan, set by a partner above it (the edit page of the company)."""
    if plan not in PartnerPlan.values:
        raise ValidationError({"plan": "Choose Standard or Basic."})
    if company.type != CompanyType.PARTNER:
        raise ValidationError({"plan": "Only partners have a plan."})
    company = Company.objects.select_for_update().get(pk=company.pk)
    before = {"plan": company.plan}
    # an UPDATE, not save(): a tenant model refuses save() while a request sits in another schema
    Company.objects.filter(pk=company.pk).update(plan=plan)
    company.plan = plan
    audit_record(actor=actor, company=company, action="company.plan", obj=company, before=before,
                 after={"plan": plan})
    return company


# --- mappings (B1) ------------------------------------------------------------------------------------

def _case_hint(wanted: str, found: list[str]) -> str:
    near = sorted({name for name in found if name.lower() == wanted.lower() and name != wanted})
    if near:
        return f' Names are case-sensitive: ConnectWise has "{near[0]}".'
    return ""


def mapping_resolve(*, mapping: CompanyMapping, client: ConnectWiseClient) -> tuple[str, str, dict]:
    """Find the company, its one open agreement of the type, and the product, matching names exactly.
    Returns (state, what the partner should do, ids found)."""
    companies = client.companies(identifier=mapping.psa_company)
    exact = [c for c in companies if c.get("identifier") == mapping.psa_company]
    if not exact:
        return (MappingState.COMPANY_NOT_FOUND,
                f'ConnectWise has no company with the identifier "{mapping.psa_company}". Enter the identifier '
                "shown on the company in ConnectWise." +
                _case_hint(mapping.psa_company, [c.get("identifier", "") for c in companies]), {})
    psa_company = exact[0]
    ids = {"psa_company_ref": psa_company["id"]}
    agreements = client.agreements(company_ref=psa_company["id"], type_name=mapping.agreement_type)
    open_agreements = [a for a in agreements if a.get("agreementStatus", "Active") == "Active"]
    matching = [a for a in open_agreements if (a.get("type") or {}).get("name") == mapping.agreement_type]
    if not matching:
        types = [(a.get("type") or {}).get("name", "") for a in open_agreements]
        if not types:
            types = [(a.get("type") or {}).get("name", "") for a in
                     client.agreements_of_company(company_ref=psa_company["id"])]
        return (MappingState.AGREEMENT_NOT_FOUND,
                f'{psa_company.get("name", mapping.psa_company)} has no active agreement of type '
                f'"{mapping.agreement_type}".' + (_case_hint(mapping.agreement_type, types) or
                                                   " Create the agreement in ConnectWise or correct the type name."),
                ids)
    if len(matching) > 1:
        listed = ", ".join(f'"{a.get("name", a["id"])}"' for a in matching)
        return (MappingState.MULTIPLE_AGREEMENTS,
                f'{psa_company.get("name", mapping.psa_company)} has {len(matching)} active agreements of type '
                f'"{mapping.agreement_type}" ({listed}). Keep one of them active, or give the one to bill its own '
                "agreement type.", ids)
    ids["agreement_ref"] = matching[0]["id"]
    products = client.products(identifier=mapping.product_identifier)
    exact_products = [p for p in products if p.get("identifier") == mapping.product_identifier]
    if not exact_products:
        return (MappingState.PRODUCT_NOT_FOUND,
                f'ConnectWise has no product with the identifier "{mapping.product_identifier}".' +
                (_case_hint(mapping.product_identifier, [p.get("identifier", "") for p in products]) or
                 " Enter the identifier of the product in the ConnectWise product catalog."), ids)
    ids["product_ref"] = exact_products[0]["id"]
    return MappingState.OK, f'Additions go to the agreement "{matching[0].get("name", "")}".', ids


def mapping_check(*, mapping: CompanyMapping, client: ConnectWiseClient | None = None) -> CompanyMapping:
    """Resolve the mapping against the PSA now and store its state."""
    try:
        client = client or client_for(mapping.connection, timeout=10.0, max_wait_seconds=10.0)
        state, detail, ids = mapping_resolve(mapping=mapping, client=client)
    except PsaError as error:
        state, detail, ids = MappingState.UNREACHABLE, f"{error.answer} Check the connection, then save again.", {}
    mapping.state, mapping.state_detail, mapping.checked_at = state, detail, timezone.now()
    mapping.psa_company_ref = ids.get("psa_company_ref")
    mapping.agreement_ref = ids.get("agreement_ref")
    mapping.product_ref = ids.get("product_ref")
    CompanyMapping.objects.filter(pk=mapping.pk).update(
        state=state, state_detail=detail, checked_at=mapping.checked_at, psa_company_ref=mapping.psa_company_ref,
        agreement_ref=mapping.agreement_ref, product_ref=mapping.product_ref)
    return mapping


def mapping_save(*, actor: User, company: Company, psa_company: str, agreement_type: str,
                 product_identifier: str, check: bool = True) -> CompanyMapping:
    """B1/X1: where the company's usage goes. Saved, then checked against the PSA."""
    partner = company.parent
    connection = PsaConnection.objects.filter(company=partner).first() if partner else None
    if connection is None or not integration_allowed(partner):
        raise ValidationError({"__all__": BASIC_MESSAGE if partner and partner.plan == PartnerPlan.BASIC
                               else "Save the ConnectWise connection first."})
    values = {"psa_company": psa_company.strip(), "agreement_type": agreement_type.strip(),
              "product_identifier": product_identifier.strip()}
    labels = {"psa_company": "the company identifier in ConnectWise", "agreement_type": "the agreement type name",
              "product_identifier": "the product identifier"}
    errors = {f: f"Enter {labels[f]}." for f, v in values.items() if not v}
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        mapping = (CompanyMapping.objects.select_for_update(of=("self",)).select_related("connection__company")
                   .filter(company=company).first())
        before = {f: getattr(mapping, f) for f in MAPPING_AUDIT_FIELDS} if mapping else None
        owner_changed = mapping is not None and mapping.connection_id != connection.pk
        if owner_changed:
            # H5/X1: the company moved and another partner bills it from now on: said in the log even when
            # the names stay the same
            before["billed_by"] = mapping.connection.company.name
        if mapping is None:
            mapping = CompanyMapping(company=company, connection=connection)
        changed = before is None or owner_changed or before != values
        mapping.connection = connection
        for field, value in values.items():
            setattr(mapping, field, value)
        if changed:
            mapping.state, mapping.state_detail = MappingState.UNCHECKED, ""
            mapping.psa_company_ref = mapping.agreement_ref = mapping.product_ref = None
        mapping.save()
        after = {**values, "company": company.name} if before is None else dict(values)
        if owner_changed:
            after["billed_by"] = partner.name
        audit_record(actor=actor, company=partner, action="integration.mapping", obj=mapping,
                     before=before, after=after)
    if check:
        mapping = mapping_check(mapping=mapping)
    return mapping


# --- the sync (B2-B4) ---------------------------------------------------------------------------------

class NotSynced(Exception):
    """The company cannot be synced as things stand (B2, or a mapping the partner must fix)."""


def _eligible_mapping(company: Company) -> CompanyMapping:
    """B2: a company on a monthly subscription, under a partner not on the Basic plan, mapped by it."""
    partner = company.parent
    if partner is None or not integration_allowed(partner):
        raise NotSynced(BASIC_MESSAGE)
    if not Company.objects.filter(is_monthly_q(), pk=company.pk).exists():
        raise NotSynced("The company is not on a monthly subscription; only monthly subscriptions are billed.")
    mapping = (CompanyMapping.objects.select_related("connection")
               .filter(company=company, connection__company=partner).first())
    if mapping is None:
        raise NotSynced("The company has no agreement type and product yet.")
    if not mapping.connection.enabled:
        raise NotSynced(TURNED_OFF_MESSAGE)
    return mapping


def addition_sync(*, company_id: int, month: dt.date, trigger: str = SyncTrigger.SCHEDULE,
                  force: bool = False, now: dt.datetime | None = None) -> SyncAttempt | None:
    """B3/B4: push the month's count of active endpoints to the company's addition.

    Creates the addition the first time, then updates its quantity when the count changed and the
    last push is at least four hours old (`force`, from "Sync now", skips the wait). Returns the
    logged attempt, or None when there was nothing to send. PSA failures are logged, not raised:
    the caller retries those whose attempt is `retryable`.
    """
    now = now or timezone.now()
    company = Company.objects.select_related("parent").get(pk=company_id)
    past = month < month_start(now)
    stored = _stored_addition(company=company, month=month) if past else None
    try:
        connection, mapping = _billing_target(company=company, stored=stored)
    except NotSynced as reason:
        connection = stored.connection if stored else PsaConnection.objects.filter(company_id=company.parent_id).first()
        if connection is None or trigger == SyncTrigger.SCHEDULE:
            return None  # nothing configured or nothing the partner asked for: nothing to log
        return SyncAttempt.objects.create(connection=connection, company=company, month=month,
                                          outcome=SyncOutcome.NOT_SYNCED, trigger=trigger, answer=str(reason))
    # the count of the partner that bills it: after a move, a finalized month stays its old partner's (H5)
    count = active_endpoint_counts(company_ids=[company.pk], month=month, partner_id=connection.company_id)[company.pk]
    PsaAddition.objects.get_or_create(company=company, month=month)
    with transaction.atomic():
        # one sync per company-month at a time: a second worker waits here and then sees the id
        addition = PsaAddition.objects.select_for_update().get(company=company, month=month)
        if mapping is not None and past and addition.addition_ref is not None and addition.connection_id is not None \
                and addition.connection_id != connection.pk:
            return None  # made meanwhile by another worker: the next run pushes it where it is
        left_behind = (_start_fresh_if_another_psa(addition=addition, connection=connection, month_open=not past,
                                                   trigger=trigger)
                       if mapping else "")
        if addition.addition_ref is not None and addition.quantity == count and not force:
            closed_at = month_closed_at(company_ids=[company.pk], month=month)[company.pk]
            if closed_at is not None and (addition.synced_at is None or addition.synced_at < closed_at):
                # a closed month, already right: its final push is done
                addition.synced_at = now
                addition.save(update_fields=["synced_at"])
            return None
        if (addition.addition_ref is not None and not force and addition.synced_at
                and now - addition.synced_at < UPDATE_INTERVAL):
            return None
        attempt = SyncAttempt(connection=connection, company=company, month=month, quantity=count,
                              trigger=trigger)
        try:
            client = client_for(connection)
            _push(client=client, mapping=mapping, addition=addition, company=company, month=month,
                  count=count, attempt=attempt)
        except PsaError as error:
            attempt.outcome, attempt.answer, attempt.retryable = SyncOutcome.FAILED, error.answer, error.retryable
            attempt.http_status = error.status
        except NotSynced as reason:
            attempt.outcome, attempt.answer = SyncOutcome.NOT_SYNCED, str(reason)
        else:
            attempt.outcome = SyncOutcome.OK
            addition.quantity, addition.synced_at = count, now
        if left_behind:
            attempt.answer = f"{left_behind} {attempt.answer}"
        addition.save()
        attempt.save()
    logger.info("psa.sync", extra={"company": company.pk, "month": month.isoformat(), "quantity": count,
                                   "outcome": attempt.outcome, "status": attempt.http_status})
    return attempt


def _stored_addition(*, company: Company, month: dt.date) -> PsaAddition | None:
    """A past month's addition that exists: its final push goes to it, where it is (its agreement, through
    the connection that made it), whatever the mapping says today."""
    return (PsaAddition.objects.select_related("connection__company")
            .filter(company=company, month=month, addition_ref__isnull=False, connection__isnull=False).first())


def _billing_target(*, company: Company, stored: PsaAddition | None) -> tuple[PsaConnection, CompanyMapping | None]:
    """The connection to push with, and the mapping to follow (None: update `stored` where it is)."""
    if stored is None:
        mapping = _eligible_mapping(company)
        return mapping.connection, mapping
    connection = stored.connection
    if not integration_allowed(connection.company):  # B2, as for any push
        raise NotSynced(BASIC_MESSAGE)
    if not Company.objects.filter(is_monthly_q(), pk=company.pk).exists():
        raise NotSynced("The company is not on a monthly subscription; only monthly subscriptions are billed.")
    if not connection.enabled:
        raise NotSynced(TURNED_OFF_MESSAGE)
    return connection, None


def _start_fresh_if_another_psa(*, addition: PsaAddition, connection: PsaConnection, month_open: bool,
                                trigger: str) -> str:
    """H5: an addition's ids mean something only in the PSA of the connection that made it. When another
    connection bills the company now (it moved to another partner, or the connection that made it was
    removed), this connection's month starts afresh in its own PSA. The open month follows the company
    to its new partner (usage bills it to whoever has the company at the close), so the old addition is
    set to 0 through the connection that made it, logged in that partner's log; a failure there is
    kept and tried again (PsaZeroing). Returns what to tell the partner ("" when nothing changed hands)."""
    if addition.connection_id == connection.pk or (addition.addition_ref is None and addition.agreement_ref is None):
        addition.connection = connection
        return ""
    old = addition.connection
    logger.info("psa.addition_left_behind", extra={
        "company": addition.company_id, "month": addition.month.isoformat(), "previous_connection":
        addition.connection_id, "connection": connection.pk, "addition": addition.addition_ref})
    told = "The company was billed by another partner's ConnectWise this month."
    if month_open and old is not None and addition.addition_ref is not None and addition.agreement_ref is not None:
        attempt = zeroing_try(_zeroing_for(addition, old), trigger=trigger)
        if attempt.outcome == SyncOutcome.OK:
            told += " Its addition there was set to 0: the month is billed here."
        elif attempt.retryable:
            told += (" Its addition there could not be set to 0 yet; it is tried again every hour, and the other "
                     "partner's log says how it went.")
        else:
            told += " Its addition there could not be set to 0; the other partner's log asks to set it by hand."
    addition.connection = connection
    addition.agreement_ref = addition.addition_ref = addition.quantity = addition.synced_at = None
    return told


def _zeroing_for(addition: PsaAddition, old: PsaConnection) -> PsaZeroing:
    """The addition's zeroing, new, or reset when the same addition is left behind again (the company
    came back to the old partner, which took it up again, and left again). Under the caller's lock
    on the company-month's PsaAddition, as every use of a zeroing is."""
    zeroing, _ = PsaZeroing.objects.update_or_create(
        connection=old, addition_ref=addition.addition_ref,
        defaults={"company_id": addition.company_id, "month": addition.month, "agreement_ref": addition.agreement_ref,
                  "site": old.site, "psa_company_id": old.psa_company_id, "tries": 0, "done_at": None})
    return zeroing


def _zeroing_blocked(zeroing: PsaZeroing) -> str:
    """Why the zeroing's connection cannot be used for it as things stand ("" when it can)."""
    connection = zeroing.connection
    if not integration_allowed(connection.company):
        return BASIC_MESSAGE
    if not connection.enabled:
        return TURNED_OFF_MESSAGE
    if (connection.site, connection.psa_company_id) != (zeroing.site, zeroing.psa_company_id):
        return "The ConnectWise connection now points at another ConnectWise site or company."
    return ""


def zeroing_try(zeroing: PsaZeroing, *, trigger: str) -> SyncAttempt:
    """One try at setting a left-behind addition to 0, logged in its connection's log. Retryable
    failures leave it for the hourly retry (ZEROING_TRIES in all); anything a retry cannot fix ends it,
    and the log asks the partner to set the addition to 0 by hand."""
    connection = zeroing.connection
    attempt = SyncAttempt(connection=connection, company_id=zeroing.company_id, month=zeroing.month, quantity=0,
                          operation="update", trigger=trigger)
    by_hand = f"{MOVED} set addition {zeroing.addition_ref} to 0 in ConnectWise, or the month is billed twice."
    blocked = _zeroing_blocked(zeroing)
    if blocked:
        attempt.outcome, attempt.answer = SyncOutcome.NOT_SYNCED, f"{blocked} {by_hand}"
        zeroing.tries = max(zeroing.tries, ZEROING_TRIES)  # not tried again: nothing here would change that
    else:
        zeroing.tries += 1
        try:
            client = client_for(connection)
            client.addition_update(agreement_ref=zeroing.agreement_ref, addition_ref=zeroing.addition_ref,
                                   quantity=0, cancelled_date=month_last_day(zeroing.month))
        except PsaError as error:
            attempt.http_status = error.status
            if error.status == 404:  # removed in the PSA by hand: nothing bills the month there any more
                attempt.outcome = SyncOutcome.OK
                attempt.answer = (f"{error.answer} {MOVED} addition {zeroing.addition_ref} is not in ConnectWise "
                                  "any more, so it bills nothing here.")
                zeroing.done_at = timezone.now()
            else:
                attempt.outcome = SyncOutcome.FAILED
                attempt.retryable = error.retryable and zeroing.tries < ZEROING_TRIES
                if not attempt.retryable:
                    zeroing.tries = max(zeroing.tries, ZEROING_TRIES)
                then = ("it is tried again in an hour." if attempt.retryable else
                        f"no more tries after {zeroing.tries}: set it to 0 in ConnectWise, or the month is billed "
                        "twice.")
                attempt.answer = f"{error.answer} {MOVED} addition {zeroing.addition_ref} could not be set to 0; {then}"
        else:
            attempt.outcome, attempt.http_status = SyncOutcome.OK, client.last_status
            attempt.answer = f"{MOVED} addition {zeroing.addition_ref} set to 0."
            zeroing.done_at = timezone.now()
    zeroing.save(update_fields=["tries", "done_at"])
    attempt.save()
    logger.info("psa.addition_zeroed", extra={"zeroing": zeroing.pk, "outcome": attempt.outcome,
                                              "status": attempt.http_status, "tries": zeroing.tries})
    return attempt


def zeroings_retry() -> int:
    """Beat, hourly: left-behind additions not set to 0 yet, tried again, oldest first. Returns the ones
    set to 0 (or found gone). Each under its company-month's PsaAddition lock, as addition_sync takes it:
    when the old connection bills the company with that addition again (the company came back), the
    zeroing is over and nothing is sent."""
    done = 0
    pending = (PsaZeroing.objects.filter(done_at__isnull=True, tries__lt=ZEROING_TRIES)
               .order_by("created_at", "pk").values_list("pk", "company_id", "month"))
    for pk, company_id, month in list(pending):
        try:
            with transaction.atomic():
                addition = PsaAddition.objects.select_for_update().filter(company_id=company_id, month=month).first()
                zeroing = (PsaZeroing.objects.select_for_update(skip_locked=True)
                           .select_related("connection__company")
                           .filter(pk=pk, done_at__isnull=True, tries__lt=ZEROING_TRIES).first())
                if zeroing is None:  # done meanwhile, or another run has it
                    continue
                taken_up = addition is not None and (addition.connection_id, addition.addition_ref) == (
                    zeroing.connection_id, zeroing.addition_ref)
                if taken_up or Company.objects.filter(pk=company_id, parent_id=zeroing.connection.company_id).exists():
                    # the company is back with the old partner, which bills the month (with that addition, found
                    # again by its next sync): not to be zeroed
                    zeroing.done_at = timezone.now()
                    zeroing.save(update_fields=["done_at"])
                    continue
                attempt = zeroing_try(zeroing, trigger=SyncTrigger.RETRY)
                done += attempt.outcome == SyncOutcome.OK
        except DatabaseError:  # one row's fault must not stop the others
            logger.exception("psa.zeroing_failed", extra={"zeroing": pk})
    return done


def _push(*, client: ConnectWiseClient, mapping: CompanyMapping | None, addition: PsaAddition, company: Company,
          month: dt.date, count: int, attempt: SyncAttempt) -> None:
    if mapping is None:
        # the final push of a past month: its addition, on the agreement it was made on (U12, B4)
        updated = client.addition_update(agreement_ref=addition.agreement_ref, addition_ref=addition.addition_ref,
                                         quantity=count, cancelled_date=month_last_day(month))
        attempt.operation, attempt.http_status = "update", client.last_status
        attempt.answer = f"ConnectWise answered {client.last_status}: addition {addition.addition_ref} " \
                         f"now has quantity {updated.get('quantity', count)}."
        return
    if mapping.state != MappingState.OK or mapping.agreement_ref is None:
        mapping = mapping_check(mapping=mapping, client=client)
        if mapping.state == MappingState.UNREACHABLE:
            raise PsaError(mapping.state_detail)
        if mapping.state != MappingState.OK:
            raise NotSynced(mapping.state_detail)
    if addition.agreement_ref not in (None, mapping.agreement_ref):
        # the partner mapped the company to another agreement: the month's addition moves there, and
        # the one on the old agreement is set to 0 first so the month is never billed twice (B4)
        if addition.addition_ref is not None:
            client.addition_update(agreement_ref=addition.agreement_ref, addition_ref=addition.addition_ref,
                                   quantity=0, cancelled_date=month_last_day(month))
        addition.addition_ref = None
    addition.agreement_ref = mapping.agreement_ref
    description = addition_description(company=company, month=month)
    if addition.addition_ref is None:
        # an earlier attempt may have created it and lost the answer: find it before creating
        found = client.additions(agreement_ref=mapping.agreement_ref, description=description)
        found = [a for a in found if a.get("description") == description]
        if found:
            addition.addition_ref = found[0]["id"]
            addition.save(update_fields=["addition_ref", "agreement_ref", "connection"])
            if found[0].get("quantity") == count and found[0].get("cancelledDate") == psa_date(month_last_day(month)):
                attempt.operation, attempt.http_status = "unchanged", client.last_status
                attempt.answer = f"ConnectWise answered {client.last_status}: addition {found[0]['id']} already " \
                                 f"has quantity {count}."
                return
    if addition.addition_ref is None:
        created = client.addition_create(agreement_ref=mapping.agreement_ref, product_ref=mapping.product_ref,
                                         quantity=count, effective_date=month, cancelled_date=month_last_day(month),
                                         description=description)
        addition.addition_ref = created["id"]
        attempt.operation = "create"
        attempt.answer = f"ConnectWise answered {client.last_status}: created addition {created['id']} " \
                         f"with quantity {created.get('quantity', count)}."
    else:
        # the cancelled date goes again with every update (the final one too): an addition made without one
        # would otherwise stay on every later invoice
        updated = client.addition_update(agreement_ref=mapping.agreement_ref, addition_ref=addition.addition_ref,
                                         quantity=count, cancelled_date=month_last_day(month))
        attempt.operation = "update"
        attempt.answer = f"ConnectWise answered {client.last_status}: addition {addition.addition_ref} " \
                         f"now has quantity {updated.get('quantity', count)}."
    attempt.http_status = client.last_status


def sync_due(*, now: dt.datetime | None = None) -> list[tuple[int, str]]:
    """B3: the company-months to push now: every mapped, eligible company of every partner allowed
    to sync, for the current month; and, once the month before is closed for the company and its
    subtree (U12: its figures are final from then on), its final count. Pushing it at midnight
    instead would miss what the rollups merge between midnight and the close, and nothing would
    correct it afterwards. A closed month that has no addition (the mapping was fixed after the month
    ended, or every create failed) is created then, by the partner that billed the company in it.
    The four-hour rule and "nothing changed" are decided by addition_sync."""
    now = now or timezone.now()
    current, previous = month_start(now), month_previous(now)
    mappings = list(CompanyMapping.objects
                    .filter(connection__enabled=True, connection__company__plan=PartnerPlan.STANDARD,
                            connection__company__type=CompanyType.PARTNER)
                    .filter(is_monthly_q("company__"))
                    .exclude(state__in=[MappingState.COMPANY_NOT_FOUND, MappingState.AGREEMENT_NOT_FOUND,
                                        MappingState.MULTIPLE_AGREEMENTS, MappingState.PRODUCT_NOT_FOUND])
                    .filter(company__parent_id=F("connection__company_id"))
                    .values_list("company_id", "connection__company_id", "company__created_at"))
    due = [(company_id, current.isoformat()) for company_id, _, _ in mappings]
    made = PsaAddition.objects.filter(month=previous, addition_ref__isnull=False)
    # a final push goes through the connection that made the addition (it may not be today's mapping's)
    pushed = dict(made.filter(connection__enabled=True, connection__company__plan=PartnerPlan.STANDARD)
                  .values_list("company_id", "synced_at"))
    has_addition = set(made.values_list("company_id", flat=True))
    start, _ = month_bounds(current)
    missing = {company_id: partner_id for company_id, partner_id, created_at in mappings
               if company_id not in has_addition and created_at < start}
    # H5: not for a month the company spent under another partner (its finalized row names that one)
    for company_id, lineage in (CompanyMonthUsage.objects.filter(month=previous, company_id__in=list(missing))
                                .values_list("company_id", "lineage")):
        if f"/{missing[company_id]}/{company_id}/" not in lineage:
            missing.pop(company_id)
    closed = month_closed_at(company_ids=sorted(set(pushed) | set(missing)), month=previous)
    due += [(company_id, previous.isoformat()) for company_id, synced_at in sorted(pushed.items())
            if closed[company_id] is not None and (synced_at is None or synced_at < closed[company_id])]
    late = [company_id for company_id in sorted(missing) if closed[company_id] is not None]
    if late:
        logger.info("psa.closed_month_without_addition", extra={"month": previous.isoformat(), "companies": late})
    due += [(company_id, previous.isoformat()) for company_id in late]
    return due


def sync_partner_company_ids(*, partner_id: int) -> list[int]:
    """"Sync now" for a whole partner: its mapped companies (the sync says why any is not synced)."""
    return list(CompanyMapping.objects.filter(connection__company_id=partner_id, company__parent_id=partner_id)
                .order_by("company__name").values_list("company_id", flat=True))
