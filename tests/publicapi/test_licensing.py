"""licensing.*: subscriptions through the licensing services (L1, L3, L6, S1-S3, E1-E3) and the
monthly usage figures (R7, U1-U13), equal to the selector's and to the report's CSV row."""

import csv
import datetime as dt
import io

import pytest

from licensing.entitlements import entitlements_set
from licensing.models import License
from licensing.seats import reservation_set
from licensing.services import license_update
from reports.builder import report_build
from reports.render import report_csv_iter
from tests.usage.fleet import Machine, mailbox
from usage.rollups import usage_company_rollup
from usage.selectors import NOT_ENABLED, usage_totals

pytestmark = pytest.mark.django_db
NOV = dt.date(2026, 11, 1)
DAY = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)
RESELL = {"endpoint_security", "edr_standalone", "a_la_carte", "patch_management", "full_disk_encryption",
          "advanced_threat_security", "edr", "sve", "container_protection", "integrity_monitoring",
          "email_security"}


@pytest.fixture
def fleet(tree):
    """Northwind resells; Acme runs Endpoint Security with add-ons, Kite Bakery plain Endpoint
    Security, Kite Sub is EDR-only; Pine (another partner's) has usage that must never leak."""
    entitlements_set(actor=None, company=tree.north, purpose="resell", keys=RESELL)
    entitlements_set(actor=None, company=tree.kite_sub, purpose="resell", keys={"endpoint_security", "a_la_carte",
                                                                               "edr_standalone"})
    entitlements_set(actor=None, company=tree.acme, purpose="own", keys={
        "endpoint_security", "a_la_carte", "patch_management", "full_disk_encryption", "advanced_threat_security",
        "edr", "sve", "container_protection", "email_security"})
    entitlements_set(actor=None, company=tree.kite_bakery, purpose="own", keys={"endpoint_security", "a_la_carte"})
    entitlements_set(actor=None, company=tree.kite_sub, purpose="own", keys={"edr_standalone"})
    entitlements_set(actor=None, company=tree.south, purpose="resell", keys={"endpoint_security", "a_la_carte"})
    entitlements_set(actor=None, company=tree.pine, purpose="own", keys={"endpoint_security", "a_la_carte"})
    for _ in range(3):
        Machine(tree.acme).beat(DAY, modules=["antimalware", "patch_management", "hyperdetect"])
    Machine(tree.acme).beat(DAY, modules=["antimalware", "full_disk_encryption", "edr", "sandbox_analyzer"])
    Machine(tree.acme, machine_type="virtual", os_type="server").beat(DAY, scan="central")
    Machine(tree.acme, machine_type="virtual").beat(DAY, scan="central", uptime=3900)
    Machine(tree.acme, os_type="server").beat(DAY, modules=["antimalware", "container_protection"])
    mailbox(tree.acme, NOV, "a@acme", sent=3)
    mailbox(tree.acme, NOV, "b@acme", object_class="group", sent=3)
    for _ in range(2):
        Machine(tree.kite_bakery).beat(DAY)
    Machine(tree.kite_sub).beat(DAY, modules=["antimalware", "edr"])
    for _ in range(5):
        Machine(tree.pine).beat(DAY, modules=["antimalware", "patch_management"])
    for company in (tree.acme, tree.kite_bakery, tree.kite_sub, tree.pine):
        usage_company_rollup(company_id=company.pk, months=[NOV])
    return tree


def test_R7_monthly_usage_fields_of_the_original(rpc, fleet):
    usage = rpc.result("licensing", "getMonthlyUsage", {"companyId": str(fleet.acme.pk), "targetMonth": "11/2026"},
                       key=fleet.keys[fleet.north.pk])
    # U2: 4 + 1 physical workstations with antimalware... minus the SVE and container hosts
    assert usage["endpointMonthlyUsage"] == 4
    assert usage["patchManagementMonthlyUsage"] == 3  # U3
    assert usage["atsMonthlyUsage"] == 4  # U4: hyperdetect or sandbox, once
    assert usage["encryptionMonthlyUsage"] == 1 and usage["edrMonthlyUsage"] == 1
    assert usage["sveVsMonthlyUsage"] == 1 and usage["sveVdiMonthlyUsage"] == 2  # U6, U7 (3,900 s -> 2 h)
    assert usage["containerProtectionMonthlyUsage"] == 1  # U9
    assert usage["emailSecurityMonthlyUsage"] == 1  # U15: the group mailbox is not billed
    assert usage["licensedEndpoints"] == 7
    # U13: not enabled for Acme -> 0 over JSON, named in notEnabled
    assert usage["integrityMonitoringUsage"] == 0 and "integrityMonitoringUsage" in usage["notEnabled"]
    assert usage["mdrFoundationsMonthlyUsage"] == 0 and "mdrFoundationsMonthlyUsage" in usage["notEnabled"]
    assert "edrMonthlyUsage" not in usage["notEnabled"]
    assert usage["minimumUsage"] == {"endpointMonthlyUsage": 0}
    for value in usage.values():
        assert isinstance(value, int | list | dict)


def test_R7_monthly_usage_equals_the_selector_for_every_company(rpc, fleet):
    key = fleet.keys[fleet.north.pk]
    from publicapi.fields import MONTHLY_USAGE_FIELDS

    for company in (fleet.north, fleet.acme, fleet.kite_sub, fleet.kite_bakery, fleet.bolt):
        usage = rpc.result("licensing", "getMonthlyUsage", {"companyId": company.pk, "targetMonth": "11/2026"},
                           key=key)
        figures = usage_totals(company=company, month=NOV)["figures"]
        for name, figure in MONTHLY_USAGE_FIELDS.items():
            expected = 0 if figures[figure] == NOT_ENABLED else figures[figure]
            assert usage[name] == expected, (company.name, name)
    # U13: the partner's row sums its subtree, and never another partner's companies
    north = rpc.result("licensing", "getMonthlyUsage", {"targetMonth": "11/2026"}, key=key)
    assert north["endpointMonthlyUsage"] == 4 + 2 + 1
    assert north["patchManagementMonthlyUsage"] == 3  # Pine's 5 are not Northwind's


def test_R7_monthly_usage_equals_the_report_csv_row(rpc, fleet):
    """The figures of getMonthlyUsage equal the Monthly License Usage report's CSV row for the same
    company and month (the report is rendered by reports.render, as the console exports it)."""
    admin = fleet.admins[fleet.north.pk]
    columns = {"Licensed endpoints": "licensedEndpoints", "Endpoint usage": "endpointMonthlyUsage",
               "Patch Management usage": "patchManagementMonthlyUsage", "SVE: VS": "sveVsMonthlyUsage",
               "SVE: VDI": "sveVdiMonthlyUsage", "Container Protection Usage": "containerProtectionMonthlyUsage",
               "ATS usage": "atsMonthlyUsage", "EDR usage": "edrMonthlyUsage",
               "MDR Foundations": "mdrFoundationsMonthlyUsage"}
    compared = 0
    for company in (fleet.north, fleet.acme, fleet.kite_sub):
        report = report_build(actor=admin, company=company, month=NOV)
        lines = list(csv.reader(io.StringIO("".join(report_csv_iter(report)))))
        header = lines[0]
        row = next(dict(zip(header, line, strict=False)) for line in lines[1:]
                   if len(line) == len(header) and line[header.index("Company name")] == company.name)
        usage = rpc.result("licensing", "getMonthlyUsage", {"companyId": company.pk, "targetMonth": "11/2026"},
                           key=fleet.keys[fleet.north.pk])
        for column, field in columns.items():
            cell = row[column]
            if cell == NOT_ENABLED:
                assert usage[field] == 0 and field in usage["notEnabled"], (company.name, column)
            else:
                assert int(cell) == usage[field], (company.name, column, cell, usage[field])
                compared += 1
    assert compared >= 15  # most cells are numbers, not "Not enabled"


def test_U11_monthly_usage_per_product_type(rpc, fleet):
    result = rpc.result("licensing", "getMonthlyUsagePerProductType", {"targetMonth": "11/2026"},
                        key=fleet.keys[fleet.north.pk])
    by_type = {u["productType"]: u for u in result["usages"]}
    assert set(by_type) == {0, 1}
    assert by_type[0]["endpointMonthlyUsage"] == 4 + 2  # Endpoint Security companies only
    assert by_type[1]["endpointMonthlyUsage"] == 1  # Kite Sub, EDR-only
    assert by_type[0]["endpointMonthlyUsage"] == usage_totals(company=fleet.north, month=NOV,
                                                              product_type="endpoint_security")["figures"][
        "endpoint_usage"]


@pytest.mark.parametrize("month", ["2026-11", "13/2026", "1/2026", "11/26", "xx/yyyy", 112026])
def test_X2_target_month_must_be_mm_yyyy(rpc, fleet, month):
    for method in ("getMonthlyUsage", "getMonthlyUsagePerProductType"):
        error = rpc.error("licensing", method, {"targetMonth": month}, key=fleet.keys[fleet.north.pk])
        assert error["code"] == -32602 and "'targetMonth'" in error["data"]["details"]


def test_X2_target_month_not_started_yet_is_refused(rpc, fleet):
    for method in ("getMonthlyUsage", "getMonthlyUsagePerProductType"):
        error = rpc.error("licensing", method, {"targetMonth": "01/2099"}, key=fleet.keys[fleet.north.pk])
        assert error["code"] == -32602 and "'targetMonth'" in error["data"]["details"]
        assert "has not started yet" in error["data"]["details"]


def test_C6_usage_of_foreign_companies_is_not_found_and_leaks_nothing(rpc, fleet):
    key = fleet.keys[fleet.north.pk]
    for method in ("getMonthlyUsage", "getMonthlyUsagePerProductType", "getLicenseInfo"):
        missing = rpc.call("licensing", method, {"companyId": 10**9}, key=key)
        assert missing[1]["error"]["data"]["details"] == "Company not found."
        for foreign in (fleet.pine, fleet.south, fleet.platform):
            status, body = rpc.call("licensing", method, {"companyId": foreign.pk}, key=key)
            assert (status, body) == missing, (method, foreign.name)
    # a customer sees its own figures only
    acme_key = fleet.keys[fleet.acme.pk]
    assert rpc.result("licensing", "getMonthlyUsage", {"targetMonth": "11/2026"}, key=acme_key)[
        "endpointMonthlyUsage"] == 4
    assert rpc.call("licensing", "getMonthlyUsage", {"companyId": fleet.north.pk}, key=acme_key)[1]["error"][
        "code"] == -32000


def test_C2_C3_usage_and_license_stay_visible_without_network(rpc, fleet):
    # C3: Bolt has assist off, its company-level figures stay visible to its partner
    assert "endpointMonthlyUsage" in rpc.result("licensing", "getMonthlyUsage", {"companyId": fleet.bolt.pk},
                                                key=fleet.keys[fleet.north.pk])
    # C2: a reseller-only partner reads its customer's license
    info = rpc.result("licensing", "getLicenseInfo", {"companyId": fleet.oak.pk}, key=fleet.keys[fleet.rivet.pk])
    assert info["licenseKey"] == fleet.oak.license_key


def test_A4_usage_methods_take_the_usage_or_licensing_scope(rpc, fleet):
    usage_key = fleet.scoped(fleet.north, ["usage"])
    assert rpc.result("licensing", "getMonthlyUsage", {"targetMonth": "11/2026"}, key=usage_key)[
        "endpointMonthlyUsage"] == 7
    # the usage scope opens the figures, not the subscriptions
    assert rpc.error("licensing", "getLicenseInfo", {}, key=usage_key, status=403)["code"] == -32000
    assert rpc.error("licensing", "setMonthlySubscription", {"companyId": fleet.acme.pk, "reservedSlots": 1},
                     key=usage_key, status=403)["code"] == -32000
    other = fleet.scoped(fleet.north, ["companies", "reports"])
    for method in ("getMonthlyUsage", "getMonthlyUsagePerProductType", "getLicenseInfo"):
        assert rpc.error("licensing", method, {}, key=other, status=403)["code"] == -32000


def test_L1_S1_license_info(rpc, fleet):
    reservation_set(actor=None, company=fleet.acme, seats=20)
    info = rpc.result("licensing", "getLicenseInfo", {"companyId": str(fleet.acme.pk)},
                      key=fleet.keys[fleet.north.pk])
    assert info["subscriptionType"] == 3 and info["isAddon"] is False
    assert info["reservedSlots"] == 20 and info["totalSlots"] == 20 and info["usedSlots"] == 7
    assert info["licenseKey"] == fleet.acme.license_key
    assert info["managePatchManagement"] is True and info["manageIntegrityMonitoring"] is False
    assert info["ownUse"]["productType"] == 0 and info["ownUse"]["protectionModel"] == "aLaCarte"
    assert "patchManagement" in info["ownUse"]["addons"]
    partner = rpc.result("licensing", "getLicenseInfo", {}, key=fleet.keys[fleet.north.pk])
    assert partner["resell"]["productTypes"] == [0, 1]
    # C6: Acme's own pool is named; Northwind's pool belongs to the platform above it and is not
    assert info["poolOwnerId"] == str(fleet.acme.pk)
    assert partner["poolOwnerId"] is None

    # C6: the seats still free in the parent's pool are the parent's to see
    reservation_set(actor=None, company=fleet.north, seats=50)
    seen_by_north = rpc.result("licensing", "getLicenseInfo", {"companyId": str(fleet.acme.pk)},
                               key=fleet.keys[fleet.north.pk])
    assert seen_by_north["availableToReserve"] == 47  # 50, less the 3 seats Kite Sub and Kite Bakery hold
    own = rpc.result("licensing", "getLicenseInfo", {}, key=fleet.keys[fleet.acme.pk])
    assert own["availableToReserve"] is None


def test_L1_L6_S3_set_monthly_subscription(rpc, fleet):
    key = fleet.keys[fleet.north.pk]
    assert rpc.result("licensing", "setMonthlySubscription", {
        "companyId": str(fleet.acme.pk), "reservedSlots": 25, "endSubscription": "2031-06-30",
        "autoRenewPeriod": 6, "minimumUsage": 10}, key=key) is None
    lic = License.objects.get(company=fleet.acme)
    assert (lic.reserved_seats, str(lic.end_date), lic.auto_renew, lic.renew_months, lic.minimum_usage) == (
        25, "2031-06-30", True, 6, 10)
    assert rpc.result("licensing", "setMonthlySubscription", {
        "companyId": fleet.acme.pk, "removeReservedSlots": True, "minimumUsage": None, "autoRenewPeriod": 0},
        key=key) is None
    lic.refresh_from_db()
    assert (lic.reserved_seats, lic.minimum_usage, lic.auto_renew) == (None, None, False)
    assert str(lic.end_date) == "2031-06-30"  # what is not sent stays as it is


def test_E1_E3_set_monthly_subscription_own_use(rpc, fleet):
    key = fleet.keys[fleet.north.pk]
    rpc.result("licensing", "setMonthlySubscription", {
        "companyId": fleet.bolt.pk, "ownUse": {"productType": 0, "protectionModel": "aLaCarte",
                                               "addons": {"integrityMonitoring": True, "edr": False}}}, key=key)
    info = rpc.result("licensing", "getLicenseInfo", {"companyId": fleet.bolt.pk}, key=key)
    assert info["manageIntegrityMonitoring"] is True and info["manageEventCorrelator"] is False
    # E3: Northwind does not resell XDR
    error = rpc.error("licensing", "setMonthlySubscription", {
        "companyId": fleet.bolt.pk, "ownUse": {"productType": 0, "addons": ["xdr"]}}, key=key)
    assert error["code"] == -32602 and "'ownUse'" in error["data"]["details"]


@pytest.mark.parametrize("params,named", [
    ({"reservedSlots": -1}, "reservedSlots"),
    ({"reservedSlots": "ten"}, "reservedSlots"),
    ({"reservedSlots": 10**6}, "reservedSlots"),  # L3: more than the pool has (the platform has 100)
    ({"minimumUsage": 5}, "minimumUsage"),  # L6: needs a reservation
    ({"endSubscription": "31/12/2030"}, "endSubscription"),
    ({"autoRenewPeriod": 500}, "autoRenewPeriod"),
    ({"autoRenewPeriod": 6}, "autoRenewPeriod"),  # auto-renewal needs an end date
    ({"type": 2}, "type"),
    ({"ownUse": {"productType": 0, "addons": ["warpDrive"]}}, "ownUse.addons"),
    ({"reservedSlots": 3, "removeReservedSlots": True}, "removeReservedSlots"),
    ({"colour": "red"}, "colour"),
])
def test_X2_set_monthly_subscription_bad_input_names_the_parameter(rpc, fleet, params, named):
    from licensing.seats import platform_seats_set

    platform_seats_set(actor=None, seats=100)
    before = list(License.objects.filter(company=fleet.acme).values())
    error = rpc.error("licensing", "setMonthlySubscription", {"companyId": fleet.acme.pk, **params},
                      key=fleet.keys[fleet.north.pk])
    assert error["code"] == -32602, error
    assert f"'{named}'" in error["data"]["details"], error
    assert list(License.objects.filter(company=fleet.acme).values()) == before


def test_C6_set_monthly_subscription_of_foreign_or_own_company_is_not_found(rpc, fleet):
    key = fleet.keys[fleet.north.pk]
    missing = rpc.call("licensing", "setMonthlySubscription", {"companyId": 10**9, "reservedSlots": 1}, key=key)
    assert missing[1]["error"]["code"] == -32000
    for foreign in (fleet.pine, fleet.south, fleet.north):
        assert rpc.call("licensing", "setMonthlySubscription", {"companyId": foreign.pk, "reservedSlots": 1},
                        key=key) == missing
    assert License.objects.filter(company=fleet.pine, reserved_seats=1).count() == 0
    error = rpc.error("licensing", "setMonthlySubscription", {"reservedSlots": 1}, key=key)
    assert error["code"] == -32602 and "'companyId'" in error["data"]["details"]


# --- U12 late adjustments and L6 minimum usage, as the report and the Usage pages show them --------------

OCT = dt.date(2026, 10, 1)
IN_OCT = dt.datetime(2026, 10, 12, tzinfo=dt.UTC)


def _report_row(admin, company, month, row_of) -> dict:
    """`row_of`'s row in the CSV of `company`'s Monthly License Usage report, as the console exports it."""
    lines = list(csv.reader(io.StringIO("".join(report_csv_iter(report_build(actor=admin, company=company,
                                                                            month=month))))))
    return next(dict(zip(lines[0], line, strict=True)) for line in lines[1:]
                if len(line) == len(lines[0]) and line[1] == row_of.name)


def test_U12_R7_late_adjustments_show_with_the_next_month_as_in_the_report_and_usage_page(rpc, fleet):
    """October is finalized; two of Acme's October endpoints report after the close. October stays as
    billed, and the November figures carry the change as late adjustments to October, as the November
    report and Usage page do."""
    from publicapi.fields import FIGURE_NAMES
    from reports.render import report_late_adjustments
    from usage.month_selectors import usage_month_detail
    from usage.rollups import usage_month_close

    key = fleet.keys[fleet.north.pk]
    Machine(fleet.acme, now=IN_OCT).beat(IN_OCT)
    usage_month_close(month=OCT)
    for _ in range(2):
        Machine(fleet.acme, now=IN_OCT).beat(IN_OCT)  # late: October is closed
    usage_company_rollup(company_id=fleet.acme.pk)

    october = rpc.result("licensing", "getMonthlyUsage", {"companyId": fleet.acme.pk, "targetMonth": "10/2026"},
                         key=key)
    assert october["endpointMonthlyUsage"] == 1 and october["licensedEndpoints"] == 1  # frozen at the close
    assert october["lateAdjustments"] == {}
    november = rpc.result("licensing", "getMonthlyUsage", {"companyId": fleet.acme.pk, "targetMonth": "11/2026"},
                          key=key)
    assert november["lateAdjustments"] == {"activeEndpoints": 2, "licensedEndpoints": 2, "endpointMonthlyUsage": 2}
    assert november["endpointMonthlyUsage"] == 4  # November's own figures do not change

    detail = usage_month_detail(company=fleet.acme, month=NOV)  # the Usage page and REST API
    assert detail["late_adjustments"]["month"] == OCT
    assert {FIGURE_NAMES[k]: v for k, v in detail["late_adjustments"]["figures"].items()} == \
        november["lateAdjustments"]
    late_months, late = report_late_adjustments(report_build(actor=fleet.admins[fleet.north.pk], company=fleet.acme,
                                                            month=NOV))
    assert late_months == [OCT] and dict(late) == {"Licensed endpoints": 2, "Endpoint usage": 2}
    # the partner's figures carry its subtree's adjustments, as its report does (U13)
    partner = rpc.result("licensing", "getMonthlyUsage", {"targetMonth": "11/2026"}, key=key)
    assert partner["lateAdjustments"] == november["lateAdjustments"]
    assert rpc.result("licensing", "getMonthlyUsage", {"targetMonth": "11/2026"},
                      key=fleet.keys[fleet.south.pk])["lateAdjustments"] == {}  # C6: not Southgate's


def test_L6_minimum_usage_is_the_months_minimum_as_in_the_report_and_usage_page(rpc, fleet):
    from usage.month_selectors import usage_month_detail

    license_update(actor=None, company=fleet.acme, reserved_seats=10, minimum_usage=5)
    usage_company_rollup(company_id=fleet.acme.pk, months=[NOV])  # the hourly refresh of the open month
    usage = rpc.result("licensing", "getMonthlyUsage", {"companyId": fleet.acme.pk, "targetMonth": "11/2026"},
                       key=fleet.keys[fleet.north.pk])
    assert usage["minimumUsage"] == {"endpointMonthlyUsage": 5}
    assert usage_month_detail(company=fleet.acme, month=NOV)["minimum_usage"] == 5
    assert _report_row(fleet.admins[fleet.north.pk], fleet.north, NOV, fleet.acme)["Minimum usage"] == "5"
    # a partner's minimum is its own, never its subtree's (the report's partner row does not sum it)
    assert rpc.result("licensing", "getMonthlyUsage", {"targetMonth": "11/2026"},
                      key=fleet.keys[fleet.north.pk])["minimumUsage"] == {"endpointMonthlyUsage": 0}


def test_L6_a_month_without_a_usage_row_has_no_minimum_in_the_api_report_and_usage_page(rpc, fleet):
    """Bolt has a minimum now and no usage row for October, as a company created after October's
    close has none: nothing bills it a minimum for October, so none of the three shows one (before,
    the report showed today's licence minimum)."""
    from usage.month_selectors import usage_month_detail

    license_update(actor=None, company=fleet.bolt, reserved_seats=10, minimum_usage=5)
    usage = rpc.result("licensing", "getMonthlyUsage", {"companyId": fleet.bolt.pk, "targetMonth": "10/2026"},
                       key=fleet.keys[fleet.north.pk])
    assert usage["minimumUsage"] == {"endpointMonthlyUsage": 0}
    detail = usage_month_detail(company=fleet.bolt, month=OCT)
    assert detail["minimum_usage"] is None and detail["billed_endpoint_usage"] == 0
    assert _report_row(fleet.admins[fleet.north.pk], fleet.north, OCT, fleet.bolt)["Minimum usage"] == ""
