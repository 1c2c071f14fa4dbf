"""SPEC B1-B4 against a local ConnectWise API (tests/integrations/fake_connectwise.py): the tests
assert on what the PSA received."""

import base64
import datetime as dt
import time
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.db import connection as db
from django.test.utils import CaptureQueriesContext

from companies.models import AuditEvent, PartnerPlan
from integrations.connectwise import ConnectWiseClient, Credentials, PsaError
from integrations.models import (
    CompanyMapping,
    MappingState,
    PsaAddition,
    PsaZeroing,
    SyncAttempt,
    SyncOutcome,
    SyncTrigger,
)
from integrations.selectors import active_endpoint_counts
from integrations.services import (
    addition_description,
    addition_sync,
    connection_save,
    connection_test,
    mapping_save,
    month_last_day,
    partner_plan_set,
    sync_due,
)
from licensing.models import License
from tests.factories import make_company, make_partner
from tests.integrations.conftest import AGREEMENT_TYPE, PRODUCT, set_active
from tests.integrations.fake_connectwise import API
from usage.models import CompanyMonthUsage, MonthClose

pytestmark = pytest.mark.django_db


def _map(b, company, cw_company, *, agreement_type=AGREEMENT_TYPE, product=PRODUCT):
    return mapping_save(actor=b.admin, company=company, psa_company=cw_company["identifier"],
                        agreement_type=agreement_type, product_identifier=product)


def _client(cw, **overrides) -> ConnectWiseClient:
    creds = {"site": cw.url, "company_id": cw.company_id, "public_key": cw.public_key,
             "private_key": cw.private_key, "client_id": cw.client_id, **overrides}
    return ConnectWiseClient(Credentials(**creds))


# --- the client ----------------------------------------------------------------------------------------

def test_B1_client_signs_with_company_plus_public_key_and_client_id(cw):
    info = _client(cw).system_info()
    assert info["version"].startswith("v2025")
    sent = cw.received[-1]
    assert sent.path == API + "/system/info"
    token = sent.headers["authorization"].removeprefix("Basic ")
    assert base64.b64decode(token).decode() == f"{cw.company_id}+{cw.public_key}:{cw.private_key}"
    assert sent.headers["clientid"] == cw.client_id

    with pytest.raises(PsaError) as error:
        _client(cw, private_key="wrong").system_info()
    assert error.value.status == 401
    assert "Authentication failed" in error.value.answer


def test_B1_client_pages_through_long_lists(cw):
    for i in range(230):
        cw.add_company(f"c{i:03}")
    rows = _client(cw).get_all("/company/companies", page_size=100)
    assert [r["identifier"] for r in rows] == [f"c{i:03}" for i in range(230)]
    pages = [(r.query["page"], r.query["pageSize"]) for r in cw.calls("GET", "/company/companies")]
    assert pages == [("1", "100"), ("2", "100"), ("3", "100")]


def test_B4_client_honours_retry_after_on_429(cw):
    cw.fail("GET", "/system/info", 429, retry_after="2")
    slept: list[float] = []
    client = ConnectWiseClient(Credentials(cw.url, cw.company_id, cw.public_key, cw.private_key, cw.client_id),
                               sleep=slept.append)
    assert client.system_info()["isCloud"] is True
    assert slept == [2.0]
    assert len(cw.calls("GET", "/system/info")) == 2

    # a PSA that keeps throttling past the wait budget fails the call, to be retried later
    cw.fail("GET", "/system/info", 429, retry_after="20", times=3)
    with pytest.raises(PsaError) as error:
        ConnectWiseClient(client.credentials, sleep=slept.append, max_wait_seconds=30).system_info()
    assert error.value.status == 429 and error.value.retryable


@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_B4_a_zero_or_past_retry_after_still_waits_and_gives_up(cw, retry_after):
    """Retry-After 0 (or a date gone by) used to add nothing to the waited time: 200 throttled
    answers made 201 requests at full speed. Each retry now waits at least MIN_RETRY_DELAY and a
    call stops after MAX_ATTEMPTS requests, failing retryably."""
    from integrations import connectwise

    cw.fail("GET", "/system/info", 429, retry_after=retry_after, times=200)
    slept: list[float] = []
    client = ConnectWiseClient(Credentials(cw.url, cw.company_id, cw.public_key, cw.private_key, cw.client_id),
                               sleep=slept.append)
    with pytest.raises(PsaError) as error:
        client.system_info()
    assert error.value.status == 429 and error.value.retryable
    assert len(cw.calls("GET", "/system/info")) == connectwise.MAX_ATTEMPTS
    assert slept == [connectwise.MIN_RETRY_DELAY] * (connectwise.MAX_ATTEMPTS - 1)


def test_connection_test_reports_what_the_psa_answered(billing, cw):
    tested = connection_test(connection=billing.connection)
    assert tested.last_test_ok is True
    assert tested.last_test_answer == "ConnectWise answered 200: signed in, version v2025.1.12345."
    cw.private_key = "rotated-in-the-psa"
    tested = connection_test(connection=billing.connection)
    assert tested.last_test_ok is False
    assert tested.last_test_answer == "ConnectWise answered 401: Authentication failed"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_B1_X2_redirects_are_refused_not_followed(billing, cw, status):
    """A redirect would carry the request (and its Authorization header) to an address that was
    never checked against private networks: the client refuses it and says so."""
    cw.fail("GET", "/system/info", status, location=f"{cw.url}/elsewhere/system/info")
    tested = connection_test(connection=billing.connection)
    assert tested.last_test_ok is False
    assert f"ConnectWise answered {status}" in tested.last_test_answer
    assert "redirect" in tested.last_test_answer
    assert [r.path for r in cw.received if "/elsewhere" in r.path] == []


# --- B1: mappings --------------------------------------------------------------------------------------

def test_B1_names_match_case_sensitively_and_mismatches_are_reported_per_company(billing, cw):
    wrong_case = _map(billing, billing.alpha, billing.cw_alpha, agreement_type="managed security")
    assert wrong_case.state == MappingState.AGREEMENT_NOT_FOUND
    assert 'Names are case-sensitive: ConnectWise has "Managed Security"' in wrong_case.state_detail
    # the PSA was asked with the conditions syntax (and answered without regard to case)
    query = cw.calls("GET", "/finance/agreements")[-1].query
    assert query["conditions"] == (f'company/id={billing.cw_alpha["id"]} and type/name="managed security" '
                                   "and cancelledFlag=false")

    product_case = _map(billing, billing.alpha, billing.cw_alpha, product="gz-endpoint")
    assert product_case.state == MappingState.PRODUCT_NOT_FOUND
    assert 'ConnectWise has "GZ-ENDPOINT"' in product_case.state_detail

    unknown = _map(billing, billing.beta, {"identifier": "NoSuchCo"})
    assert unknown.state == MappingState.COMPANY_NOT_FOUND
    assert 'no company with the identifier "NoSuchCo"' in unknown.state_detail

    cw.add_agreement(billing.cw_beta, AGREEMENT_TYPE, name="Beta second")
    twice = _map(billing, billing.beta, billing.cw_beta)
    assert twice.state == MappingState.MULTIPLE_AGREEMENTS
    assert "has 2 active agreements" in twice.state_detail

    fixed = _map(billing, billing.alpha, billing.cw_alpha)
    assert fixed.state == MappingState.OK
    assert (fixed.agreement_ref, fixed.product_ref) == (billing.alpha_agreement["id"], billing.product["id"])
    # a wrongly mapped company is reported, not silently skipped, when synced
    set_active(billing.beta, billing.month, 4)
    attempt = addition_sync(company_id=billing.beta.pk, month=billing.month, trigger=SyncTrigger.MANUAL)
    assert attempt.outcome == SyncOutcome.NOT_SYNCED and "has 2 active agreements" in attempt.answer
    assert cw.calls("POST") == []


def test_X1_settings_and_mappings_are_audited_without_keys(billing, cw):
    _map(billing, billing.alpha, billing.cw_alpha)
    connection_save(actor=billing.admin, partner=billing.partner, site=cw.url, psa_company_id=cw.company_id,
                    client_id="new-client", public_key="pub-2", private_key="priv-2-secret")
    events = AuditEvent.objects.filter(company=billing.partner, action__startswith="integration.").order_by("id")
    assert [e.action for e in events] == ["integration.connection", "integration.mapping", "integration.connection"]
    assert events[2].before == {"client_id": cw.client_id, "keys": "kept"}
    assert events[2].after == {"client_id": "new-client", "keys": "replaced"}
    assert events[1].after["agreement_type"] == AGREEMENT_TYPE
    dumped = str(list(AuditEvent.objects.values_list("before", "after")))
    assert "priv-2-secret" not in dumped and cw.private_key not in dumped


def test_keys_are_encrypted_at_rest(billing, cw):
    with db.cursor() as cursor:
        cursor.execute("SELECT public_key_encrypted, private_key_encrypted FROM integrations_psaconnection "
                       "WHERE id = %s", [billing.connection.pk])
        public_raw, private_raw = cursor.fetchone()
    assert cw.public_key not in public_raw and cw.private_key not in private_raw
    assert public_raw.startswith("gAAAA") and private_raw.startswith("gAAAA")  # Fernet tokens
    # and they still sign requests
    assert connection_test(connection=billing.connection).last_test_ok is True


def test_connection_fields_are_validated_by_name(billing):
    with pytest.raises(ValidationError) as error:
        connection_save(actor=billing.admin, partner=billing.partner, site="ftp://x", psa_company_id="",
                        client_id="c", public_key="only-public")
    assert set(error.value.message_dict) == {"site", "psa_company_id", "private_key"}


@pytest.mark.parametrize("site", ["https://[zz", "https://[::1", "https://na.myconnectwise.net:99999"])
def test_X2_an_unparsable_site_is_a_field_error_not_a_crash(billing, cw, site):
    with pytest.raises(ValidationError) as error:
        connection_save(actor=billing.admin, partner=billing.partner, site=site, psa_company_id=cw.company_id,
                        client_id="c", public_key="p", private_key="k")
    assert set(error.value.message_dict) == {"site"}
    assert "Enter the address of your ConnectWise site" in error.value.message_dict["site"][0]
    billing.connection.refresh_from_db()
    assert billing.connection.site == cw.url  # nothing stored is lost


@pytest.mark.parametrize("site", ["http://127.0.0.1:8000", "https://localhost", "https://10.1.2.3",
                                  "https://169.254.169.254", "https://[::1]", "https://192.168.0.10:8443"])
def test_B1_X2_in_production_the_site_must_be_a_public_address(billing, cw, settings, site):
    """The console calls the site on the partner's behalf: it must not reach this machine or a
    private network (a partner could otherwise read internal services through "test connection")."""
    settings.PSA_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(ValidationError) as error:
        connection_save(actor=billing.admin, partner=billing.partner, site=site, psa_company_id=cw.company_id,
                        client_id="c", public_key="p", private_key="k")
    assert "private network" in error.value.message_dict["site"][0]
    # a connection saved earlier that now points inward is refused at use, and nothing is sent
    before = len(cw.calls("GET"))
    result = connection_test(connection=billing.connection)
    assert result.last_test_ok is False and "private network" in result.last_test_answer
    assert len(cw.calls("GET")) == before
    connection_save(actor=billing.admin, partner=billing.partner, site="https://93.184.216.34",
                    psa_company_id=cw.company_id, client_id="c", public_key="p", private_key="k")


# --- B2 ------------------------------------------------------------------------------------------------

def test_B2_basic_plan_partner_cannot_enable_and_nothing_is_sent(billing, cw, platform):
    _map(billing, billing.alpha, billing.cw_alpha)
    set_active(billing.alpha, billing.month, 3)
    platform_admin = billing.admin.__class__.objects.create_user(
        email="root@example.test", password="x", full_name="Root", company=platform, role="company_admin")
    partner_plan_set(actor=platform_admin, company=billing.partner, plan=PartnerPlan.BASIC)
    event = AuditEvent.objects.get(company=billing.partner, action="company.plan")
    assert (event.before, event.after) == ({"plan": "standard"}, {"plan": "basic"})

    assert sync_due() == []
    billing.partner.refresh_from_db()
    assert addition_sync(company_id=billing.alpha.pk, month=billing.month) is None
    manual = addition_sync(company_id=billing.alpha.pk, month=billing.month, trigger=SyncTrigger.MANUAL)
    assert manual.outcome == SyncOutcome.NOT_SYNCED and "Basic plan" in manual.answer
    with pytest.raises(ValidationError, match="not available on the Basic plan"):
        connection_save(actor=billing.admin, partner=billing.partner, site=cw.url, psa_company_id="x",
                        client_id="y")
    assert cw.calls("POST") == [] and cw.calls("PATCH") == []
    assert not PsaAddition.objects.exists()


def test_B2_only_companies_on_a_monthly_subscription_are_synced(billing, cw):
    _map(billing, billing.alpha, billing.cw_alpha)
    _map(billing, billing.beta, billing.cw_beta)
    License.objects.update_or_create(company=billing.beta, defaults={"license_type": "yearly"})
    set_active(billing.alpha, billing.month, 2)
    set_active(billing.beta, billing.month, 9)
    assert sync_due() == [(billing.alpha.pk, billing.month.isoformat())]
    for company_id, month in sync_due():
        addition_sync(company_id=company_id, month=dt.date.fromisoformat(month))
    assert addition_sync(company_id=billing.beta.pk, month=billing.month) is None
    posts = cw.calls("POST")
    assert [p.path for p in posts] == [f"{API}/finance/agreements/{billing.alpha_agreement['id']}/additions"]
    assert cw.additions[billing.beta_agreement["id"]] == []


# --- B3 ------------------------------------------------------------------------------------------------

def test_B3_one_addition_per_company_and_month_updated_as_the_count_grows(billing, cw):
    _map(billing, billing.alpha, billing.cw_alpha)
    _map(billing, billing.beta, billing.cw_beta)
    month, start = billing.month, dt.datetime(billing.month.year, billing.month.month, 1, 0, 20, tzinfo=dt.UTC)
    set_active(billing.alpha, month, 3)
    set_active(billing.beta, month, 0)

    first = addition_sync(company_id=billing.alpha.pk, month=month, now=start)
    assert (first.outcome, first.operation, first.quantity, first.http_status) == ("ok", "create", 3, 201)
    addition_sync(company_id=billing.beta.pk, month=month, now=start)
    post = cw.calls("POST")[0]
    assert post.body["quantity"] == 3 and post.body["product"] == {"id": billing.product["id"]}
    assert post.body["effectiveDate"] == f"{month.isoformat()}T00:00:00Z"
    assert post.body["billCustomer"] == "Billable"

    set_active(billing.alpha, month, 5)
    # within four hours of the last push the count waits
    assert addition_sync(company_id=billing.alpha.pk, month=month, now=start + dt.timedelta(hours=3)) is None
    update = addition_sync(company_id=billing.alpha.pk, month=month, now=start + dt.timedelta(hours=4))
    assert (update.operation, update.quantity) == ("update", 5)
    assert cw.calls("PATCH")[-1].body == [{"op": "replace", "path": "quantity", "value": 5},
                                          {"op": "replace", "path": "cancelledDate",
                                           "value": f"{month_last_day(month).isoformat()}T00:00:00Z"}]
    # nothing changed: nothing sent
    assert addition_sync(company_id=billing.alpha.pk, month=month, now=start + dt.timedelta(hours=9)) is None

    alpha_rows = cw.additions[billing.alpha_agreement["id"]]
    assert [(a["quantity"], a["description"]) for a in alpha_rows] == [
        (5, addition_description(company=billing.alpha, month=month))]
    assert [a["quantity"] for a in cw.additions[billing.beta_agreement["id"]]] == [0]
    assert len(cw.calls("POST")) == 2

    # the next month gets its own addition
    following = (month + dt.timedelta(days=32)).replace(day=1)
    set_active(billing.alpha, following, 1)
    nxt = addition_sync(company_id=billing.alpha.pk, month=following,
                        now=dt.datetime(following.year, following.month, 1, 1, tzinfo=dt.UTC))
    assert nxt.operation == "create"
    assert sorted(a["quantity"] for a in cw.additions[billing.alpha_agreement["id"]]) == [1, 5]


def test_B3_each_month_is_billed_on_its_own_invoice_only(billing, cw):
    """ConnectWise bills an addition on every invoice from its effectiveDate until its cancelledDate:
    a month's addition is cancelled on the month's last day ("the usage record remains open during
    the entire month"), and the final push keeps it so; otherwise month N's invoice would bill the
    additions of months 1..N."""
    _map(billing, billing.alpha, billing.cw_alpha)
    october, november = dt.date(2026, 10, 1), dt.date(2026, 11, 1)
    set_active(billing.alpha, october, 4)
    set_active(billing.alpha, november, 6)
    addition_sync(company_id=billing.alpha.pk, month=october, now=dt.datetime(2026, 10, 1, 0, 20, tzinfo=dt.UTC))
    post = cw.calls("POST")[-1].body
    assert (post["effectiveDate"], post["cancelledDate"]) == ("2026-10-01T00:00:00Z", "2026-10-31T00:00:00Z")
    set_active(billing.alpha, october, 5)  # the final count, pushed after the month
    at = dt.datetime(2026, 11, 1, 1, 20, tzinfo=dt.UTC)
    assert addition_sync(company_id=billing.alpha.pk, month=october, now=at).operation == "update"
    addition_sync(company_id=billing.alpha.pk, month=november, now=at)
    assert cw.calls("POST")[-1].body["cancelledDate"] == "2026-11-30T00:00:00Z"

    agreement = billing.alpha_agreement["id"]
    assert [(a["quantity"], a["cancelledDate"]) for a in cw.billed_in(agreement, october)] == [
        (5, "2026-10-31T00:00:00Z")]
    assert [a["quantity"] for a in cw.billed_in(agreement, november)] == [6]
    assert cw.billed_in(agreement, dt.date(2026, 12, 1)) == []

    # an addition left open-ended (made before this rule) is closed by its next update
    cw.additions[agreement][-1].pop("cancelledDate")
    set_active(billing.alpha, november, 7)
    addition_sync(company_id=billing.alpha.pk, month=november, now=at, force=True)
    assert cw.billed_in(agreement, dt.date(2027, 1, 1)) == []
    assert month_last_day(dt.date(2028, 2, 1)) == dt.date(2028, 2, 29)


def test_B3_count_is_endpoints_with_a_heartbeat_in_the_month(billing, cw):
    from tests.usage.fleet import Machine
    from usage.rollups import usage_company_rollup

    month = billing.month
    in_month = dt.datetime(month.year, month.month, 1, 8, tzinfo=dt.UTC)
    before = in_month - dt.timedelta(days=3)
    Machine(billing.alpha).beat(in_month).beat(in_month + dt.timedelta(hours=1))
    Machine(billing.alpha).beat(in_month)
    Machine(billing.alpha).beat(before)  # active last month only
    Machine(billing.alpha, seat=False).beat(in_month)  # connected without a seat: still active
    # a partner billed for its whole subtree
    sub = make_partner(parent=billing.partner, name="Sub MSP")
    sub_customer = make_company(parent=sub, name="Sub Customer")
    Machine(sub_customer).beat(in_month)
    Machine(sub).beat(in_month)
    for company in (billing.alpha, sub, sub_customer):
        usage_company_rollup(company_id=company.pk, months=[month])
    assert active_endpoint_counts(company_ids=[billing.alpha.pk, sub.pk, billing.beta.pk], month=month) == {
        billing.alpha.pk: 3, sub.pk: 2, billing.beta.pk: 0}
    _map(billing, billing.alpha, billing.cw_alpha)
    addition_sync(company_id=billing.alpha.pk, month=month)
    assert cw.calls("POST")[0].body["quantity"] == 3


def test_B3_sync_due_takes_mapped_companies_and_closes_the_previous_month(billing, cw):
    _map(billing, billing.alpha, billing.cw_alpha)
    _map(billing, billing.beta, {"identifier": "Nope"})  # not found: waits for the partner, not retried
    month = billing.month
    previous = (month - dt.timedelta(days=1)).replace(day=1)
    last_push = dt.datetime(previous.year, previous.month, 28, tzinfo=dt.UTC)
    PsaAddition.objects.create(company=billing.alpha, month=previous, agreement_ref=billing.alpha_agreement["id"],
                               addition_ref=1, quantity=4, synced_at=last_push, connection=billing.connection)
    # the month before is pushed a last time only once it is closed (U12)
    assert sorted(sync_due()) == [(billing.alpha.pk, month.isoformat())]
    MonthClose.objects.create(month=previous)
    assert sorted(sync_due()) == sorted([(billing.alpha.pk, month.isoformat()),
                                         (billing.alpha.pk, previous.isoformat())])


def test_B3_U12_the_final_count_of_a_month_is_pushed_after_its_close(billing, cw):
    """Heartbeats of the month's last minutes are rolled up after midnight, before the close: the
    final push waits for the close, so the PSA ends with the figure the report bills."""
    _map(billing, billing.alpha, billing.cw_alpha)
    previous = (billing.month - dt.timedelta(days=1)).replace(day=1)
    first = billing.month
    set_active(billing.alpha, previous, 4)
    last_day = dt.datetime(first.year, first.month, 1, tzinfo=dt.UTC) - dt.timedelta(hours=4, minutes=40)
    assert addition_sync(company_id=billing.alpha.pk, month=previous, now=last_day).operation == "create"
    at_0020 = dt.datetime(first.year, first.month, 1, 0, 20, tzinfo=dt.UTC)
    assert (billing.alpha.pk, previous.isoformat()) not in sync_due(now=at_0020)  # not closed yet
    assert addition_sync(company_id=billing.alpha.pk, month=previous, now=at_0020) is None
    set_active(billing.alpha, previous, 7)  # what the rollups merged before the close
    MonthClose.objects.create(month=previous)
    MonthClose.objects.filter(month=previous).update(finalized_at=at_0020 + dt.timedelta(minutes=10))  # 00:30
    at_0120 = at_0020 + dt.timedelta(hours=1)
    assert (billing.alpha.pk, previous.isoformat()) in sync_due(now=at_0120)
    final = addition_sync(company_id=billing.alpha.pk, month=previous, now=at_0120)
    assert (final.operation, final.quantity) == ("update", 7)
    assert [a["quantity"] for a in cw.additions[billing.alpha_agreement["id"]]] == [7]
    # done: the month is not due again
    assert (billing.alpha.pk, previous.isoformat()) not in sync_due(now=at_0120 + dt.timedelta(hours=5))


def test_B3_U12_a_company_failing_the_close_elsewhere_does_not_hold_back_the_final_push(billing, cw, platform):
    """The close finalizes company by company; MonthClose waits for the last. A customer of another
    partner whose rollup keeps failing leaves its own row open: Alpha's final count (its subtree is
    finalized) is pushed anyway, and the other partner's would wait."""
    from companies.models import Company

    _map(billing, billing.alpha, billing.cw_alpha)
    previous = (billing.month - dt.timedelta(days=1)).replace(day=1)
    elsewhere = make_company(parent=make_partner(parent=platform, name="Other MSP"), name="Stuck Customer")
    Company.objects.filter(pk__in=[billing.alpha.pk, elsewhere.pk]).update(created_at=dt.datetime(
        previous.year, previous.month, 2, tzinfo=dt.UTC))  # both existed in the month
    last_day = dt.datetime(billing.month.year, billing.month.month, 1, tzinfo=dt.UTC) - dt.timedelta(hours=5)
    set_active(billing.alpha, previous, 4)
    set_active(elsewhere, previous, 2)
    assert addition_sync(company_id=billing.alpha.pk, month=previous, now=last_day).operation == "create"
    at_0130 = last_day + dt.timedelta(hours=6, minutes=30)
    assert (billing.alpha.pk, previous.isoformat()) not in sync_due(now=at_0130)  # nothing finalized yet
    set_active(billing.alpha, previous, 6)  # merged before the close
    CompanyMonthUsage.objects.filter(company=billing.alpha, month=previous).update(finalized_at=at_0130)
    assert not MonthClose.objects.filter(month=previous).exists()  # the stuck customer holds it back
    at_0230 = at_0130 + dt.timedelta(hours=1)
    assert (billing.alpha.pk, previous.isoformat()) in sync_due(now=at_0230)
    final = addition_sync(company_id=billing.alpha.pk, month=previous, now=at_0230)
    assert (final.operation, final.quantity) == ("update", 6)
    assert (billing.alpha.pk, previous.isoformat()) not in sync_due(now=at_0230 + dt.timedelta(hours=5))


def test_B3_U12_the_final_push_updates_the_month_addition_where_it_was_made(billing, cw):
    """The partner maps the company to another agreement after the month ended: the month's final
    count still goes to the month's addition on the agreement it was made on (not a new one)."""
    _map(billing, billing.alpha, billing.cw_alpha)
    previous = (billing.month - dt.timedelta(days=1)).replace(day=1)
    last_day = dt.datetime(billing.month.year, billing.month.month, 1, tzinfo=dt.UTC) - dt.timedelta(hours=5)
    set_active(billing.alpha, previous, 4)
    assert addition_sync(company_id=billing.alpha.pk, month=previous, now=last_day).operation == "create"
    plus = cw.add_agreement(billing.cw_alpha, "Managed Security Plus")
    _map(billing, billing.alpha, billing.cw_alpha, agreement_type="Managed Security Plus")
    set_active(billing.alpha, previous, 7)
    MonthClose.objects.create(month=previous)
    at = last_day + dt.timedelta(hours=7)
    assert (billing.alpha.pk, previous.isoformat()) in sync_due(now=at)
    final = addition_sync(company_id=billing.alpha.pk, month=previous, now=at)
    assert (final.outcome, final.operation, final.quantity) == ("ok", "update", 7)
    assert [a["quantity"] for a in cw.additions[billing.alpha_agreement["id"]]] == [7]
    assert cw.additions[plus["id"]] == [] and len(cw.calls("POST")) == 1


def test_B3_U12_a_closed_month_that_never_got_its_addition_is_created_once_closed(billing, cw):
    """Alpha's mapping was wrong all month and fixed after it ended; every create of Beta's failed. Once
    the month is closed (U12), both are created with the final count, and logged; a company that did not
    exist in the month gets nothing for it."""
    from companies.models import Company

    previous = (billing.month - dt.timedelta(days=1)).replace(day=1)
    Company.objects.filter(pk__in=[billing.alpha.pk, billing.beta.pk]).update(
        created_at=dt.datetime(previous.year, previous.month, 2, tzinfo=dt.UTC))
    newcomer = make_company(parent=billing.partner, name="Gamma New")
    cw_gamma = cw.add_company("GammaNew")
    cw.add_agreement(cw_gamma, AGREEMENT_TYPE)
    _map(billing, newcomer, cw_gamma)
    assert _map(billing, billing.alpha, billing.cw_alpha, agreement_type="Managed Secruity").state == \
        MappingState.AGREEMENT_NOT_FOUND
    _map(billing, billing.beta, billing.cw_beta)
    set_active(billing.beta, previous, 3)
    last_day = dt.datetime(billing.month.year, billing.month.month, 1, tzinfo=dt.UTC) - dt.timedelta(hours=5)
    cw.fail("POST", "/finance/agreements", 400)
    assert addition_sync(company_id=billing.beta.pk, month=previous, now=last_day).outcome == "failed"
    _map(billing, billing.alpha, billing.cw_alpha)  # fixed after the month ended
    set_active(billing.alpha, previous, 5)
    assert [pair for pair in sync_due() if pair[1] == previous.isoformat()] == []  # not closed yet

    MonthClose.objects.create(month=previous)
    due = [pair for pair in sync_due() if pair[1] == previous.isoformat()]
    assert sorted(due) == sorted([(billing.alpha.pk, previous.isoformat()), (billing.beta.pk, previous.isoformat())])
    for company_id, month in due:
        addition_sync(company_id=company_id, month=dt.date.fromisoformat(month))
    for company, agreement, count in ((billing.alpha, billing.alpha_agreement, 5),
                                      (billing.beta, billing.beta_agreement, 3)):
        rows = cw.billed_in(agreement["id"], previous)
        assert [(a["quantity"], a["effectiveDate"][:10]) for a in rows] == [(count, previous.isoformat())]
        assert SyncAttempt.objects.filter(company=company, month=previous, outcome="ok", operation="create",
                                          trigger="schedule").count() == 1
    assert [pair for pair in sync_due() if pair[1] == previous.isoformat()] == []


def test_query_counts_stay_flat(billing, cw):
    from integrations.selectors import integration_page

    def count():
        with CaptureQueriesContext(db) as ctx:
            integration_page(partner=billing.partner, month=billing.month)
            sync_due()
        return len(ctx.captured_queries)

    _map(billing, billing.alpha, billing.cw_alpha)
    few = count()
    for i in range(8):
        company = make_company(parent=billing.partner, name=f"Extra {i}")
        CompanyMapping.objects.create(connection=billing.connection, company=company, psa_company="x",
                                      agreement_type="y", product_identifier="z")
        SyncAttempt.objects.create(connection=billing.connection, company=company, month=billing.month,
                                   outcome=SyncOutcome.OK)
    assert count() == few


# --- B4 ------------------------------------------------------------------------------------------------

def test_B4_lost_answer_then_retry_updates_instead_of_duplicating(billing, cw):
    _map(billing, billing.alpha, billing.cw_alpha)
    set_active(billing.alpha, billing.month, 6)
    cw.fail("POST", "/finance/agreements", 500, after_effect=True)  # created, but the answer is a 500
    failed = addition_sync(company_id=billing.alpha.pk, month=billing.month)
    assert (failed.outcome, failed.http_status, failed.retryable) == ("failed", 500, True)
    assert "ConnectWise answered 500" in failed.answer
    assert len(cw.additions[billing.alpha_agreement["id"]]) == 1

    retried = addition_sync(company_id=billing.alpha.pk, month=billing.month, trigger=SyncTrigger.RETRY)
    assert retried.outcome == "ok" and retried.operation == "unchanged"
    assert len(cw.calls("POST")) == 1
    set_active(billing.alpha, billing.month, 8)
    again = addition_sync(company_id=billing.alpha.pk, month=billing.month, force=True)
    assert again.operation == "update"
    assert [a["quantity"] for a in cw.additions[billing.alpha_agreement["id"]]] == [8]
    assert list(SyncAttempt.objects.filter(company=billing.alpha).order_by("id")
                .values_list("outcome", "trigger", "quantity")) == [
        ("failed", "schedule", 6), ("ok", "retry", 6), ("ok", "schedule", 8)]


def test_B4_429_retry_after_honoured_in_a_sync(billing, cw):
    _map(billing, billing.alpha, billing.cw_alpha)
    set_active(billing.alpha, billing.month, 2)
    cw.fail("POST", "/finance/agreements", 429, retry_after="1")
    started = time.monotonic()
    attempt = addition_sync(company_id=billing.alpha.pk, month=billing.month)
    assert time.monotonic() - started >= 1.0
    assert attempt.outcome == "ok"
    assert len(cw.calls("POST")) == 2
    assert len(cw.additions[billing.alpha_agreement["id"]]) == 1


def test_B4_4xx_and_network_failures_are_logged_and_retryable(billing, cw):
    _map(billing, billing.alpha, billing.cw_alpha)
    set_active(billing.alpha, billing.month, 2)
    cw.fail("POST", "/finance/agreements", 400)
    bad = addition_sync(company_id=billing.alpha.pk, month=billing.month)
    assert (bad.outcome, bad.http_status, bad.retryable) == ("failed", 400, True)
    billing.connection.site = "http://127.0.0.1:9"  # nothing listens there
    billing.connection.save()
    down = addition_sync(company_id=billing.alpha.pk, month=billing.month)
    assert down.outcome == "failed" and down.http_status is None and "could not be reached" in down.answer
    assert not PsaAddition.objects.get(company=billing.alpha).addition_ref


def test_B4_remapping_to_another_agreement_leaves_the_month_billed_once(billing, cw):
    _map(billing, billing.alpha, billing.cw_alpha)
    set_active(billing.alpha, billing.month, 5)
    assert addition_sync(company_id=billing.alpha.pk, month=billing.month).operation == "create"
    plus = cw.add_agreement(billing.cw_alpha, "Managed Security Plus")
    _map(billing, billing.alpha, billing.cw_alpha, agreement_type="Managed Security Plus")
    set_active(billing.alpha, billing.month, 6)
    moved = addition_sync(company_id=billing.alpha.pk, month=billing.month, force=True)
    assert (moved.outcome, moved.operation, moved.quantity) == ("ok", "create", 6)
    description = addition_description(company=billing.alpha, month=billing.month)
    # the old agreement's addition is set to 0, the new one carries the count
    assert [(a["quantity"], a["description"]) for a in cw.additions[billing.alpha_agreement["id"]]] == [
        (0, description)]
    assert [(a["quantity"], a["description"]) for a in cw.additions[plus["id"]]] == [(6, description)]


# --- H5: a company billed by another partner ------------------------------------------------------------

@pytest.fixture
def moved(billing, cw, cw_other, platform):
    """Alpha, billed by Kappa for the month so far, moves under Lambda, which has its own ConnectWise
    (numbered like Kappa's: the same agreement and addition ids mean other things there)."""
    from companies.services import company_move
    from tests.factories import make_user

    _map(billing, billing.alpha, billing.cw_alpha)
    set_active(billing.alpha, billing.month, 5)
    assert addition_sync(company_id=billing.alpha.pk, month=billing.month).operation == "create"
    kappa_addition = cw.additions[billing.alpha_agreement["id"]][0]

    lambda_ = make_partner(parent=platform, name="Lambda MSP")
    lambda_admin = make_user(company=lambda_)
    lambda_connection = connection_save(actor=lambda_admin, partner=lambda_, site=cw_other.url,
                                        psa_company_id=cw_other.company_id, public_key=cw_other.public_key,
                                        private_key=cw_other.private_key, client_id=cw_other.client_id)
    cw_other.add_company("Unrelated", "Unrelated Ltd")  # Lambda's agreement for Alpha gets the id Kappa's has
    other_alpha = cw_other.add_company("AlphaDental", "Alpha Dental")
    other_agreement = cw_other.add_agreement(other_alpha, AGREEMENT_TYPE)
    product = cw_other.add_product(PRODUCT)
    # an unrelated addition in Lambda's PSA under the very ids Kappa's addition has
    unrelated = {"id": kappa_addition["id"], "quantity": 40, "description": "Someone else's"}
    cw_other.additions.setdefault(billing.alpha_agreement["id"], []).append(unrelated)
    billing.alpha = company_move(actor=None, company=billing.alpha, new_parent=lambda_)
    mapping = mapping_save(actor=lambda_admin, company=billing.alpha, psa_company="AlphaDental",
                           agreement_type=AGREEMENT_TYPE, product_identifier=PRODUCT)
    assert mapping.state == MappingState.OK
    return SimpleNamespace(partner=lambda_, admin=lambda_admin, connection=lambda_connection,
                           agreement=other_agreement, product=product, unrelated=unrelated,
                           kappa_addition=kappa_addition)


def test_H5_B4_after_a_move_the_new_partner_starts_its_own_addition_and_never_touches_the_old_one(
        billing, cw, cw_other, moved):
    kappa_requests = len(cw.received)
    set_active(billing.alpha, billing.month, 6)
    attempt = addition_sync(company_id=billing.alpha.pk, month=billing.month, trigger=SyncTrigger.MANUAL, force=True)
    assert (attempt.outcome, attempt.operation, attempt.quantity) == ("ok", "create", 6)
    assert attempt.connection_id == moved.connection.pk
    # Lambda's PSA: its own addition on its own agreement; the unrelated addition is untouched
    assert moved.agreement["id"] == billing.alpha_agreement["id"]
    assert [(a["quantity"], a["description"]) for a in cw_other.additions[moved.agreement["id"]]] == [
        (40, "Someone else's"), (6, addition_description(company=billing.alpha, month=billing.month))]
    assert moved.unrelated["quantity"] == 40
    assert cw_other.calls("PATCH") == []
    # the open month follows Alpha to Lambda (H5): Kappa's addition is set to 0 through Kappa's own
    # connection, once, and the attempt is in Kappa's log
    assert moved.kappa_addition["quantity"] == 0
    assert [(c.method, c.path.endswith(f"/finance/agreements/{billing.alpha_agreement['id']}/additions/"
                                       f"{moved.kappa_addition['id']}")) for c in cw.received[kappa_requests:]] == [
        ("PATCH", True)]
    zeroed = SyncAttempt.objects.filter(connection=billing.connection, quantity=0).latest("id")
    assert (zeroed.outcome, zeroed.operation) == ("ok", "update")
    assert "set to 0" in attempt.answer
    addition = PsaAddition.objects.get(company=billing.alpha, month=billing.month)
    assert (addition.connection_id, addition.agreement_ref, addition.quantity) == (
        moved.connection.pk, moved.agreement["id"], 6)


def test_H5_B4_an_old_addition_that_could_not_be_set_to_0_is_tried_again_until_it_is(billing, cw, cw_other, moved):
    """Kappa's PSA is down when Lambda first bills Alpha: Kappa's addition would bill the month a second
    time. The zeroing is kept and the hourly task sets it to 0 once Kappa's PSA answers, once."""
    from integrations.services import zeroings_retry
    from integrations.tasks import zero_left_behind

    set_active(billing.alpha, billing.month, 6)
    cw.fail("PATCH", "/finance/agreements", 503)
    attempt = addition_sync(company_id=billing.alpha.pk, month=billing.month, trigger=SyncTrigger.MANUAL, force=True)
    assert (attempt.outcome, attempt.quantity) == ("ok", 6)  # Lambda's own addition is made all the same
    assert "could not be set to 0 yet; it is tried again every hour" in attempt.answer
    assert moved.kappa_addition["quantity"] == 5
    failed = SyncAttempt.objects.filter(connection=billing.connection, quantity=0).latest("id")
    assert (failed.outcome, failed.http_status, failed.retryable) == ("failed", 503, True)
    assert "tried again in an hour" in failed.answer
    zeroing = PsaZeroing.objects.get()
    assert (zeroing.connection_id, zeroing.addition_ref, zeroing.tries, zeroing.done_at) == (
        billing.connection.pk, moved.kappa_addition["id"], 1, None)

    patches = len(cw.calls("PATCH"))
    assert zero_left_behind.apply().get() == 1  # the beat's task, run here
    assert moved.kappa_addition["quantity"] == 0
    assert cw.billed_in(billing.alpha_agreement["id"], billing.month)[0]["quantity"] == 0
    retried = SyncAttempt.objects.filter(connection=billing.connection, quantity=0).latest("id")
    assert (retried.outcome, retried.trigger) == ("ok", "retry")
    assert "set to 0" in retried.answer
    assert zeroings_retry() == 0 and len(cw.calls("PATCH")) == patches + 1  # done: never sent again
    # Lambda's PSA was never asked to change anything of Kappa's
    assert cw_other.calls("PATCH") == []


def test_H5_B4_an_old_addition_removed_by_hand_or_failing_all_day_stops_being_tried(billing, cw, moved):
    from integrations.services import ZEROING_TRIES, zeroings_retry

    set_active(billing.alpha, billing.month, 6)
    cw.fail("PATCH", "/finance/agreements", 500)
    addition_sync(company_id=billing.alpha.pk, month=billing.month, trigger=SyncTrigger.MANUAL, force=True)
    zeroing = PsaZeroing.objects.get()
    # the last try of the day fails: no more tries, and Kappa's log says what to do
    PsaZeroing.objects.filter(pk=zeroing.pk).update(tries=ZEROING_TRIES - 1)
    cw.fail("PATCH", "/finance/agreements", 500)
    assert zeroings_retry() == 0
    last = SyncAttempt.objects.filter(connection=billing.connection, quantity=0).latest("id")
    assert (last.outcome, last.retryable) == ("failed", False)
    assert "set it to 0 in ConnectWise, or the month is billed twice" in last.answer
    patches = len(cw.calls("PATCH"))
    assert zeroings_retry() == 0 and len(cw.calls("PATCH")) == patches
    # an addition removed in the PSA by hand bills nothing: found gone, the zeroing is done
    PsaZeroing.objects.filter(pk=zeroing.pk).update(tries=1)
    cw.fail("PATCH", "/finance/agreements", 404)
    assert zeroings_retry() == 1
    zeroing.refresh_from_db()
    assert zeroing.done_at is not None
    assert "is not in ConnectWise any more, so it bills nothing here" in SyncAttempt.objects.filter(
        connection=billing.connection, quantity=0).latest("id").answer


def _lambda_bills_alpha_while_kappa_is_down(billing, cw, count=6):
    set_active(billing.alpha, billing.month, count)
    cw.fail("PATCH", "/finance/agreements", 503)
    return addition_sync(company_id=billing.alpha.pk, month=billing.month, trigger=SyncTrigger.MANUAL, force=True)


def test_H5_B4_a_zeroing_still_pending_when_the_company_comes_back_never_zeroes_the_addition_that_bills_it(
        billing, cw, cw_other, moved):
    from companies.services import company_move
    from integrations.services import zeroings_retry

    _lambda_bills_alpha_while_kappa_is_down(billing, cw)
    assert PsaZeroing.objects.get(connection=billing.connection).done_at is None
    # the move is undone before the hourly retry; Kappa bills Alpha again and takes up its addition
    billing.alpha = company_move(actor=None, company=billing.alpha, new_parent=billing.partner)
    _map(billing, billing.alpha, billing.cw_alpha)
    set_active(billing.alpha, billing.month, 7)
    back = addition_sync(company_id=billing.alpha.pk, month=billing.month, trigger=SyncTrigger.MANUAL, force=True)
    assert back.outcome == "ok"
    assert moved.kappa_addition["quantity"] == 7
    patches = len(cw.calls("PATCH"))
    assert zeroings_retry() == 0
    assert len(cw.calls("PATCH")) == patches and moved.kappa_addition["quantity"] == 7
    assert PsaZeroing.objects.get(connection=billing.connection).done_at is not None
    assert [a["quantity"] for a in cw.billed_in(billing.alpha_agreement["id"], billing.month)] == [7]


def test_H5_B4_an_addition_left_behind_a_second_time_is_tried_again(billing, cw, cw_other, moved):
    """Kappa -> Lambda (set to 0) -> Kappa (the addition taken up again) -> Lambda with Kappa's PSA down:
    the second zeroing starts afresh instead of staying done from the first."""
    from companies.services import company_move
    from integrations.services import zeroings_retry

    set_active(billing.alpha, billing.month, 6)
    addition_sync(company_id=billing.alpha.pk, month=billing.month, trigger=SyncTrigger.MANUAL, force=True)
    assert PsaZeroing.objects.get(connection=billing.connection).done_at is not None
    assert moved.kappa_addition["quantity"] == 0
    billing.alpha = company_move(actor=None, company=billing.alpha, new_parent=billing.partner)
    _map(billing, billing.alpha, billing.cw_alpha)
    addition_sync(company_id=billing.alpha.pk, month=billing.month, trigger=SyncTrigger.MANUAL, force=True)
    assert moved.kappa_addition["quantity"] == 6
    billing.alpha = company_move(actor=None, company=billing.alpha, new_parent=moved.partner)
    mapping_save(actor=moved.admin, company=billing.alpha, psa_company="AlphaDental", agreement_type=AGREEMENT_TYPE,
                 product_identifier=PRODUCT)
    again = _lambda_bills_alpha_while_kappa_is_down(billing, cw)
    assert "tried again every hour" in again.answer
    zeroing = PsaZeroing.objects.get(connection=billing.connection)
    assert (zeroing.tries, zeroing.done_at) == (1, None)
    assert zeroings_retry() == 1 and moved.kappa_addition["quantity"] == 0


@pytest.mark.parametrize("blocker", ["turned off", "basic plan", "another site"])
def test_H5_B2_a_zeroing_is_not_sent_through_a_connection_that_cannot_be_used_for_it(billing, cw, moved, blocker):
    """Kappa's connection turned off, Kappa moved to Basic, or the connection edited to another
    ConnectWise (the addition's ids would mean something else there) after a failed first try: nothing is
    sent, and Kappa's log asks for the addition to be set to 0 by hand, once."""
    from companies.models import Company, PartnerPlan
    from integrations.models import PsaConnection
    from integrations.services import zeroings_retry

    _lambda_bills_alpha_while_kappa_is_down(billing, cw)
    if blocker == "turned off":
        PsaConnection.objects.filter(pk=billing.connection.pk).update(enabled=False)
    elif blocker == "basic plan":
        Company.objects.filter(pk=billing.partner.pk).update(plan=PartnerPlan.BASIC)
    else:
        PsaConnection.objects.filter(pk=billing.connection.pk).update(psa_company_id="another")
    patches = len(cw.calls("PATCH"))
    assert zeroings_retry() == 0
    assert len(cw.calls("PATCH")) == patches and moved.kappa_addition["quantity"] == 5
    told = SyncAttempt.objects.filter(connection=billing.connection, quantity=0).latest("id")
    assert told.outcome == SyncOutcome.NOT_SYNCED
    assert f"set addition {moved.kappa_addition['id']} to 0 in ConnectWise, or the month is billed twice" in told.answer
    attempts = SyncAttempt.objects.filter(connection=billing.connection).count()
    assert zeroings_retry() == 0 and SyncAttempt.objects.filter(connection=billing.connection).count() == attempts


def test_H5_B4_the_new_partner_is_told_when_the_old_addition_must_be_set_by_hand(billing, cw, moved):
    from integrations.models import PsaConnection

    PsaConnection.objects.filter(pk=billing.connection.pk).update(enabled=False)
    set_active(billing.alpha, billing.month, 6)
    attempt = addition_sync(company_id=billing.alpha.pk, month=billing.month, trigger=SyncTrigger.MANUAL, force=True)
    assert "could not be set to 0; the other partner's log asks to set it by hand" in attempt.answer
    assert SyncAttempt.objects.filter(connection=billing.connection, quantity=0).latest("id").trigger == "manual"
    assert moved.kappa_addition["quantity"] == 5


def test_H5_X1_a_change_of_the_partner_billing_a_company_is_audited(billing, moved):
    event = AuditEvent.objects.filter(company=moved.partner, action="integration.mapping").latest("id")
    assert event.before["billed_by"] == billing.partner.name
    assert event.after["billed_by"] == moved.partner.name


@pytest.fixture
def kappa_closed_previous_month(billing, cw):
    """Before the move: Kappa billed Alpha's previous month, and that month was closed with Alpha under it."""
    from companies.models import Company

    _map(billing, billing.alpha, billing.cw_alpha)
    previous = (billing.month - dt.timedelta(days=1)).replace(day=1)
    Company.objects.filter(pk=billing.alpha.pk).update(created_at=dt.datetime(previous.year, previous.month, 2,
                                                                               tzinfo=dt.UTC))
    set_active(billing.alpha, previous, 4)
    last_day = dt.datetime(billing.month.year, billing.month.month, 1, tzinfo=dt.UTC) - dt.timedelta(hours=5)
    assert addition_sync(company_id=billing.alpha.pk, month=previous, now=last_day).operation == "create"
    set_active(billing.alpha, previous, 9)  # merged before the close
    CompanyMonthUsage.objects.filter(company=billing.alpha, month=previous).update(finalized_at=last_day)
    MonthClose.objects.create(month=previous)
    return previous


def test_H5_U12_a_month_billed_before_a_move_gets_its_final_push_from_its_own_partner(
        billing, cw, cw_other, kappa_closed_previous_month, moved):
    previous = kappa_closed_previous_month
    addition = PsaAddition.objects.get(company=billing.alpha, month=previous)
    assert (billing.alpha.pk, previous.isoformat()) in sync_due()
    final = addition_sync(company_id=billing.alpha.pk, month=previous)
    assert (final.outcome, final.operation, final.quantity) == ("ok", "update", 9)
    assert final.connection_id == billing.connection.pk  # in Kappa's log
    patched = f"/agreements/{addition.agreement_ref}/additions/{addition.addition_ref}"
    assert cw.calls("PATCH")[-1].path.endswith(patched)
    assert [a["quantity"] for a in cw.billed_in(billing.alpha_agreement["id"], previous)] == [9]
    # Lambda's PSA was not asked anything about a month it did not bill
    assert cw_other.calls("POST") == [] and cw_other.calls("PATCH") == []
    assert (billing.alpha.pk, previous.isoformat()) not in sync_due()


def test_H5_U12_a_closed_month_spent_under_the_old_partner_is_not_created_by_the_new_one(billing, cw_other, moved):
    """No addition was ever made for the month before the move: it is not Lambda's to bill (the month's
    finalized row names Kappa), so Lambda's PSA gets nothing for it."""
    from companies.models import Company

    previous = (billing.month - dt.timedelta(days=1)).replace(day=1)
    Company.objects.filter(pk=billing.alpha.pk).update(created_at=dt.datetime(previous.year, previous.month, 2,
                                                                               tzinfo=dt.UTC))
    CompanyMonthUsage.objects.create(company=billing.alpha, month=previous, active_endpoints=4,
                                     lineage=f"{billing.partner.lineage}{billing.alpha.pk}/",
                                     finalized_at=dt.datetime.now(dt.UTC))
    MonthClose.objects.create(month=previous)
    assert (billing.alpha.pk, previous.isoformat()) not in sync_due()
    assert (billing.alpha.pk, billing.month.isoformat()) in sync_due()
