"""companies.*: the same services and visibility rules as the REST API (H1-H4, C2-C6, A3, X2)."""

import pytest

from companies.models import AuditEvent, Company, CompanyStatus, User
from licensing.models import License
from tests.usage.fleet import Machine

pytestmark = pytest.mark.django_db


def test_H1_create_company_under_the_key_company_and_under_a_managed_partner(rpc, tree):
    key = tree.keys[tree.north.pk]
    new_id = rpc.result("companies", "createCompany", {
        "type": 1, "name": "Fern Dental", "address": "1 Main St", "country": "DE", "phone": "+49 30 1234",
        "industry": 19, "canBeManagedByAbove": True, "enforce2FA": True}, key=key)
    fern = Company.objects.get(pk=int(new_id))
    assert (fern.parent_id, fern.type, fern.country, fern.field_of_activity) == (tree.north.pk, "customer", "DE",
                                                                                 "healthcare")
    assert fern.enforce_two_factor is True
    under_sub = rpc.result("companies", "createCompany", {"type": 0, "name": "Kite Deep", "parentId":
                                                          str(tree.kite_sub.pk)}, key=key)
    assert Company.objects.get(pk=int(under_sub)).parent_id == tree.kite_sub.pk
    # X1: written to the audit log like any other creation
    assert AuditEvent.objects.filter(company=fern, action="company.create").exists()


def test_H1_create_company_with_license_subscription_and_primary_account(rpc, tree):
    from licensing.entitlements import entitlements_set

    entitlements_set(actor=None, company=tree.north, purpose="resell",
                     keys={"endpoint_security", "a_la_carte", "patch_management"})
    new_id = rpc.result("companies", "createCompany", {
        "type": 1, "name": "Gale Law", "canBeManagedByAbove": False, "accountEmail": "boss@gale.test",
        "accountFullName": "Gale Boss", "accountLanguage": "en_US",
        "licenseSubscription": {"type": 3, "reservedSlots": 0, "endSubscription": "2031-01-31",
                                "autoRenewPeriod": 12, "ownUse": {"productType": 0, "addons": ["patchManagement"]}}},
        key=tree.keys[tree.north.pk])
    gale = Company.objects.get(pk=int(new_id))
    lic = License.objects.get(company=gale)
    assert (lic.reserved_seats, str(lic.end_date), lic.auto_renew, lic.renew_months) == (0, "2031-01-31", True, 12)
    assert User.objects.get(email="boss@gale.test").company == gale
    assert gale.partner_can_assist is False


@pytest.mark.parametrize("params,named", [
    ({"name": "No Type"}, "type"),
    ({"type": 5, "name": "Bad Type"}, "type"),
    ({"type": 1}, "name"),
    ({"type": 1, "name": "   "}, "name"),
    ({"type": 1, "name": "Bad Country", "country": "XX"}, "country"),
    ({"type": 1, "name": "Bad Industry", "industry": 999}, "industry"),
    ({"type": 1, "name": "No Account", "canBeManagedByAbove": False}, "accountEmail"),
    ({"type": 1, "name": "Acme Dental"}, "name"),  # a sibling has the name (H2)
    ({"type": 1, "name": "Bad Sub", "licenseSubscription": {"type": 1}}, "licenseSubscription.type"),
    ({"type": 1, "name": "Bad Seats", "licenseSubscription": {"reservedSlots": -3}},
     "licenseSubscription.reservedSlots"),
    ({"type": 1, "name": "Bad Product", "licenseSubscription": {"ownUse": {"productType": 9}}},
     "licenseSubscription.ownUse.productType"),
    ({"type": 1, "name": "Bad Parent", "parentId": "abc"}, "parentId"),
    ({"type": 1, "name": "Typo", "adress": "x"}, "adress"),
])
def test_X2_create_company_bad_input_is_32602_naming_the_parameter(rpc, tree, params, named):
    before = Company.objects.count()
    error = rpc.error("companies", "createCompany", params, key=tree.keys[tree.north.pk])
    assert error["code"] == -32602, error
    assert f"'{named}'" in error["data"]["details"], error
    assert Company.objects.count() == before  # nothing half-written


def test_X2_a_refused_license_rolls_back_the_new_company(rpc, tree):
    before = Company.objects.count()
    error = rpc.error("companies", "createCompany", {
        "type": 1, "name": "Too Big", "licenseSubscription": {"minimumUsage": 5}}, key=tree.keys[tree.north.pk])
    assert "'licenseSubscription.minimumUsage'" in error["data"]["details"]
    assert Company.objects.count() == before
    assert not Company.objects.filter(name="Too Big").exists()


def test_H1_customer_cannot_parent_companies(rpc, tree):
    error = rpc.error("companies", "createCompany", {"type": 1, "name": "Child"}, key=tree.keys[tree.acme.pk])
    assert error["code"] == -32602 and "'parentId'" in error["data"]["details"]


def test_get_company_details_own_and_below(rpc, tree):
    key = tree.keys[tree.north.pk]
    own = rpc.result("companies", "getCompanyDetails", {}, key=key)
    assert own["id"] == str(tree.north.pk) and own["parentId"] is None and own["type"] == 0
    bolt = rpc.result("companies", "getCompanyDetails", {"companyId": str(tree.bolt.pk)}, key=key)
    assert bolt["name"] == "Bolt Legal" and bolt["parentId"] == str(tree.north.pk)
    assert bolt["canBeManagedByAbove"] is False and bolt["isSuspended"] is False and bolt["type"] == 1


def test_update_company_details(rpc, tree):
    key = tree.keys[tree.north.pk]
    assert rpc.result("companies", "updateCompanyDetails", {
        "companyId": str(tree.acme.pk), "name": "Acme Dental Group", "phone": "+1 555 0100", "industry": 30,
        "enforce2FA": True, "canBeManagedByAbove": False}, key=key) is None
    tree.acme.refresh_from_db()
    assert (tree.acme.name, tree.acme.phone, tree.acme.field_of_activity) == ("Acme Dental Group", "+1 555 0100",
                                                                               "it")
    assert tree.acme.enforce_two_factor is True and tree.acme.partner_can_assist is False


def test_C4_a_key_cannot_let_the_partner_assist_again(rpc, tree):
    error = rpc.error("companies", "updateCompanyDetails", {"companyId": tree.bolt.pk, "canBeManagedByAbove": True},
                      key=tree.keys[tree.north.pk])
    assert error["code"] == -32602 and "'canBeManagedByAbove'" in error["data"]["details"]
    tree.bolt.refresh_from_db()
    assert tree.bolt.partner_can_assist is False


def test_X2_update_company_bad_input_changes_nothing(rpc, tree):
    error = rpc.error("companies", "updateCompanyDetails", {"companyId": tree.acme.pk, "name": "Renamed",
                                                            "phone": "call me"}, key=tree.keys[tree.north.pk])
    assert error["code"] == -32602 and "'phone'" in error["data"]["details"]
    tree.acme.refresh_from_db()
    assert tree.acme.name == "Acme Dental"
    assert rpc.error("companies", "updateCompanyDetails", {"name": "x"},
                     key=tree.keys[tree.north.pk])["data"]["details"].startswith("Invalid parameter 'companyId'")


def test_find_companies_by_name_with_wildcards(rpc, tree):
    key = tree.keys[tree.north.pk]
    found = rpc.result("companies", "findCompaniesByName", {"nameFilter": "Kite*"}, key=key)
    assert sorted(c["name"] for c in found) == ["Kite Bakery", "Kite Sub"]
    assert [c["name"] for c in rpc.result("companies", "findCompaniesByName", {"nameFilter": "*dental"},
                                          key=key)] == ["Acme Dental"]
    assert rpc.result("companies", "findCompaniesByName", {"nameFilter": "Acme"}, key=key) == []  # exact
    # C6: a name outside the subtree finds nothing, and says nothing
    assert rpc.result("companies", "findCompaniesByName", {"nameFilter": "Pine Dairy"}, key=key) == []
    error = rpc.error("companies", "findCompaniesByName", {"nameFilter": "K*"}, key=key)
    assert error["code"] == -32602 and "'nameFilter'" in error["data"]["details"]


def test_H4_suspend_and_activate(rpc, tree):
    key = tree.keys[tree.north.pk]
    assert rpc.result("companies", "suspendCompany", {"companyId": str(tree.acme.pk)}, key=key) is None
    tree.acme.refresh_from_db()
    assert tree.acme.status == CompanyStatus.SUSPENDED and tree.acme.suspended_at is not None
    assert rpc.result("companies", "activateCompany", {"companyId": str(tree.acme.pk)}, key=key) is None
    tree.acme.refresh_from_db()
    assert tree.acme.status == CompanyStatus.ACTIVE
    # a company cannot suspend itself through its own key (it manages no company above it)
    assert rpc.error("companies", "suspendCompany", {"companyId": tree.north.pk}, key=key)["code"] == -32000


def test_delete_company_only_when_empty(rpc, tree):
    key = tree.keys[tree.north.pk]
    empty = rpc.result("companies", "createCompany", {"type": 1, "name": "Mistake Inc"}, key=key)
    assert rpc.result("companies", "deleteCompany", {"companyId": empty}, key=key) is None
    assert not Company.objects.filter(pk=int(empty)).exists()
    Machine(tree.acme)
    error = rpc.error("companies", "deleteCompany", {"companyId": tree.acme.pk}, key=key)
    assert error["code"] == -32602 and "'companyId'" in error["data"]["details"]
    assert "endpoints" in error["data"]["details"]
    error = rpc.error("companies", "deleteCompany", {"companyId": tree.kite_sub.pk}, key=key)
    assert "companies under it" in error["data"]["details"]
    assert Company.objects.filter(pk__in=[tree.acme.pk, tree.kite_sub.pk]).count() == 2



def _with_usage(company):
    import datetime as dt

    from usage.models import CompanyMonthUsage

    CompanyMonthUsage.objects.create(company=company, month=dt.date(2026, 10, 1), endpoint_usage=3,
                                     lineage=company.lineage)


def _with_reservation(company):
    from licensing.seats import reservation_set

    reservation_set(actor=None, company=company, seats=5)


@pytest.mark.parametrize(("prepare", "reason"), [
    (_with_usage, "it has recorded usage"),
    (_with_reservation, "it has reserved seats"),
    (lambda company: Machine(company, seat=False), "it has endpoints"),  # registered, no seat (suspended)
])
def test_H4_delete_refuses_a_company_with_billing_history(rpc, tree, prepare, reason):
    """Usage already billed, a reservation, or an endpoint without a seat: the company must stay (to be
    suspended instead), or a partner's past sums would change."""
    key = tree.keys[tree.north.pk]
    made = int(rpc.result("companies", "createCompany", {"type": 1, "name": "Billed Inc"}, key=key))
    company = Company.objects.get(pk=made)
    prepare(company)
    error = rpc.error("companies", "deleteCompany", {"companyId": made}, key=key)
    assert error["code"] == -32602 and reason in error["data"]["details"]
    assert "Suspend it instead" in error["data"]["details"]
    assert Company.objects.filter(pk=made).exists()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [company.schema_name])
        assert cursor.fetchone() is not None  # its schema is still there

FOREIGN_CALLS = [
    ("getCompanyDetails", lambda c: {"companyId": c}),
    ("updateCompanyDetails", lambda c: {"companyId": c, "name": "Probe"}),
    ("suspendCompany", lambda c: {"companyId": c}),
    ("activateCompany", lambda c: {"companyId": c}),
    ("deleteCompany", lambda c: {"companyId": c}),
    ("createCompany", lambda c: {"type": 1, "name": "Probe", "parentId": c}),
]


@pytest.mark.parametrize("method,params", FOREIGN_CALLS, ids=[m for m, _ in FOREIGN_CALLS])
def test_C6_foreign_ids_answer_exactly_like_missing_ones(rpc, tree, method, params):
    key = tree.keys[tree.north.pk]
    missing = rpc.call("companies", method, params(str(10**9)), key=key)
    for foreign in (tree.pine, tree.south, tree.platform, tree.oak):
        status, body = rpc.call("companies", method, params(str(foreign.pk)), key=key)
        assert (status, body) == missing, (foreign.name, body)
    assert missing[1]["error"] == {"code": -32000, "message": "Server error",
                                   "data": {"details": "Company not found."}}
    # nothing was changed out there
    tree.pine.refresh_from_db()
    assert tree.pine.name == "Pine Dairy" and tree.pine.status == CompanyStatus.ACTIVE
    assert not Company.objects.filter(name="Probe").exists()


def test_C6_a_customer_key_sees_only_itself(rpc, tree):
    key = tree.keys[tree.acme.pk]
    assert rpc.result("companies", "getCompanyDetails", {}, key=key)["id"] == str(tree.acme.pk)
    for other in (tree.north, tree.bolt):
        assert rpc.error("companies", "getCompanyDetails", {"companyId": other.pk}, key=key)["code"] == -32000


def test_C2_C3_reseller_and_no_assist_still_manage_the_company(rpc, tree):
    # C2: a reseller-only partner still manages its companies; C3: assist off keeps suspension
    assert rpc.result("companies", "suspendCompany", {"companyId": tree.oak.pk}, key=tree.keys[tree.rivet.pk]) \
        is None
    assert rpc.result("companies", "updateCompanyDetails", {"companyId": tree.bolt.pk, "enforce2FA": True},
                      key=tree.keys[tree.north.pk]) is None
    tree.bolt.refresh_from_db()
    assert tree.bolt.enforce_two_factor is True


def test_A4_companies_need_the_companies_scope(rpc, tree):
    key = tree.scoped(tree.north, ["licensing", "usage", "reports"])
    for method, params in FOREIGN_CALLS + [("findCompaniesByName", lambda c: {"nameFilter": "Acme*"})]:
        error = rpc.error("companies", method, params(tree.acme.pk), key=key, status=403)
        assert error["code"] == -32000, method
    assert Company.objects.filter(pk=tree.acme.pk, status="active", name="Acme Dental").exists()
