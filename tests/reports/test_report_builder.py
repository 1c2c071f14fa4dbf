"""The Monthly License Usage report's figures and options (R1-R3, R6, R7, U13, C2, C3, C6)."""

import datetime as dt

import pytest
from django.http import Http404

from companies.services import company_set_assist
from licensing.entitlements import entitlements_set
from reports.builder import ENDPOINT_COLUMNS, KINDS, ReportOptions, report_access, report_build
from reports.selectors import DRILL_SQL, report_endpoint_rows
from tests.factories import make_company, make_partner, make_user
from tests.reports.fleet_setup import NOV, admin_of, build_tree
from tests.usage.fleet import Machine, mailbox
from usage.models import CompanyMonthUsage
from usage.rollups import usage_company_rollup
from usage.selectors import NOT_ENABLED, usage_totals

pytestmark = pytest.mark.django_db

R3_HEADERS = ["Path", "Company name", "Company type", "License key", "License Type", "Product Type", "Month",
              "Licensed endpoints", "Endpoint usage", "Patch Management usage", "SVE: VS", "SVE: VDI",
              "Container Protection Usage", "ATS usage", "EDR usage", "MDR Foundations", "Reserved seats",
              "Subscription end date", "Subscription auto-renewal", "Minimum usage"]


@pytest.fixture
def tree(platform):
    return build_tree(platform)


def rows_by_name(report):
    return {row["company_name"]: row for row in report.rows}


def test_R3_columns_in_order_with_exact_headers(tree):
    report = report_build(actor=admin_of(tree.p), company=tree.p, month=NOV)
    assert [header for _, header in report.columns] == R3_HEADERS
    assert [key for key, _ in report.columns] == [key for key, _ in ENDPOINT_COLUMNS]


def test_R3_U13_rows_sum_their_subtree_and_show_not_enabled(tree):
    report = report_build(actor=admin_of(tree.p), company=tree.p, month=NOV)
    rows = rows_by_name(report)
    assert list(rows) == ["Partner P", "Customer A", "Partner Q", "Customer C", "Customer E"]  # tree order, no S/Z
    a = rows["Customer A"]
    # U1/U2/U4/U6/U7/U9 on Customer A's fleet (see fleet_setup)
    assert (a["licensed_endpoints"], a["endpoint_usage"], a["patch_management"], a["ats"], a["edr"],
            a["sve_vs"], a["sve_vdi_hours"], a["container_protection"]) == (11, 7, 1, 2, 2, 1, 2, 1)
    assert a["mdr_foundations"] == NOT_ENABLED
    q = rows["Partner Q"]  # sums Customer C
    assert (q["licensed_endpoints"], q["patch_management"], q["sve_vs"]) == (2, 2, NOT_ENABLED)
    p = rows["Partner P"]
    own = {f: sum(getattr(u, f) for u in CompanyMonthUsage.objects.filter(
        month=NOV, company__lineage__startswith=tree.p.lineage)) for f in ("licensed_endpoints", "endpoint_usage")}
    assert p["licensed_endpoints"] == own["licensed_endpoints"] == 16
    assert p["endpoint_usage"] == own["endpoint_usage"] == 12
    assert p["patch_management"] == 3
    assert p["path"] == "Partner P" and rows["Customer C"]["path"] == "Partner P / Partner Q / Customer C"
    assert a["license_key"] == tree.a.license_key and a["license_type"] == "Monthly"
    assert a["product_type"] == "Endpoint Security" and rows["Customer E"]["product_type"] == "EDR (standalone)"
    assert a["month"] == "2026-11"


def test_R7_report_totals_are_the_usage_figures_and_the_target_row(tree):
    report = report_build(actor=admin_of(tree.p), company=tree.p, month=NOV)
    figures = usage_totals(company=tree.p, month=NOV)["figures"]
    assert report.totals["figures"] == figures
    target = next(iter(report.rows))
    for key in ("licensed_endpoints", "endpoint_usage", "patch_management", "sve_vs", "sve_vdi_hours",
                "container_protection", "ats", "edr", "mdr_foundations"):
        assert target[key] == figures[key], key


def test_R1_only_direct_companies_lists_first_level_children(tree):
    report = report_build(actor=admin_of(tree.p), company=tree.p, month=NOV,
                          options=ReportOptions(only_direct=True))
    rows = rows_by_name(report)
    assert list(rows) == ["Partner P", "Customer A", "Partner Q", "Customer E"]
    assert rows["Partner Q"]["licensed_endpoints"] == 2  # still its subtree's sum (U13)


def test_R1_product_type_edr_shows_zero_for_endpoint_security_companies(tree):
    report = report_build(actor=admin_of(tree.p), company=tree.p, month=NOV,
                          options=ReportOptions(product_type="edr_standalone"))
    rows = rows_by_name(report)
    assert rows["Customer A"]["endpoint_usage"] == 0
    assert rows["Customer E"]["endpoint_usage"] == 2
    assert rows["Partner P"]["endpoint_usage"] == 2  # U11: the partner's row sums its subtree
    assert report.totals["figures"]["endpoint_usage"] == 2
    assert {e["company_name"] for e in report.endpoints()} == {"Customer E"}


def test_R1_only_endpoint_details_has_endpoints_and_no_hierarchy(tree):
    report = report_build(actor=admin_of(tree.p), company=tree.p, month=NOV,
                          options=ReportOptions(only_endpoint_details=True))
    assert list(report.rows) == []
    endpoints = list(report.endpoints())
    assert len(endpoints) == 16
    assert sum(1 for e in endpoints if e["m_patch_management"] == "Yes") == 3


def test_R1_bad_options_name_the_field(tree):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as error:
        report_build(actor=admin_of(tree.p), company=tree.p, month=NOV, kind="fax")
    assert "kind" in error.value.message_dict
    with pytest.raises(ValidationError) as error:
        report_build(actor=admin_of(tree.p), company=tree.p, month=NOV, options=ReportOptions(product_type="x"))
    assert "product_type" in error.value.message_dict


def test_R2_each_number_opens_exactly_the_endpoints_behind_it(tree):
    actor = admin_of(tree.p)
    report = report_build(actor=actor, company=tree.p, month=NOV)
    for row in report.rows:
        company = {c.pk: c for c in (tree.p, tree.a, tree.q, tree.c, tree.e)}[row["company_id"]]
        for column in DRILL_SQL:
            if column is None:
                continue
            behind = list(report_endpoint_rows(scope=report._scope, column=column, company=company))
            expected = row[column]
            if column == "sve_vdi_hours":  # hours: the VDI endpoints behind them, uptime summed (U7)
                seconds = sum(e["uptime_seconds"] for e in behind)
                assert (-(-seconds // 3600) if expected != NOT_ENABLED else 0) == (
                    expected if expected != NOT_ENABLED else 0), (row["company_name"], column)
            else:
                assert len(behind) == (0 if expected == NOT_ENABLED else expected), (row["company_name"], column)


def test_R6_exchange_and_email_security_reports(platform):
    partner = make_partner(parent=platform)
    entitlements_set(actor=None, company=partner, purpose="resell",
                     keys={"endpoint_security", "a_la_carte", "security_for_exchange", "email_security"})
    customer = make_company(parent=partner, name="Mail Customer")
    entitlements_set(actor=None, company=customer, purpose="own",
                     keys={"endpoint_security", "a_la_carte", "security_for_exchange", "email_security"})
    for i in range(3):
        mailbox(customer, NOV, f"ex{i}", product="exchange")
    mailbox(customer, NOV, "u1", sent=2)
    mailbox(customer, NOV, "u2", received=1)
    mailbox(customer, NOV, "shared", object_class="sharedMailbox", sent=5)  # U15: not counted
    mailbox(customer, NOV, "quiet")  # no traffic: not counted
    usage_company_rollup(company_id=customer.pk, months=[NOV])
    actor = admin_of(partner)
    exchange = report_build(actor=actor, company=partner, month=NOV, kind="exchange")
    email = report_build(actor=actor, company=partner, month=NOV, kind="email_security")
    assert [h for _, h in exchange.columns] == ["Path", "Company name", "License key", "Month",
                                                "Protected mailboxes"]
    assert {r["company_name"]: r["protected_mailboxes"] for r in exchange.rows}[customer.name] == 3
    assert {r["company_name"]: r["protected_mailboxes"] for r in email.rows}[customer.name] == 2
    assert email.totals["figures"]["email_security_mailboxes"] == 2
    assert list(exchange.endpoints()) == [] and exchange.title.startswith("Security for Exchange")
    assert set(KINDS) == {"endpoint", "exchange", "email_security"}


def test_C3_partner_without_assist_gets_figures_but_no_endpoints(tree):
    actor = admin_of(tree.p)
    company_set_assist(actor=make_user(company=tree.a), company=tree.a, on=False)
    tree.a.refresh_from_db()
    report = report_build(actor=actor, company=tree.p, month=NOV)
    rows = rows_by_name(report)
    assert rows["Customer A"]["licensed_endpoints"] == 11  # company-level figures stay
    assert rows["Customer A"]["drill"] is False and rows["Customer C"]["drill"] is True
    names = {e["company_name"] for e in report.endpoints()}
    assert "Customer A" not in names and "Customer C" in names
    own = report_build(actor=actor, company=tree.a, month=NOV)
    assert own.can_drill_down is False and list(own.endpoints()) == []


def test_C2_reseller_only_partner_sees_reports_without_endpoints(platform):
    reseller = make_partner(parent=platform, manages_security=False)
    entitlements_set(actor=None, company=reseller, purpose="resell", keys={"endpoint_security", "a_la_carte"})
    customer = make_company(parent=reseller)
    entitlements_set(actor=None, company=customer, purpose="own", keys={"endpoint_security", "a_la_carte"})
    Machine(customer).beat(dt.datetime(2026, 11, 3, tzinfo=dt.UTC))
    usage_company_rollup(company_id=customer.pk, months=[NOV])
    report = report_build(actor=admin_of(reseller), company=reseller, month=NOV)
    assert next(iter(report.rows))["licensed_endpoints"] == 1
    assert report.can_drill_down is False
    assert list(report.endpoints()) == []
    assert all(row["drill"] is False for row in report.rows)


def test_C6_report_access_is_404_outside_the_subtree(tree):
    actor = admin_of(tree.p)
    assert report_access(actor, tree.c.pk) == tree.c
    for foreign in (tree.z.pk, tree.s.pk, tree.platform.pk, 999_999, "x"):
        with pytest.raises(Http404):
            report_access(actor, foreign)
    report = report_build(actor=actor, company=tree.p, month=NOV)
    assert "Customer Z" not in {r["company_name"] for r in report.rows}
    assert "Customer Z" not in {e["company_name"] for e in report.endpoints()}
