"""The Usage pages (/usage/, /usage/<id>/): the month's figures for the user's company or a company
below it (U13 sums, "Not enabled", U12 late adjustments, seats by state), C2/C3 visibility of
company-level figures, C6 isolation and a flat number of queries."""

import datetime as dt

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from companies.models import Role
from companies.services import company_set_assist
from licensing.entitlements import entitlements_set
from licensing.models import CatalogItem
from licensing.services import license_update
from tests.factories import make_company, make_partner, make_user
from tests.usage.fleet import Machine
from usage.rollups import month_start, usage_company_rollup, usage_month_close

pytestmark = pytest.mark.django_db

CURRENT = month_start(dt.datetime.now(dt.UTC))
PREV = month_start(CURRENT - dt.timedelta(days=1))
IN_PREV = dt.datetime(PREV.year, PREV.month, 12, 8, tzinfo=dt.UTC)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def fleet(company, n, when=None, **beat):
    when = when or dt.datetime.now(dt.UTC)
    for _ in range(n):
        Machine(company, now=when).beat(when, **beat)
    usage_company_rollup(company_id=company.pk, months=[month_start(when)])


def figure(html: str, key: str) -> str:
    """The value cell of one figure row of the usage table."""
    start = html.index(f'data-figure="{key}"')
    cell = html.index("<td", start)
    return html[html.index(">", cell) + 1:html.index("</td>", cell)].strip()


@pytest.fixture
def tree(platform):
    resell = set(CatalogItem.objects.values_list("key", flat=True)) - {"secure_plus", "secure_extra",
                                                                        "mdr_foundations"}
    msp = make_partner(parent=platform, name="Harbor MSP")
    license_update(actor=None, company=msp, reserved_seats=50, resell=resell)
    dental = make_company(parent=msp, name="Dental")
    legal = make_company(parent=msp, name="Legal")
    reseller = make_partner(parent=platform, name="Reseller", manages_security=False)
    license_update(actor=None, company=reseller, resell=resell)
    shop = make_company(parent=reseller, name="Shop")
    other = make_company(parent=platform, name="Other")
    entitlements_set(actor=None, company=dental, purpose="own",
                     keys={"endpoint_security", "a_la_carte", "patch_management"})
    for company in (legal, shop, other):
        entitlements_set(actor=None, company=company, purpose="own", keys={"endpoint_security", "a_la_carte"})
    fleet(dental, 3, modules=["antimalware", "patch_management"])
    fleet(legal, 2)
    fleet(shop, 1)
    fleet(other, 4)
    usage_company_rollup(company_id=msp.pk, months=[CURRENT])
    users = {c.name: make_user(company=c) for c in (msp, dental, legal, reseller, shop, other)}
    company_set_assist(actor=users["Legal"], company=legal, on=False)
    return type("Tree", (), {"msp": msp, "dental": dental, "legal": legal, "reseller": reseller, "shop": shop,
                             "other": other, "users": users})


def test_R7_U13_customer_sees_its_own_month_and_not_enabled(tree):
    response = signed_in(tree.users["Dental"]).get("/usage/")
    assert response.status_code == 200
    html = response.content.decode()
    assert figure(html, "endpoint_usage") == "3"
    assert figure(html, "patch_management") == "3"
    assert figure(html, "edr") == "Not enabled"
    assert 'data-nav="usage"' in html and "Month so far" in html
    assert 'hx-trigger="every 60s"' in html  # the open month refreshes itself


def test_U13_partner_page_sums_its_subtree_and_lists_companies_below(tree):
    html = signed_in(tree.users["Harbor MSP"]).get("/usage/").content.decode()
    assert figure(html, "endpoint_usage") == "5"  # Dental 3 + Legal 2
    assert figure(html, "patch_management") == "3"  # enabled for Dental only
    assert f'data-company="{tree.dental.pk}"' in html and f'data-company="{tree.legal.pk}"' in html
    own = signed_in(tree.users["Harbor MSP"]).get("/usage/", {"scope": "company"}).content.decode()
    assert figure(own, "endpoint_usage") == "0"


def test_U13_a_long_list_of_companies_below_says_it_is_cut(tree, monkeypatch):
    from usage import month_selectors

    html = signed_in(tree.users["Harbor MSP"]).get("/usage/").content.decode()
    assert 'data-testid="usage-children-more"' not in html
    monkeypatch.setattr(month_selectors, "CHILDREN_LIMIT", 1)
    html = signed_in(tree.users["Harbor MSP"]).get("/usage/").content.decode()
    assert f'data-company="{tree.dental.pk}"' in html and f'data-company="{tree.legal.pk}"' not in html
    assert "Showing the first 1 of 2 companies" in html


def test_R7_partner_opens_a_company_below_and_seat_states(tree):
    html = signed_in(tree.users["Harbor MSP"]).get(f"/usage/{tree.dental.pk}/").content.decode()
    assert "Usage of Dental" in html and figure(html, "licensed_endpoints") == "3"
    assert 'data-state="licensed">3<' in html and 'data-state="trial">0<' in html


def test_C3_partner_sees_usage_of_a_company_without_assist_no_endpoints(tree):
    html = signed_in(tree.users["Harbor MSP"]).get(f"/usage/{tree.legal.pk}/").content.decode()
    assert figure(html, "endpoint_usage") == "2"
    assert "host-" not in html  # no endpoint names (C3)


def test_C2_reseller_only_partner_sees_company_figures(tree):
    reporter = make_user(company=tree.reseller, role=Role.REPORTER)
    html = signed_in(reporter).get(f"/usage/{tree.shop.pk}/").content.decode()
    assert figure(html, "endpoint_usage") == "1" and "host-" not in html


@pytest.mark.parametrize(("viewer", "target"), [("Dental", "Legal"), ("Dental", "Harbor MSP"),
                                                 ("Harbor MSP", "Other"), ("Reseller", "Dental"),
                                                 ("Shop", "Reseller")])
def test_C6_usage_page_of_a_foreign_company_is_404(tree, viewer, target):
    target_id = {"Legal": tree.legal, "Harbor MSP": tree.msp, "Other": tree.other, "Dental": tree.dental,
                 "Reseller": tree.reseller}[target].pk
    client = signed_in(tree.users[viewer])
    assert client.get(f"/usage/{target_id}/").status_code == 404
    assert client.get(f"/usage/{target_id}/", {"month": f"{PREV:%Y-%m}"}).status_code == 404
    assert client.get("/usage/999999/").status_code == 404


def test_U12_month_picker_shows_finalized_month_and_late_adjustments(tree):
    usage_month_close(month=PREV)
    fleet(tree.dental, 2, when=IN_PREV)  # arrives after the close
    client = signed_in(tree.users["Dental"])
    closed = client.get("/usage/", {"month": f"{PREV:%Y-%m}"}).content.decode()
    assert "Finalized on" in closed and figure(closed, "endpoint_usage") == "0"
    current = client.get("/usage/").content.decode()
    assert 'data-testid="late-adjustments"' in current
    assert f"Late adjustments to {PREV:%B %Y}" in current and "+2" in current
    assert f'data-month="{PREV:%Y-%m}"' in current  # listed among previous months


@pytest.mark.parametrize(("user", "query"), [("Dental", {"month": "2026-13"}), ("Dental", {"month": "abc"}),
                                             ("Dental", {"month": "2099-01"}),
                                             ("Harbor MSP", {"month": "2026-10", "scope": "zzz"})])
def test_X2_month_picker_names_a_bad_month(tree, user, query):
    """A bad month or scope is a 400 naming the field (as REST and the Reports page answer), showing the
    current month without its live refresh, never a 200 that looks like the month asked for."""
    response = signed_in(tree.users[user]).get("/usage/", query)
    html = response.content.decode()
    assert response.status_code == 400
    assert 'data-testid="month-error"' in html
    assert response.context["detail"]["month"] == month_start(dt.datetime.now(dt.UTC))  # under the error
    assert response.context["refresh_seconds"] is None
    if user == "Dental":
        assert figure(html, "endpoint_usage") == "3"


def test_usage_page_query_count_is_flat(tree):
    client = signed_in(tree.users["Harbor MSP"])
    client.get("/usage/")
    with CaptureQueriesContext(connection) as small:
        client.get("/usage/")
    for _ in range(3):
        company = make_company(parent=tree.msp)
        entitlements_set(actor=None, company=company, purpose="own", keys={"endpoint_security", "a_la_carte"})
        fleet(company, 2)
    with CaptureQueriesContext(connection) as large:
        html = client.get("/usage/").content.decode()
    assert figure(html, "endpoint_usage") == "11"
    assert len(large) == len(small)
