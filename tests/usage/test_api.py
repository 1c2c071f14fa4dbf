"""getMonthlyUsage over the REST API (SPEC R7): the report's figures for a company and month, with
U13 subtree sums and "Not enabled", U12 late adjustments, U11 product type, L6 minimum, C2/C3
visibility of company-level figures and C6 isolation."""

import datetime as dt
import json
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from companies.models import Role
from companies.services import api_key_create, company_set_assist
from licensing.entitlements import entitlements_set
from licensing.services import license_update
from tests.factories import make_company, make_partner, make_user
from tests.usage.fleet import Machine, mailbox
from usage.rollups import month_start, usage_company_rollup, usage_month_close
from usage.selectors import NOT_ENABLED, usage_totals

pytestmark = pytest.mark.django_db

TODAY = dt.datetime.now(dt.UTC)
CURRENT = month_start(TODAY)
PREV = month_start(CURRENT - dt.timedelta(days=1))
IN_PREV = dt.datetime(PREV.year, PREV.month, 10, 12, tzinfo=dt.UTC)
NOT_FOUND = {"detail": "Not found."}


def usage_url(company_id, month=None):
    if month is None:
        return reverse("usage-api:months", args=[company_id])
    return reverse("usage-api:month", args=[company_id, month if isinstance(month, str) else f"{month:%Y-%m}"])


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def fleet(company, n, when=None, **beat):
    # default: now, after the entitlements the tests set (add-ons count from when they are enabled)
    when = when or max(dt.datetime.now(dt.UTC), dt.datetime(CURRENT.year, CURRENT.month, 1, tzinfo=dt.UTC))
    for _ in range(n):
        Machine(company, now=when).beat(when, **beat)  # the seat taken when the machine was installed
    usage_company_rollup(company_id=company.pk, months=[month_start(when)])


@pytest.fixture
def tree(platform):
    """platform
       ├─ North MSP (partner) ─┬─ Acme (customer; ES + Patch Management; 3 endpoints, 2 with PM)
       │                       ├─ Bolt (customer, assist off; ES only; 2 endpoints)
       │                       └─ Kite (partner) ── Kite Bakery (customer; ES + PM; 4 endpoints, all PM)
       ├─ Rivet (reseller-only partner) ── Oak (customer; ES; 1 endpoint)
       └─ South MSP ── Pine (customer; ES + PM; 5 endpoints)"""
    from licensing.models import CatalogItem

    resell = set(CatalogItem.objects.values_list("key", flat=True)) - {"secure_plus", "secure_extra",
                                                                        "mdr_foundations"}
    north = make_partner(parent=platform, name="North MSP")
    license_update(actor=None, company=north, reserved_seats=100, resell=resell)
    acme = make_company(parent=north, name="Acme")
    bolt = make_company(parent=north, name="Bolt")
    kite = make_partner(parent=north, name="Kite")
    entitlements_set(actor=None, company=kite, purpose="resell",
                     keys={"endpoint_security", "a_la_carte", "patch_management"})
    bakery = make_company(parent=kite, name="Kite Bakery")
    rivet = make_partner(parent=platform, name="Rivet", manages_security=False)
    oak = make_company(parent=rivet, name="Oak")
    south = make_partner(parent=platform, name="South MSP")
    for partner in (rivet, south):
        license_update(actor=None, company=partner, resell=resell)
    pine = make_company(parent=south, name="Pine")
    for company in (acme, bakery, pine):
        entitlements_set(actor=None, company=company, purpose="own",
                         keys={"endpoint_security", "a_la_carte", "patch_management"})
    for company in (bolt, oak):
        entitlements_set(actor=None, company=company, purpose="own", keys={"endpoint_security", "a_la_carte"})
    fleet(acme, 2, modules=["antimalware", "patch_management"])
    fleet(acme, 1)
    fleet(bolt, 2, modules=["antimalware", "patch_management"])  # PM not enabled: counts nothing
    fleet(bakery, 4, modules=["antimalware", "patch_management"])
    fleet(oak, 1)
    fleet(pine, 5, modules=["antimalware", "patch_management"])
    for company in (north, kite, rivet, south):
        usage_company_rollup(company_id=company.pk, months=[CURRENT])
    companies = {"platform": platform, "north": north, "acme": acme, "bolt": bolt, "kite": kite, "bakery": bakery,
                 "rivet": rivet, "oak": oak, "south": south, "pine": pine}
    admins = {name: make_user(company=c, email=f"admin@{name}.test") for name, c in companies.items()}
    company_set_assist(actor=admins["bolt"], company=bolt, on=False)
    return SimpleNamespace(**companies, admins=admins)


def get(client, company, month=None, **query):
    return client.get(usage_url(company.pk, month), query)


def test_R7_get_monthly_usage_returns_the_reports_figures(tree):
    client = signed_in(tree.admins["acme"])
    response = get(client, tree.acme, CURRENT)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["month"] == f"{CURRENT:%Y-%m}"
    assert body["company"]["name"] == "Acme" and body["company"]["path"] == ["Acme"]
    assert body["scope"] == "company" and body["companies"] == 1
    figures = body["figures"]
    assert (figures["active_endpoints"], figures["licensed_endpoints"], figures["endpoint_usage"]) == (3, 3, 3)
    assert figures["patch_management"] == 2
    assert figures["edr"] == NOT_ENABLED
    # the same selector as the report: every figure equal
    expected = usage_totals(company=tree.acme, month=CURRENT, subtree=False)["figures"]
    assert figures == expected
    assert body["status"] == "open"
    assert body["data_retention"] == NOT_ENABLED


def test_R7_U13_partner_figures_sum_its_subtree_and_not_enabled(tree):
    client = signed_in(tree.admins["north"])
    body = get(client, tree.north, CURRENT).json()
    assert body["scope"] == "subtree"
    # Acme 3 + Bolt 2 + Kite Bakery 4 endpoints; Patch Management only where enabled: 2 + 4
    assert body["figures"]["endpoint_usage"] == 9
    assert body["figures"]["patch_management"] == 6
    assert body["figures"]["full_disk_encryption"] == NOT_ENABLED
    assert body["companies"] == 5  # the rows of North, Acme, Bolt, Kite and Kite Bakery
    kite = get(client, tree.kite, CURRENT).json()
    assert kite["figures"]["endpoint_usage"] == 4 and kite["company"]["path"] == ["North MSP", "Kite"]
    # a partner's own row only
    own = get(client, tree.north, CURRENT, scope="company").json()
    assert own["scope"] == "company" and own["figures"]["endpoint_usage"] == 0
    # a company without Patch Management shows it as "Not enabled", not 0 (U13)
    assert get(client, tree.bolt, CURRENT).json()["figures"]["patch_management"] == NOT_ENABLED


def test_R7_U12_late_adjustments_of_the_finalized_month_show_in_the_next(tree):
    client = signed_in(tree.admins["pine"])
    usage_month_close(month=PREV)
    fleet(tree.pine, 2, when=IN_PREV)  # late data for a finalized month
    usage_company_rollup(company_id=tree.pine.pk)
    body = get(client, tree.pine, CURRENT).json()
    assert body["late_adjustments"] == {"month": f"{PREV:%Y-%m}", "months": [f"{PREV:%Y-%m}"],
                                        "figures": {"active_endpoints": 2, "licensed_endpoints": 2,
                                                    "endpoint_usage": 2}}
    assert body["figures"]["endpoint_usage"] == 5  # the current month itself is unchanged
    closed = get(client, tree.pine, PREV).json()
    assert closed["status"] == "finalized" and closed["figures"]["endpoint_usage"] == 0  # frozen
    months = client.get(usage_url(tree.pine.pk)).json()["months"]
    assert months == [{"month": f"{CURRENT:%Y-%m}", "finalized": False}, {"month": f"{PREV:%Y-%m}", "finalized": True}]


def test_R7_U11_product_type_option(tree, platform):
    edr = make_company(parent=tree.north, name="EDR only")
    entitlements_set(actor=None, company=edr, purpose="own", keys={"edr_standalone"})
    fleet(edr, 3, modules=["antimalware", "edr"])
    client = signed_in(tree.admins["north"])
    assert get(client, tree.north, CURRENT, product_type="edr_standalone").json()["figures"]["endpoint_usage"] == 3
    assert get(client, tree.acme, CURRENT, product_type="edr_standalone").json()["figures"]["endpoint_usage"] == 0
    assert get(client, tree.north, CURRENT, product_type="endpoint_security").json()["figures"][
        "endpoint_usage"] == 9


def test_R7_L6_minimum_usage_and_billed_figure(tree):
    license_update(actor=None, company=tree.acme, reserved_seats=10, minimum_usage=5)
    usage_company_rollup(company_id=tree.acme.pk, months=[CURRENT])
    body = get(signed_in(tree.admins["acme"]), tree.acme, CURRENT).json()
    assert (body["reserved_seats"], body["minimum_usage"]) == (10, 5)
    assert body["figures"]["endpoint_usage"] == 3 and body["billed_endpoint_usage"] == 5


def test_R7_U8_data_retention_tiers_summed(tree):
    for company in (tree.acme, tree.bolt):
        keys = {"endpoint_security", "a_la_carte", "data_retention", "retention_90d"}
        entitlements_set(actor=None, company=company, purpose="own", keys=keys)
    fleet(tree.acme, 1)
    fleet(tree.bolt, 2)
    body = get(signed_in(tree.admins["north"]), tree.north, CURRENT).json()
    assert body["data_retention"] == {"retention_90d": 3}
    assert get(signed_in(tree.admins["pine"]), tree.pine, CURRENT).json()["data_retention"] == NOT_ENABLED
    # U11/U13: an EDR report holds none of these Endpoint Security companies, so none has it enabled
    edr = get(signed_in(tree.admins["north"]), tree.north, CURRENT, product_type="edr_standalone").json()
    assert edr["data_retention"] == NOT_ENABLED


def test_R7_C2_reseller_only_partner_sees_company_figures_no_endpoints(tree):
    client = signed_in(tree.admins["rivet"])
    body = get(client, tree.oak, CURRENT).json()
    assert body["figures"]["endpoint_usage"] == 1
    assert "endpoints" not in body and "hostname" not in json.dumps(body)


def test_R7_C3_partner_sees_figures_of_a_company_without_assist(tree):
    body = get(signed_in(tree.admins["north"]), tree.bolt, CURRENT).json()
    assert body["figures"]["licensed_endpoints"] == 2
    assert "hostname" not in json.dumps(body)


@pytest.mark.parametrize(("caller", "foreign"), [
    ("acme", "bolt"),  # sibling
    ("acme", "north"),  # own partner
    ("kite", "acme"),  # a partner's sibling
    ("north", "pine"),  # another partner's customer
    ("south", "north"),
    ("rivet", "acme"),
])
def test_C6_usage_api_foreign_company_is_404(tree, caller, foreign):
    client = signed_in(tree.admins[caller])
    target = getattr(tree, foreign)
    for response in (get(client, target, CURRENT), get(client, target), get(client, target, "13-2026"),
                     get(client, target, CURRENT, product_type="nonsense")):
        assert response.status_code == 404 and response.json() == NOT_FOUND


def test_C6_usage_api_missing_and_malformed_ids_answer_alike(tree):
    client = signed_in(tree.admins["north"])
    for company_id in (999_999, "abc", "-1"):
        response = client.get(usage_url(company_id, CURRENT))
        assert response.status_code == 404 and response.json() == NOT_FOUND


def test_C6_api_key_reads_usage_of_its_subtree_only(tree):
    key, secret = api_key_create(actor=tree.admins["north"], company=tree.north, name="billing", scopes=["usage"])
    client = Client(headers={"Authorization": f"Api-Key {secret}"})
    assert get(client, tree.bakery, CURRENT).json()["figures"]["endpoint_usage"] == 4
    assert get(client, tree.pine, CURRENT).status_code == 404
    _, narrow = api_key_create(actor=tree.admins["north"], company=tree.north, name="crm", scopes=["companies"])
    response = Client(headers={"Authorization": f"Api-Key {narrow}"}).get(usage_url(tree.acme.pk, CURRENT))
    assert response.status_code == 403 and "usage" in response.json()["detail"]
    assert Client().get(usage_url(tree.acme.pk, CURRENT)).status_code in (401, 403)


def test_R7_reporters_read_usage(tree):
    reporter = make_user(company=tree.north, role=Role.REPORTER)
    assert get(signed_in(reporter), tree.acme, CURRENT).status_code == 200


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "november", "1999-12", "2026-1\u0661", "2026-11\n"])
def test_X2_bad_month_is_refused_naming_the_field(tree, month):
    response = get(signed_in(tree.admins["acme"]), tree.acme, month)
    assert response.status_code == 400
    assert "YYYY-MM" in response.json()["errors"]["month"][0]


def test_X2_future_month_and_bad_options_are_refused(tree):
    client = signed_in(tree.admins["acme"])
    future = month_start(CURRENT + dt.timedelta(days=40))
    response = get(client, tree.acme, future)
    assert response.status_code == 400 and "has not started" in response.json()["errors"]["month"][0]
    response = get(client, tree.acme, CURRENT, product_type="antivirus")
    assert response.status_code == 400 and "product_type" in response.json()["errors"]
    response = get(client, tree.acme, CURRENT, scope="everything")
    assert response.status_code == 400 and "scope" in response.json()["errors"]


def test_R7_query_count_is_flat_as_the_subtree_grows(tree):
    client = signed_in(tree.admins["north"])
    get(client, tree.north, CURRENT)  # warm caches (catalogue, session)
    with CaptureQueriesContext(connection) as small:
        assert get(client, tree.north, CURRENT).status_code == 200
    for _ in range(4):
        company = make_company(parent=tree.north)
        entitlements_set(actor=None, company=company, purpose="own",
                         keys={"endpoint_security", "a_la_carte", "patch_management"})
        fleet(company, 2, modules=["antimalware", "patch_management"])
    with CaptureQueriesContext(connection) as large:
        body = get(client, tree.north, CURRENT).json()
    assert body["figures"]["endpoint_usage"] == 9 + 8
    assert len(large) == len(small)


def test_R7_U14_U15_mailbox_figures(tree):
    entitlements_set(actor=None, company=tree.pine, purpose="own",
                     keys={"endpoint_security", "a_la_carte", "patch_management", "security_for_exchange",
                           "email_security"})
    mailbox(tree.pine, CURRENT, "a@pine.test", product="exchange")
    mailbox(tree.pine, CURRENT, "b@pine.test", sent=2)
    mailbox(tree.pine, CURRENT, "c@pine.test", object_class="sharedMailbox", sent=3)
    usage_company_rollup(company_id=tree.pine.pk, months=[CURRENT])
    figures = get(signed_in(tree.admins["pine"]), tree.pine, CURRENT).json()["figures"]
    assert (figures["exchange_mailboxes"], figures["email_security_mailboxes"]) == (1, 1)


def test_R7_openapi_schema_documents_get_monthly_usage(client, platform):
    schema = json.loads(client.get(reverse("api-schema") + "?format=json").content)
    operations = {op["operationId"]: (path, op) for path, item in schema["paths"].items()
                  for op in item.values() if isinstance(op, dict) and "operationId" in op}
    path, operation = operations["getMonthlyUsage"]
    assert path.startswith("/api/v1/companies/{company_id}/usage/{month}")
    assert set(operation["responses"]) >= {"200", "400", "404"}
    assert "listUsageMonths" in operations
    figures = schema["components"]["schemas"]["UsageFigures"]["properties"]
    assert figures["sve_vdi_hours"]["oneOf"][1]["enum"] == [NOT_ENABLED]
