"""REST API (/api/v1/) for licensing: the catalogue, seats, trials, subscriptions and selections
(SPEC L1-L6, S1-S5, E1-E7, X1) over HTTP, and the isolation of every route (C6)."""

import datetime as dt
import json
import re
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from companies.models import AuditEvent, Company, Role, User
from companies.services import api_key_create, company_set_assist
from licensing import api_urls
from licensing.entitlements import entitlements_set, mdr_contact_set, selection_of
from licensing.models import CatalogItem, Entitlement, License, MdrContact, ModelRule, SeatPool
from licensing.seats import license_of, reservation_set, seat_assign
from licensing.subscriptions import subscription_set
from tests.factories import make_company, make_user
from tests.trees import api_tree

pytestmark = pytest.mark.django_db

NOT_FOUND = {"detail": "Not found."}
FULL_MDR = {"primary_name": "Ops", "primary_email": "ops@msp.example", "primary_phone": "+1 555 0100",
            "escalation_name": "Lead", "escalation_email": "lead@msp.example", "escalation_phone": "+1 555 0101"}


def url(name: str, *args) -> str:
    return reverse(f"licensing-api:{name}", args=args)


def call(client: Client, method: str, path: str, body: dict | None = None):
    if method == "get":
        return client.get(path)
    return getattr(client, method)(path, data=json.dumps(body or {}), content_type="application/json")


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def key_client(secret: str) -> Client:
    return Client(headers={"Authorization": f"Api-Key {secret}"})


def errors(response) -> dict:
    assert response.status_code == 400, (response.status_code, response.content)
    return response.json()["errors"]


def licensing_events() -> list[tuple]:
    return list(AuditEvent.objects.filter(action__regex=r"^(license|entitlements|mdr_contact)\.")
                .order_by("id").values_list("company__name", "action", "actor_label"))


@pytest.fixture
def tree(platform):
    """The API tree of tests/trees.py, where Northwind MSP resells everything and has a complete MDR
    contact and Kite Sub (no MDR contact) resells a few items; `keys` are the secrets."""
    everything = set(CatalogItem.objects.values_list("key", flat=True))

    def licensed(partner):
        if partner.name == "Northwind MSP":
            mdr_contact_set(actor=None, company=partner, **FULL_MDR)
            entitlements_set(actor=None, company=partner, purpose="resell", keys=everything)
        elif partner.name == "Kite Sub":
            entitlements_set(actor=None, company=partner, purpose="resell",
                             keys={"endpoint_security", "edr_standalone", "a_la_carte", "secure", "patch_management"})

    tree = api_tree(platform, on_partner=licensed)
    tree.keys = {pk: secret for pk, (_, secret) in tree.keys.items()}
    tree.everything = everything
    return tree


def as_admin(tree, company: Company) -> Client:
    return signed_in(tree.admins[company.pk])


# --- C6: every route, with ids from outside the caller's view -----------------------------------------

def _probe_calls(company_ids):
    calls = []
    for c in company_ids:
        calls += [
            ("licensing-detail", "get", url("licensing-detail", c), None),
            ("licensing-detail", "patch", url("licensing-detail", c), {"reserved_seats": 1}),
            ("licensing-trials", "get", url("licensing-trials", c), None),
            ("licensing-own-use", "get", url("licensing-own-use", c), None),
            ("licensing-own-use", "put", url("licensing-own-use", c), {"items": ["edr_standalone"]}),
            ("licensing-reselling", "get", url("licensing-reselling", c), None),
            ("licensing-reselling", "put", url("licensing-reselling", c), {"items": ["edr_standalone"]}),
            ("licensing-mdr-contact", "get", url("licensing-mdr-contact", c), None),
            ("licensing-mdr-contact", "patch", url("licensing-mdr-contact", c), {"primary_name": "Probe"}),
        ]
    return calls


PERSONAS = {
    # caller: companies it may see (everything else is foreign)
    "a customer": ("acme", {"acme"}),
    "a partner": ("north", {"north", "acme", "bolt", "kite_sub", "kite_bakery"}),
    "a partner below a partner": ("kite_sub", {"kite_sub", "kite_bakery"}),
    "a reseller-only partner": ("rivet", {"rivet", "oak"}),
    "a sibling partner": ("south", {"south", "pine"}),
}


@pytest.mark.parametrize("persona", list(PERSONAS))
@pytest.mark.parametrize("by", ["session", "api key"])
def test_C6_licensing_api_foreign_ids_answer_404(tree, persona, by):
    caller_name, visible = PERSONAS[persona]
    caller = getattr(tree, caller_name)
    foreign = [c for c in tree.companies if c not in {getattr(tree, v) for v in visible}]
    calls = _probe_calls([c.pk for c in foreign])
    # every route that takes a company id is probed; a new route must be added here
    routes = {p.name for p in api_urls.urlpatterns}
    assert {name for name, *_ in calls} == routes - {"catalogue", "licensing-list"}

    before_events = AuditEvent.objects.count()
    before_entitlements = list(Entitlement.objects.order_by("id").values_list("id", "disabled_at"))
    client = as_admin(tree, caller) if by == "session" else key_client(tree.keys[caller.pk])
    forbidden_words = [c.name for c in foreign] + [c.license_key for c in foreign]
    for name, method, path, body in calls:
        response = call(client, method, path, body)
        assert response.status_code == 404, (name, method, path, response.content)
        assert response.json() == NOT_FOUND
    # the routes without ids never name a foreign company either
    for path in (url("licensing-list"), url("catalogue"), url("licensing-detail", caller.pk)):
        body = client.get(path).content.decode()
        assert all(word not in body for word in forbidden_words), path
    # nothing changed on the way
    assert AuditEvent.objects.count() == before_events
    assert list(Entitlement.objects.order_by("id").values_list("id", "disabled_at")) == before_entitlements
    assert not License.objects.filter(reserved_seats__isnull=False).exists()
    assert not MdrContact.objects.filter(primary_name="Probe").exists()


def test_C6_missing_and_foreign_ids_answer_alike(tree):
    client = as_admin(tree, tree.south)
    for name in ("licensing-detail", "licensing-trials", "licensing-own-use", "licensing-reselling",
                 "licensing-mdr-contact"):
        foreign = client.get(url(name, tree.north.pk))
        missing = client.get(url(name, 987_654_321))
        assert (foreign.status_code, foreign.content) == (missing.status_code, missing.content) == (
            404, b'{"detail":"Not found."}')
        not_an_id = client.get(url(name, 1).replace("/1/", "/abc/"))
        assert (not_an_id.status_code, not_an_id.json()) == (404, NOT_FOUND)


def test_C6_L2_S1_pool_and_end_date_of_an_ancestor_are_not_named(tree):
    """A customer reads its own licensing: it draws from its partner's pool and inherits its
    partner's end date, but neither the partner nor the platform is named, nor their figures."""
    reservation_set(actor=None, company=tree.north, seats=30)
    subscription_set(actor=None, company=tree.north, end_date=dt.date(2027, 6, 30), auto_renew=True)
    response = key_client(tree.keys[tree.acme.pk]).get(url("licensing-detail", tree.acme.pk))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["pool"] == {"shared": True, "in_view": False, "owner": None, "capacity": None, "used": None,
                            "reserved_below": None, "free": None}
    assert body["subscription"]["effective_end_date"] == "2027-06-30"
    assert body["subscription"]["inherited"] is True and body["subscription"]["inherited_from"] is None
    text = response.content.decode()
    for word in ("Northwind", tree.platform.name, tree.north.license_key):
        assert word not in text
    # the partner itself sees whose pool and end date they are
    partner_view = as_admin(tree, tree.north).get(url("licensing-detail", tree.acme.pk)).json()
    assert partner_view["pool"]["owner"] == {"id": tree.north.pk, "name": "Northwind MSP"}
    assert partner_view["pool"]["capacity"] == 30
    assert partner_view["subscription"]["inherited_from"] == {"id": tree.north.pk, "name": "Northwind MSP"}


def test_C6_licensing_list_is_the_callers_subtree_with_flat_queries(tree):
    client = as_admin(tree, tree.north)
    reservation_set(actor=None, company=tree.north, seats=20)
    reservation_set(actor=None, company=tree.acme, seats=5)
    subscription_set(actor=None, company=tree.north, end_date=dt.date(2027, 3, 31), auto_renew=False)
    for _ in range(7):
        seat_assign(company=tree.acme, endpoint_id=uuid.uuid4())

    def listing():
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url("licensing-list"))
        assert response.status_code == 200, response.content
        return response.json(), len(queries)

    body, queries_small = listing()
    assert [row["company"]["name"] for row in body["results"]] == [
        "Northwind MSP", "Acme Dental", "Bolt Legal", "Kite Sub", "Kite Bakery"]
    acme = next(row for row in body["results"] if row["company"]["id"] == tree.acme.pk)
    assert acme["reserved_seats"] == 5 and acme["seats"] == {"licensed": 5, "trial": 2, "expired": 0}
    assert acme["end_date"] is None and acme["effective_end_date"] == "2027-03-31"
    for _ in range(6):
        company = make_company(parent=tree.kite_sub)
        seat_assign(company=company, endpoint_id=uuid.uuid4())
    body, queries_large = listing()
    assert body["count"] == 11
    assert queries_large == queries_small
    # a customer's list is itself only
    own = key_client(tree.keys[tree.pine.pk]).get(url("licensing-list")).json()
    assert [row["company"]["name"] for row in own["results"]] == ["Pine Dairy"]


def test_L4_company_licensing_costs_the_same_queries_with_more_endpoints_and_companies(tree):
    north = as_admin(tree, tree.north)
    reservation_set(actor=None, company=tree.north, seats=3)
    path = url("licensing-detail", tree.acme.pk)
    north.get(path)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert north.get(path).status_code == 200
        return len(captured)

    few = queries()
    for day in range(1, 29):
        seat_assign(company=tree.acme, endpoint_id=uuid.uuid4(),
                    now=dt.datetime(2026, 10 + day % 3, day, tzinfo=dt.UTC))
    for _ in range(5):
        make_company(parent=tree.north)
    body = north.get(path).json()
    assert body["seats"] == {"licensed": 3, "trial": 25, "expired": 0}
    assert sum(t["endpoints"] for t in body["trials_ending"]) == 25 and len(body["trials_ending"]) == 3
    assert queries() == few


# --- the catalogue -------------------------------------------------------------------------------------

def test_E2_E7_catalogue_is_read_from_the_data_for_every_role(tree):
    reporter = signed_in(make_user(company=tree.acme, role=Role.REPORTER))
    reporter.get(url("catalogue"))
    with CaptureQueriesContext(connection) as queries:
        response = reporter.get(url("catalogue"))
    assert response.status_code == 200, response.content
    catalogue_queries = [q["sql"] for q in queries.captured_queries if "licensing_" in q["sql"]]
    assert len(catalogue_queries) == 3  # items, their product types, the rules: not one per item
    body = response.json()
    assert [i["key"] for i in body["items"]] == list(
        CatalogItem.objects.order_by("kind", "rank", "name").values_list("key", flat=True))
    by_key = {i["key"]: i for i in body["items"]}
    assert {k for k, i in by_key.items() if i["parent"] == "xdr"} == {
        "xdr_identity", "xdr_productivity", "xdr_network", "xdr_cloud"}
    assert {k for k, i in by_key.items() if i["kind"] == "retention_tier"} == set(
        CatalogItem.objects.filter(parent__key="data_retention").values_list("key", flat=True))
    assert len(body["rules"]) == ModelRule.objects.count()
    assert {(r["item"], r["relation"]) for r in body["rules"] if r["protection_model"] == "secure_extra"} == {
        ("advanced_threat_security", "includes"), ("edr", "includes"), ("mdr_foundations", "includes"),
        ("xdr", "includes")}
    # data, not code: a rule changed in the database shows at once
    ModelRule.objects.filter(protection_model__key="secure", item__key="edr").update(relation="excludes")
    rules = reporter.get(url("catalogue")).json()["rules"]
    assert {"protection_model": "secure", "item": "edr", "relation": "excludes"} in rules


# --- seats: reservation, pool, trials, minimum usage -----------------------------------------------------

def test_L1_L3_reservation_shows_what_is_available_and_refuses_more(tree):
    platform_client = as_admin(tree, tree.platform)
    response = call(platform_client, "patch", url("licensing-detail", tree.north.pk), {"reserved_seats": 10})
    assert response.status_code == 200, response.content
    assert response.json()["reserved_seats"] == 10
    assert response.json()["pool"] == {"shared": False, "in_view": True,
                                       "owner": {"id": tree.north.pk, "name": "Northwind MSP"},
                                       "capacity": 10, "used": 0, "reserved_below": 0, "free": 10}
    north = as_admin(tree, tree.north)
    assert north.get(url("licensing-detail", tree.acme.pk)).json()["available_to_reserve"] == 10
    ok = call(north, "patch", url("licensing-detail", tree.acme.pk), {"reserved_seats": 4})
    assert ok.status_code == 200, ok.content
    assert ok.json()["pool"]["owner"] == {"id": tree.acme.pk, "name": "Acme Dental"}
    bolt = north.get(url("licensing-detail", tree.bolt.pk)).json()
    assert bolt["available_to_reserve"] == 6
    assert bolt["pool"]["reserved_below"] == 4 and bolt["pool"]["free"] == 6
    refused = call(north, "patch", url("licensing-detail", tree.bolt.pk), {"reserved_seats": 7})
    assert errors(refused) == {"reserved_seats": ["Only 6 seats are available to reserve."]}
    # C6: what the parent's pool has free is the parent's; Bolt's own administrators do not get it
    own = as_admin(tree, tree.bolt).get(url("licensing-detail", tree.bolt.pk)).json()
    assert own["available_to_reserve"] is None and own["pool"]["in_view"] is False
    assert license_of(tree.bolt).reserved_seats is None
    # L1: the reserved company's endpoints take seats from its reservation only
    for _ in range(5):
        seat_assign(company=tree.acme, endpoint_id=uuid.uuid4())
    acme = north.get(url("licensing-detail", tree.acme.pk)).json()
    assert acme["seats"] == {"licensed": 4, "trial": 1, "expired": 0}
    assert acme["pool"]["used"] == 4 and acme["pool"]["free"] == 0
    assert SeatPool.objects.get(owner=tree.north).used == 0
    # X1: audited with the person who did it
    assert ("Acme Dental", "license.reservation", "admin@northwind-msp.test") in licensing_events()


def test_L2_pool_owner_is_the_nearest_reserved_ancestor(tree):
    north = as_admin(tree, tree.north)
    before = north.get(url("licensing-detail", tree.kite_bakery.pk)).json()["pool"]
    assert before["owner"] is None and before["in_view"] is False  # the platform's pool
    reservation_set(actor=None, company=tree.north, seats=12)
    seat_assign(company=tree.kite_bakery, endpoint_id=uuid.uuid4())
    pool = north.get(url("licensing-detail", tree.kite_bakery.pk)).json()["pool"]
    assert pool == {"shared": True, "in_view": True, "owner": {"id": tree.north.pk, "name": "Northwind MSP"},
                    "capacity": 12, "used": 1, "reserved_below": 0, "free": 11}
    reservation_set(actor=None, company=tree.kite_sub, seats=3)
    pool = north.get(url("licensing-detail", tree.kite_bakery.pk)).json()["pool"]
    assert pool["owner"]["name"] == "Kite Sub" and (pool["capacity"], pool["used"], pool["free"]) == (3, 1, 2)


def test_L4_trials_with_their_end_dates_across_a_year_end_and_promotion(tree):
    north = as_admin(tree, tree.north)
    call(north, "patch", url("licensing-detail", tree.acme.pk), {"reserved_seats": 1})
    installed = []
    for when in (dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC),
                 dt.datetime(2026, 12, 31, 23, tzinfo=dt.UTC), dt.datetime(2027, 1, 2, 9, tzinfo=dt.UTC)):
        endpoint = uuid.uuid4()
        installed.append((endpoint, seat_assign(company=tree.acme, endpoint_id=endpoint, now=when)))
    assert [info.state for _, info in installed] == ["licensed", "trial", "trial", "trial"]
    trials = north.get(url("licensing-trials", tree.acme.pk)).json()
    assert [(t["endpoint_id"], t["trial_ends_on"]) for t in trials["results"]] == [
        (str(installed[1][0]), "2027-01-31"), (str(installed[2][0]), "2027-01-31"),
        (str(installed[3][0]), "2027-02-28")]
    detail = north.get(url("licensing-detail", tree.acme.pk)).json()
    assert detail["trials_ending"] == [{"trial_ends_on": "2027-01-31", "endpoints": 2},
                                       {"trial_ends_on": "2027-02-28", "endpoints": 1}]
    # the reservation grows: trials take the new seats, oldest first
    grown = call(north, "patch", url("licensing-detail", tree.acme.pk), {"reserved_seats": 3})
    assert grown.status_code == 200, grown.content
    assert grown.json()["seats"] == {"licensed": 3, "trial": 1, "expired": 0}
    left = north.get(url("licensing-trials", tree.acme.pk)).json()["results"]
    assert [t["endpoint_id"] for t in left] == [str(installed[3][0])]


def test_C2_C3_trial_endpoints_only_where_the_network_is_visible(tree):
    for company in (tree.bolt, tree.oak):
        seat_assign(company=company, endpoint_id=uuid.uuid4())
    # C3: assist off; C2: reseller-only partner. The licensing itself stays readable.
    for caller, company in ((tree.north, tree.bolt), (tree.rivet, tree.oak)):
        client = as_admin(tree, caller)
        assert client.get(url("licensing-detail", company.pk)).json()["seats"]["licensed"] == 1
        response = client.get(url("licensing-trials", company.pk))
        assert (response.status_code, response.json()) == (404, NOT_FOUND)
    # the company itself sees its own
    assert as_admin(tree, tree.bolt).get(url("licensing-trials", tree.bolt.pk)).status_code == 200


def test_L6_minimum_usage_needs_and_fits_the_reservation(tree):
    north = as_admin(tree, tree.north)
    path = url("licensing-detail", tree.acme.pk)
    assert errors(call(north, "patch", path, {"minimum_usage": 3})) == {
        "minimum_usage": ["Minimum usage needs reserved seats: it consumes them (L6)."]}
    assert errors(call(north, "patch", path, {"reserved_seats": 5, "minimum_usage": 6})) == {
        "minimum_usage": ["The minimum usage cannot exceed the 5 reserved seats (L6)."]}
    assert license_of(tree.acme).reserved_seats is None  # nothing half-written
    ok = call(north, "patch", path, {"reserved_seats": 5, "minimum_usage": 5})
    assert ok.status_code == 200 and ok.json()["minimum_usage"] == 5
    assert errors(call(north, "patch", path, {"reserved_seats": 4})) == {
        "minimum_usage": ["The minimum usage cannot exceed the 4 reserved seats (L6)."]}
    assert (license_of(tree.acme).reserved_seats, license_of(tree.acme).minimum_usage) == (5, 5)
    lowered = call(north, "patch", path, {"reserved_seats": 4, "minimum_usage": 2})
    assert (lowered.json()["reserved_seats"], lowered.json()["minimum_usage"]) == (4, 2)


# --- subscriptions ------------------------------------------------------------------------------------

def test_S1_S2_S3_S5_subscription_over_the_api(tree):
    platform_client, north = as_admin(tree, tree.platform), as_admin(tree, tree.north)
    set_north = call(platform_client, "patch", url("licensing-detail", tree.north.pk),
                     {"end_date": "2027-06-30", "auto_renew": False})
    assert set_north.status_code == 200, set_north.content
    acme_path = url("licensing-detail", tree.acme.pk)
    acme = north.get(acme_path).json()
    assert acme["license_type"] == "monthly" and acme["license_key"] == tree.acme.license_key  # S5
    assert acme["subscription"] == {"end_date": None, "effective_end_date": "2027-06-30", "inherited": True,
                                    "inherited_from": {"id": tree.north.pk, "name": "Northwind MSP"},
                                    "auto_renew": False, "renew_months": 12}  # S1
    later = call(north, "patch", acme_path, {"end_date": "2027-12-31"})
    assert errors(later) == {"end_date": [
        "The end date cannot be later than 2027-06-30, the end date of Northwind MSP, which does not renew "
        "automatically (S2)."]}
    assert errors(call(north, "patch", acme_path, {"auto_renew": True})) == {
        "auto_renew": ["Auto-renewal needs an end date."]}
    assert errors(call(north, "patch", acme_path, {"end_date": "2027-05-31", "auto_renew": True,
                                                     "renew_months": 0})) == {
        "renew_months": ["Renew for 1 to 120 months."]}
    # S2: with the parent renewing, the child may end later; S3: the child renews by its months
    call(platform_client, "patch", url("licensing-detail", tree.north.pk), {"auto_renew": True})
    ok = call(north, "patch", acme_path, {"end_date": "2027-12-31", "auto_renew": True, "renew_months": 1})
    assert ok.status_code == 200, ok.content
    assert ok.json()["subscription"] == {"end_date": "2027-12-31", "effective_end_date": "2027-12-31",
                                         "inherited": False, "inherited_from": None, "auto_renew": True,
                                         "renew_months": 1}
    # ... and the parent may no longer stop renewing
    refused = call(platform_client, "patch", url("licensing-detail", tree.north.pk), {"auto_renew": False})
    assert "before companies below it: Acme Dental (2027-12-31)" in errors(refused)["auto_renew"][0]
    # the platform has no partner to set its licensing, and no end date (decisions.md)
    assert call(platform_client, "patch", url("licensing-detail", tree.platform.pk),
                {"end_date": "2030-01-01"}).status_code == 403
    assert license_of(tree.platform).end_date is None


def test_X1_X2_a_refusal_rolls_back_every_part_of_the_change(tree):
    subscription_set(actor=None, company=tree.north, end_date=dt.date(2027, 6, 30), auto_renew=False)
    north = as_admin(tree, tree.north)
    before = licensing_events()
    response = call(north, "patch", url("licensing-detail", tree.acme.pk),
                    {"reserved_seats": 5, "own_use": ["endpoint_security", "secure"], "end_date": "2028-01-01"})
    assert set(errors(response)) == {"end_date"}
    lic = license_of(tree.acme)
    assert (lic.reserved_seats, lic.end_date) == (None, None)
    assert not Entitlement.objects.filter(company=tree.acme).exists()
    assert licensing_events() == before
    # the same change within the rules is applied whole, each part audited
    ok = call(north, "patch", url("licensing-detail", tree.acme.pk),
              {"reserved_seats": 5, "own_use": ["endpoint_security", "secure"], "end_date": "2027-01-31"})
    assert ok.status_code == 200, ok.content
    assert [e for e in licensing_events() if e not in before] == [
        ("Acme Dental", "license.reservation", "admin@northwind-msp.test"),
        ("Acme Dental", "license.subscription", "admin@northwind-msp.test"),
        ("Acme Dental", "entitlements.own", "admin@northwind-msp.test")]


def test_X2_bad_input_names_the_field(tree):
    north = as_admin(tree, tree.north)
    path = url("licensing-detail", tree.acme.pk)
    assert set(errors(call(north, "patch", path, {"reserved_seats": "many"}))) == {"reserved_seats"}
    assert set(errors(call(north, "patch", path, {"end_date": "31/12/2027"}))) == {"end_date"}
    assert errors(call(north, "patch", path, {"reserved_seats": -1})) == {
        "reserved_seats": ["Enter a whole number of seats, 0 or more."]}
    unknown = errors(call(north, "patch", path, {"seats": 3}))
    assert list(unknown) == ["seats"] and "reserved_seats" in unknown["seats"][0]
    assert "non_field_errors" in errors(call(north, "patch", path, {}))
    assert list(errors(call(north, "put", url("licensing-own-use", tree.acme.pk), {"keys": []}))) == ["keys"]
    assert errors(call(north, "put", url("licensing-own-use", tree.acme.pk), {"items": ["antivirus_9000"]})) == {
        "items": ["Unknown product, add-on or service: antivirus_9000."]}
    assert set(errors(call(north, "patch", url("licensing-mdr-contact", tree.north.pk),
                           {"primary_email": "not-an-email"}))) == {"primary_email"}
    assert not AuditEvent.objects.filter(company=tree.acme, action__startswith="license").exists()


def test_X2_L1_L6_a_seat_number_too_large_is_a_field_error_not_a_500(tree):
    """X2: 3,000,000,000 seats does not fit a seat column; the API names the field (before: a 500)."""
    north = as_admin(tree, tree.north)
    path = url("licensing-detail", tree.acme.pk)
    assert errors(call(north, "patch", path, {"reserved_seats": 3_000_000_000})) == {
        "reserved_seats": ["Reserved seats: at most 2147483647."]}
    assert errors(call(north, "patch", path, {"reserved_seats": 10, "minimum_usage": 3_000_000_000})) == {
        "minimum_usage": ["Minimum usage: at most 2147483647."]}
    with pytest.raises(ValidationError, match="at most 2147483647"):
        reservation_set(actor=None, company=tree.acme, seats=3_000_000_000)
    # the Licensing page's form
    page = as_admin(tree, tree.north).post(reverse("licensing:company", args=[tree.acme.pk]),
                                           {"reserve": "on", "reserved_seats": "3000000000"})
    assert page.status_code == 400 and b"Reserved seats: at most 2147483647." in page.content
    assert license_of(tree.acme).reserved_seats is None


# --- entitlements ------------------------------------------------------------------------------------

def test_E1_E2_own_use_shows_what_the_model_includes_and_refuses_what_it_excludes(tree):
    north = as_admin(tree, tree.north)
    path = url("licensing-own-use", tree.acme.pk)
    response = call(north, "put", path, {"items": ["endpoint_security", "secure", "patch_management", "edr"]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["items"] == ["endpoint_security", "patch_management", "secure"]  # EDR comes with Secure
    assert body["included"] == ["advanced_threat_security", "edr"]
    assert body["effective"] == ["advanced_threat_security", "edr", "endpoint_security", "patch_management",
                                 "secure"]
    assert body["available"] == sorted(tree.everything)
    assert north.get(path).json() == body
    assert errors(call(north, "put", path, {"items": ["endpoint_security", "a_la_carte", "mdr_foundations"]})) == {
        "items": ["A la carte does not allow MDR Foundations."]}
    assert errors(call(north, "put", path, {"items": ["edr_standalone", "secure"]})) == {
        "items": ["EDR (standalone) takes no protection model, add-ons or services (E1)."]}
    assert errors(call(north, "put", path, {"items": ["endpoint_security", "patch_management"]})) == {
        "items": ["Choose one protection model for Endpoint Security."]}
    # the same refusal through the licensing update names its own field
    assert errors(call(north, "patch", url("licensing-detail", tree.acme.pk), {"own_use": ["secure"]})) == {
        "own_use": ["Choose one product type: Endpoint Security or EDR."]}
    assert selection_of(company=tree.acme, purpose="own").keys == {"endpoint_security", "secure",
                                                                    "patch_management"}
    # the customer reads its own selection, but not what its partner resells (C6)
    own = key_client(tree.keys[tree.acme.pk]).get(path).json()
    assert own["items"] == body["items"] and own["available"] is None


def test_E3_selection_is_a_subset_of_the_parents_and_narrowing_names_the_child(tree):
    north = as_admin(tree, tree.north)
    bakery = call(north, "put", url("licensing-own-use", tree.kite_bakery.pk),
                  {"items": ["endpoint_security", "a_la_carte", "full_disk_encryption"]})
    assert errors(bakery) == {"items": ["Kite Sub does not resell Full Disk Encryption (E3)."]}
    assert call(north, "put", url("licensing-own-use", tree.kite_bakery.pk),
                {"items": ["endpoint_security", "a_la_carte", "patch_management"]}).status_code == 200
    # a partner's reselling selection is a subset of its own partner's
    wider = call(north, "put", url("licensing-reselling", tree.kite_sub.pk),
                 {"items": ["endpoint_security", "a_la_carte", "patch_management", "email_security"]})
    assert wider.status_code == 200, wider.content
    assert wider.json()["available"] == sorted(tree.everything)
    call(as_admin(tree, tree.platform), "put", url("licensing-reselling", tree.south.pk),
         {"items": ["endpoint_security"]})
    # narrowing while a company below uses the item is refused, naming it
    narrower = call(north, "put", url("licensing-reselling", tree.kite_sub.pk),
                    {"items": ["endpoint_security", "a_la_carte", "email_security"]})
    assert errors(narrower) == {"items": ["Cannot stop reselling while Kite Bakery uses Patch Management."]}
    assert "patch_management" in selection_of(company=tree.kite_sub, purpose="resell").keys
    # a partner cannot widen its own selection: its partner sets it
    own_widen = call(as_admin(tree, tree.kite_sub), "put", url("licensing-reselling", tree.kite_sub.pk),
                     {"items": sorted(tree.everything)})
    assert own_widen.status_code == 403
    assert "set by its partner" in own_widen.json()["detail"]


def test_E4_products_for_reselling_only_for_partners(tree):
    north = as_admin(tree, tree.north)
    message = ["Only partners resell products (E4)."]
    assert errors(call(north, "put", url("licensing-reselling", tree.acme.pk),
                       {"items": ["endpoint_security"]})) == {"items": message}
    assert errors(call(north, "patch", url("licensing-detail", tree.acme.pk),
                       {"resell": ["endpoint_security"]})) == {"resell": message}
    assert errors(north.get(url("licensing-reselling", tree.acme.pk))) == {"purpose": message}
    assert not Entitlement.objects.filter(company=tree.acme, purpose="resell").exists()
    partner = north.get(url("licensing-reselling", tree.kite_sub.pk)).json()
    assert partner["items"] == sorted(selection_of(company=tree.kite_sub, purpose="resell").keys)


def test_E4_the_licensing_service_refuses_reselling_for_a_customer(tree):
    """Every caller (pages, REST, JSON-RPC) goes through license_update: a customer's resell list is
    an error naming the field, and nothing of the call is kept."""
    from django.core.exceptions import ValidationError

    from licensing.seats import license_of
    from licensing.services import license_update

    before = license_of(tree.acme).reserved_seats
    with pytest.raises(ValidationError) as error:
        license_update(actor=None, company=tree.acme, reserved_seats=3, resell={"endpoint_security"})
    assert error.value.message_dict == {"resell": ["Only partners resell products (E4)."]}
    assert license_of(tree.acme).reserved_seats == before
    assert not Entitlement.objects.filter(company=tree.acme, purpose="resell").exists()
    license_update(actor=None, company=tree.acme, resell=set())  # nothing to resell: fine


def test_E5_secure_plus_needs_the_partners_complete_mdr_contact(tree):
    north, kite = as_admin(tree, tree.north), as_admin(tree, tree.kite_sub)
    resell = {"items": ["endpoint_security", "secure", "secure_plus", "patch_management", "mdr_foundations"]}
    refused = call(north, "put", url("licensing-reselling", tree.kite_sub.pk), resell)
    assert errors(refused) == {"items": [
        "Secure Plus can be resold only by a partner whose MDR contact details are complete: fill in Kite Sub's "
        "MDR contact details first (E5)."]}
    # the partner fills its contact details in itself, in part first
    partial = call(kite, "patch", url("licensing-mdr-contact", tree.kite_sub.pk),
                   {k: v for k, v in FULL_MDR.items() if k != "escalation_phone"})
    assert partial.status_code == 200, partial.content
    assert (partial.json()["complete"], partial.json()["missing"]) == (False, ["escalation_phone"])
    assert call(north, "put", url("licensing-reselling", tree.kite_sub.pk), resell).status_code == 400
    # ... its partner may read them but not fill them in for it
    assert north.get(url("licensing-mdr-contact", tree.kite_sub.pk)).json()["missing"] == ["escalation_phone"]
    assert call(north, "patch", url("licensing-mdr-contact", tree.kite_sub.pk),
                {"escalation_phone": "+1 555 0102"}).status_code == 403
    done = call(kite, "patch", url("licensing-mdr-contact", tree.kite_sub.pk), {"escalation_phone": "+1 555 0102"})
    assert done.json()["complete"] is True
    assert call(north, "put", url("licensing-reselling", tree.kite_sub.pk), resell).status_code == 200
    # own use of Secure Plus below a partner whose details go incomplete again is refused
    call(kite, "patch", url("licensing-mdr-contact", tree.kite_sub.pk), {"primary_phone": ""})
    bakery = call(kite, "put", url("licensing-own-use", tree.kite_bakery.pk),
                  {"items": ["endpoint_security", "secure_plus"]})
    assert "Kite Sub has to fill them in on its My Company page (E5)" in errors(bakery)["items"][0]
    assert [e for e in licensing_events() if e[:2] == ("Kite Sub", "mdr_contact.update")] == [
        ("Kite Sub", "mdr_contact.update", "admin@kite-sub.test")] * 3
    # customers have no MDR contact details
    assert errors(north.get(url("licensing-mdr-contact", tree.acme.pk))) == {
        "mdr_contact": ["MDR contact details belong to partners."]}


def test_E6_mdr_for_own_use_names_each_missing_requirement(tree):
    north, kite = as_admin(tree, tree.north), as_admin(tree, tree.kite_sub)
    mdr = {"items": ["endpoint_security", "secure", "mdr_foundations"]}
    assert call(north, "put", url("licensing-own-use", tree.acme.pk), mdr).status_code == 200
    # the target is a customer
    assert errors(call(north, "put", url("licensing-own-use", tree.kite_sub.pk), mdr)) == {
        "items": ["MDR Foundations for own use is for customer companies."]}
    # the target lets its partner assist
    assert errors(call(north, "put", url("licensing-own-use", tree.bolt.pk), mdr)) == {
        "items": ["Bolt Legal must let its partner assist with security management."]}
    # its direct partner resells MDR (E3 refuses first: the item is not on offer)
    assert errors(call(kite, "put", url("licensing-own-use", tree.kite_bakery.pk), mdr)) == {
        "items": ["Kite Sub does not resell MDR Foundations (E3)."]}
    entitlements_set(actor=None, company=tree.kite_sub, purpose="resell",
                     keys={"endpoint_security", "secure", "mdr_foundations", "patch_management"})
    # the direct partner has complete MDR contact details, and lets its own partner assist: every
    # missing requirement is named at once
    company_set_assist(actor=tree.admins[tree.kite_sub.pk], company=tree.kite_sub, on=False)
    assert errors(call(kite, "put", url("licensing-own-use", tree.kite_bakery.pk), mdr)) == {"items": [
        "Kite Sub must let its own partner assist with security management.",
        "Kite Sub has to complete its MDR contact details (or have started MDR onboarding before April 2024)."]}
    assert not Entitlement.objects.filter(company__in=[tree.bolt, tree.kite_sub, tree.kite_bakery],
                                          purpose="own").exists()
    company_set_assist(actor=tree.admins[tree.kite_sub.pk], company=tree.kite_sub, on=True)
    call(kite, "patch", url("licensing-mdr-contact", tree.kite_sub.pk), FULL_MDR)
    ok = call(kite, "put", url("licensing-own-use", tree.kite_bakery.pk), mdr)
    assert ok.status_code == 200, ok.content
    assert "mdr_foundations" in ok.json()["effective"]


def test_E7_addons_sensor_categories_and_retention_tiers(tree):
    north = as_admin(tree, tree.north)
    path = url("licensing-own-use", tree.acme.pk)
    assert errors(call(north, "put", path, {"items": ["endpoint_security", "a_la_carte", "xdr_network"]})) == {
        "items": ["XDR sensor categories need the XDR add-on."]}
    assert errors(call(north, "put", path, {"items": ["endpoint_security", "a_la_carte", "data_retention"]})) == {
        "items": ["Choose one Data Retention tier."]}
    ok = call(north, "put", path, {"items": ["endpoint_security", "secure_extra", "xdr_network", "xdr_cloud",
                                             "data_retention", "retention_1y"]})
    assert ok.status_code == 200, ok.content
    assert ok.json()["included"] == ["advanced_threat_security", "edr", "mdr_foundations", "xdr"]
    assert {"xdr_network", "xdr_cloud", "retention_1y"} <= set(ok.json()["items"])


# --- who may do what -------------------------------------------------------------------------------------

def test_A4_licensing_scope_roles_and_the_companys_own_licensing(tree):
    _, companies_only = api_key_create(actor=tree.admins[tree.north.pk], company=tree.north, name="narrow",
                                       scopes=["companies"])
    client = key_client(companies_only)
    for method, path in (("get", url("catalogue")), ("get", url("licensing-detail", tree.acme.pk)),
                         ("patch", url("licensing-detail", tree.acme.pk))):
        response = call(client, method, path, {"reserved_seats": 1})
        assert response.status_code == 403, path
        assert "'licensing' scope" in response.json()["detail"]
    # A2: other roles read the catalogue only
    analyst = signed_in(make_user(company=tree.north, role=Role.SECURITY_ANALYST))
    assert analyst.get(url("catalogue")).status_code == 200
    for method, path in (("get", url("licensing-detail", tree.acme.pk)), ("get", url("licensing-list")),
                         ("put", url("licensing-own-use", tree.acme.pk))):
        assert call(analyst, method, path, {"items": []}).status_code == 403, path
    # a company does not set its own licensing; its partner does
    own = call(key_client(tree.keys[tree.acme.pk]), "patch", url("licensing-detail", tree.acme.pk),
               {"reserved_seats": 100})
    assert own.status_code == 403 and license_of(tree.acme).reserved_seats is None
    # a key acts as an administrator; its changes are audited under the key's name (X1, since fd9f97a)
    done = call(key_client(tree.keys[tree.north.pk]), "patch", url("licensing-detail", tree.acme.pk),
                {"reserved_seats": 2})
    assert done.status_code == 200, done.content
    company, action, actor = licensing_events()[-1]
    assert (company, action) == ("Acme Dental", "license.reservation")
    assert re.fullmatch(r"API key [0-9a-f]+ \(northwind-msp key\)", actor), actor
    assert Client().get(url("catalogue")).status_code == 401


# --- the schema ------------------------------------------------------------------------------------------

def _openapi_path(pattern: str) -> str:
    path = "/api/v1/" + pattern.lstrip("^").rstrip("$")
    return re.sub(r"\(\?P<pk>[^)]*\)", "{id}", path)


def test_openapi_schema_lists_every_licensing_route(client, platform):
    response = client.get(reverse("api-schema") + "?format=json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    expected = {
        "catalogue": {"get"}, "licensing-list": {"get"}, "licensing-detail": {"get", "patch"},
        "licensing-trials": {"get"}, "licensing-own-use": {"get", "put"}, "licensing-reselling": {"get", "put"},
        "licensing-mdr-contact": {"get", "patch"},
    }
    assert {p.name for p in api_urls.urlpatterns} == set(expected)
    for pattern in api_urls.urlpatterns:
        path = _openapi_path(str(pattern.pattern))
        assert path in schema["paths"], path
        operations = schema["paths"][path]
        assert {m for m in operations if m in {"get", "put", "patch", "post", "delete"}} == expected[pattern.name]
        for method, operation in operations.items():
            assert "licensing" in operation["tags"]
            if method != "get" or "{id}" in path:
                assert "404" in operation["responses"] or path == "/api/v1/catalogue/", (path, method)
            if method in {"put", "patch"}:
                assert "400" in operation["responses"], (path, method)
    catalogue = schema["paths"]["/api/v1/catalogue/"]["get"]["responses"]["200"]["content"]
    assert catalogue["application/json"]["schema"] == {"$ref": "#/components/schemas/Catalogue"}
    update = schema["components"]["schemas"]["PatchedLicenseUpdate"]["properties"]
    assert {"reserved_seats", "minimum_usage", "end_date", "auto_renew", "renew_months", "own_use",
            "resell"} <= set(update)
