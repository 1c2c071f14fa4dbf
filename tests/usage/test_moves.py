"""H5: usage already recorded stays with the months it belongs to when a company changes partner.
A finalized month keeps the place in the tree it was frozen with, in every reader (totals, the
partner's children, history, the report's rows and endpoints, the PSA counts); the open month
follows the company to its new partner."""

import datetime as dt

import pytest

from companies.services import company_move
from integrations.selectors import active_endpoint_counts
from reports.builder import report_build
from tests.factories import make_company, make_partner, make_user
from tests.usage.fleet import Machine
from usage.models import LateAdjustment
from usage.month_selectors import usage_children, usage_history
from usage.rollups import usage_company_rollup, usage_month_close
from usage.selectors import usage_totals

pytestmark = pytest.mark.django_db

OCT, NOV = dt.date(2026, 10, 1), dt.date(2026, 11, 1)


def at(month: dt.date, day: int) -> dt.datetime:
    return dt.datetime(month.year, month.month, day, 12, tzinfo=dt.UTC)


def usage_of(company, month):
    return usage_totals(company=company, month=month)["figures"]["endpoint_usage"]


@pytest.fixture
def moved(platform):
    """North bills Acme (3 endpoints) and Stay (1) in October, which is closed; Acme moves to South
    in November (Acme keeps its 3 endpoints, Stay its 1)."""
    north, south = make_partner(parent=platform, name="North"), make_partner(parent=platform, name="South")
    acme, stay = make_company(parent=north, name="Acme"), make_company(parent=north, name="Stay")
    for company, endpoints in ((acme, 3), (stay, 1)):
        for _ in range(endpoints):
            Machine(company, now=at(OCT, 1)).beat(at(OCT, 10)).beat(at(NOV, 10))
        usage_company_rollup(company_id=company.pk, months=[OCT, NOV])
    usage_month_close(month=OCT)
    assert (usage_of(north, OCT), usage_of(south, OCT), usage_of(north, NOV)) == (4, 0, 4)
    company_move(actor=None, company=acme, new_parent=south)
    return north, south, acme, stay


def test_H5_U12_a_finalized_month_stays_with_the_partner_that_had_the_company(moved):
    north, south, acme, stay = moved
    assert (usage_of(north, OCT), usage_of(south, OCT)) == (4, 0)  # as billed
    assert usage_of(acme, OCT) == 3  # the company's own month is its own wherever it is now
    # the open month follows the company at once, and again after a rollup
    assert (usage_of(north, NOV), usage_of(south, NOV)) == (1, 3)
    usage_company_rollup(company_id=acme.pk, months=[NOV])
    assert (usage_of(north, NOV), usage_of(south, NOV)) == (1, 3)
    assert [(h["month"], h["endpoint_usage"]) for h in usage_history(company=north, subtree=True)] == \
        [(NOV, 1), (OCT, 4)]
    assert [(h["month"], h["endpoint_usage"]) for h in usage_history(company=south, subtree=True)] == \
        [(NOV, 3), (OCT, 0)]


def test_H5_U13_children_and_psa_counts_follow_the_months_place_in_the_tree(moved):
    north, south, acme, stay = moved
    assert [(c["name"], c["endpoint_usage"]) for c in usage_children(company=north, month=OCT)] == [("Stay", 1)]
    assert [(c["name"], c["endpoint_usage"]) for c in usage_children(company=south, month=OCT)] == [("Acme", 0)]
    assert [(c["name"], c["endpoint_usage"]) for c in usage_children(company=south, month=NOV)] == [("Acme", 3)]
    # B3: South pushes Acme's November, not the October North billed
    assert active_endpoint_counts(company_ids=[acme.pk], month=OCT) == {acme.pk: 0}
    assert active_endpoint_counts(company_ids=[acme.pk], month=NOV) == {acme.pk: 3}


def test_H5_R3_reports_of_a_closed_month_keep_their_totals_after_a_move(moved):
    north, south, acme, stay = moved
    north_october = report_build(actor=make_user(company=north), company=north, month=OCT)
    assert north_october.totals["figures"]["endpoint_usage"] == 4
    rows = {row["company_name"]: row["endpoint_usage"] for row in north_october.rows}
    assert rows == {"North": 4, "Stay": 1}  # Acme is no longer North's to list (C6)
    assert [e["company_name"] for e in north_october.endpoints()] == ["Stay"]
    south_october = report_build(actor=make_user(company=south), company=south, month=OCT)
    assert south_october.totals["figures"]["endpoint_usage"] == 0
    assert {row["company_name"]: row["endpoint_usage"] for row in south_october.rows} == {"South": 0, "Acme": 0}
    assert list(south_october.endpoints()) == []
    south_november = report_build(actor=make_user(company=south), company=south, month=NOV)
    assert {row["company_name"]: row["endpoint_usage"] for row in south_november.rows} == {"South": 3, "Acme": 3}


def test_H5_U12_late_data_after_a_move_is_the_old_partners_adjustment(moved):
    north, south, acme, stay = moved
    Machine(acme, now=at(OCT, 1)).beat(at(OCT, 20))
    usage_company_rollup(company_id=acme.pk)
    adjustment = LateAdjustment.objects.get(company=acme)
    assert adjustment.month == OCT and f"/{north.pk}/" in adjustment.lineage
    reported = adjustment.reported_in
    assert usage_totals(company=north, month=reported)["late_adjustments"]["endpoint_usage"] == 1
    assert usage_totals(company=south, month=reported)["late_adjustments"] == {}


def test_H5_R1_the_mixed_products_notice_of_a_closed_month_stays_after_a_move(platform):
    from freezegun import freeze_time

    from licensing.entitlements import entitlements_set
    from reports.render import report_mixed_products

    with freeze_time("2026-09-20"):  # the product types are in force in October
        north, south = make_partner(parent=platform), make_partner(parent=platform)
        for partner in (north, south):
            entitlements_set(actor=None, company=partner, purpose="resell",
                             keys={"endpoint_security", "a_la_carte", "edr_standalone"})
        edr, classic = make_company(parent=north), make_company(parent=north)
        entitlements_set(actor=None, company=edr, purpose="own", keys={"edr_standalone"})
        entitlements_set(actor=None, company=classic, purpose="own", keys={"endpoint_security", "a_la_carte"})
    for company in (edr, classic):
        Machine(company, now=at(OCT, 1)).beat(at(OCT, 10))
    usage_month_close(month=OCT)
    user = make_user(company=north)
    assert len(report_mixed_products(report_build(actor=user, company=north, month=OCT))) == 2
    company_move(actor=None, company=edr, new_parent=south)
    assert len(report_mixed_products(report_build(actor=user, company=north, month=OCT))) == 2


@pytest.mark.django_db(transaction=True)
def test_H5_a_move_waits_for_a_running_rollup_of_the_moved_companies(platform):
    """A rollup that read the company's old place must finish before the move updates the open
    rows, or it would store the old place over the new one."""
    from tests.licensing.test_seat_concurrency import _during
    from usage.rollups import rollup_locks_take

    north, south = make_partner(parent=platform), make_partner(parent=platform)
    acme = make_company(parent=north)
    Machine(acme, now=at(NOV, 1)).beat(at(NOV, 10))
    usage_company_rollup(company_id=acme.pk, months=[NOV])
    waited, _ = _during(lambda: rollup_locks_take([acme.pk]),
                        lambda: company_move(actor=None, company=acme, new_parent=south))
    assert waited, "the move never waited for the rollup's lock"
    assert (usage_of(north, NOV), usage_of(south, NOV)) == (0, 1)


def test_H5_U12_an_ended_month_not_closed_yet_stays_with_the_partner_it_ended_with(platform):
    """A move between a month's end and its close: the month ended as the old partner's, so it stays
    there through the close (its PSA addition is the old partner's too)."""
    north, south = make_partner(parent=platform), make_partner(parent=platform)
    acme = make_company(parent=north)
    Machine(acme, now=at(OCT, 1)).beat(at(OCT, 10))
    usage_company_rollup(company_id=acme.pk, months=[OCT])
    company_move(actor=None, company=acme, new_parent=south)
    assert (usage_of(north, OCT), usage_of(south, OCT)) == (1, 0)
    Machine(acme, now=at(OCT, 1)).beat(at(OCT, 20))  # more of October, rolled up after the move
    usage_month_close(month=OCT)
    assert (usage_of(north, OCT), usage_of(south, OCT)) == (2, 0)


def _reseller_whose_customer_moved_up(north):
    """North's reseller C billed Gone (2 endpoints) and Kept (1) in October, which is closed; then Gone
    moved up to North itself. Returns C."""
    reseller = make_partner(parent=north, name="C")
    gone, kept = make_company(parent=reseller, name="Gone"), make_company(parent=reseller, name="Kept")
    for company, endpoints in ((gone, 2), (kept, 1)):
        for _ in range(endpoints):
            Machine(company, now=at(OCT, 1)).beat(at(OCT, 10))
        usage_company_rollup(company_id=company.pk, months=[OCT])
    usage_company_rollup(company_id=reseller.pk, months=[OCT])
    usage_month_close(month=OCT)
    company_move(actor=None, company=gone, new_parent=north)
    return reseller


def test_C6_H5_a_new_partner_cannot_work_out_a_company_that_left_the_moved_subtree(platform, client):
    """C was North's reseller with customers Gone (2 endpoints) and Kept (1) in October. Gone moves up to
    North, then C moves to South. South reads C's October only as far as the companies below C now:
    else C's total minus its listed rows would be Gone's figure, a company never South's (C6). C's own
    users still read October as C billed it."""
    import base64
    import json

    from companies.services import api_key_create

    north, south = make_partner(parent=platform, name="North"), make_partner(parent=platform, name="South")
    reseller = _reseller_whose_customer_moved_up(north)
    company_move(actor=None, company=reseller, new_parent=south)
    reseller.refresh_from_db()

    south_admin = make_user(company=south)
    client.force_login(south_admin)
    rest = client.get(f"/api/v1/companies/{reseller.pk}/usage/2026-10").json()
    assert rest["figures"]["endpoint_usage"] == 1
    page = client.get(f"/usage/{reseller.pk}/", {"month": "2026-10"})
    assert page.context["detail"]["figures"]["endpoint_usage"] == 1
    assert [(c["name"], c["endpoint_usage"]) for c in page.context["children"]] == [("Kept", 1)]
    assert [row["endpoint_usage"] for row in page.context["history"] if row["month"] == OCT] == [1]
    report = report_build(actor=south_admin, company=reseller, month=OCT)
    assert report.totals["figures"]["endpoint_usage"] == 1
    secret = api_key_create(actor=south_admin, company=south, name="script", scopes=["usage"])[1]
    rpc = client.post("/api/v1.0/jsonrpc/licensing", data=json.dumps(
        {"id": "1", "jsonrpc": "2.0", "method": "getMonthlyUsage",
         "params": {"companyId": str(reseller.pk), "targetMonth": "10/2026"}}), content_type="application/json",
        HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{secret}:".encode()).decode())
    assert rpc.json()["result"]["endpointMonthlyUsage"] == 1

    rows = {row["company_name"]: row["endpoint_usage"] for row in report.rows}
    assert rows == {"C": 1, "Kept": 1}  # the report's rows too, not only its total

    client.force_login(make_user(company=reseller))  # C's own users: October as C billed it
    assert client.get(f"/api/v1/companies/{reseller.pk}/usage/2026-10").json()["figures"]["endpoint_usage"] == 3


def test_C6_H5_a_partner_that_billed_the_month_reads_it_as_billed_after_a_move_inside_it(platform, client):
    """North billed reseller C (Gone 2 + Kept 1) for October; Gone then moved up to North itself. North
    was above all of it in October: C's page, REST, report and PSA count all read 3."""
    from usage.month_selectors import usage_children

    north = make_partner(parent=platform, name="North")
    reseller = _reseller_whose_customer_moved_up(north)
    reseller.refresh_from_db()
    admin = make_user(company=north)
    children = {c["name"]: c["endpoint_usage"] for c in usage_children(company=north, month=OCT, viewer=north)}
    psa = active_endpoint_counts(company_ids=[reseller.pk], month=OCT)[reseller.pk]
    client.force_login(admin)
    rest = client.get(f"/api/v1/companies/{reseller.pk}/usage/2026-10").json()["figures"]["endpoint_usage"]
    report = report_build(actor=admin, company=reseller, month=OCT)
    assert rest == children["C"] == psa == report.totals["figures"]["endpoint_usage"] == 3
    assert {r["company_name"]: r["endpoint_usage"] for r in report.rows}["C"] == 3
