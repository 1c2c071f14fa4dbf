import datetime as dt

import pytest

from licensing.entitlements import entitlements_set
from tests.factories import make_company, make_partner
from tests.usage.fleet import Machine
from usage.rollups import usage_company_rollup, usage_month_close
from usage.selectors import NOT_ENABLED, usage_totals

pytestmark = pytest.mark.django_db
NOV = dt.date(2026, 11, 1)
DAY = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)


def test_U13_partner_row_sums_subtree_and_not_enabled(platform):
    partner = make_partner(parent=platform)
    entitlements_set(actor=None, company=partner, purpose="resell",
                     keys={"endpoint_security", "a_la_carte", "patch_management", "edr_standalone"})
    patched = make_company(parent=partner)
    entitlements_set(actor=None, company=patched, purpose="own",
                     keys={"endpoint_security", "a_la_carte", "patch_management"})
    plain = make_company(parent=partner)
    entitlements_set(actor=None, company=plain, purpose="own", keys={"endpoint_security", "a_la_carte"})
    for company, n in ((patched, 2), (plain, 3)):
        for _ in range(n):
            Machine(company).beat(DAY, modules=["antimalware", "patch_management"])
        usage_company_rollup(company_id=company.pk, months=[NOV])
    total = usage_totals(company=partner, month=NOV)
    assert total["figures"]["endpoint_usage"] == 5
    assert total["figures"]["patch_management"] == 2  # only where enabled
    assert total["figures"]["full_disk_encryption"] == NOT_ENABLED
    own = usage_totals(company=plain, month=NOV, subtree=False)
    assert own["figures"]["patch_management"] == NOT_ENABLED
    assert own["figures"]["endpoint_usage"] == 3


def test_U11_edr_report_shows_zero_for_endpoint_security_companies(platform):
    es = make_company(parent=platform)
    entitlements_set(actor=None, company=es, purpose="own", keys={"endpoint_security", "a_la_carte"})
    edr = make_company(parent=platform)
    entitlements_set(actor=None, company=edr, purpose="own", keys={"edr_standalone"})
    for company in (es, edr):
        Machine(company).beat(DAY, modules=["antimalware", "edr"])
        usage_company_rollup(company_id=company.pk, months=[NOV])
    assert usage_totals(company=es, month=NOV, product_type="edr_standalone", subtree=False)[
        "figures"]["endpoint_usage"] == 0
    assert usage_totals(company=platform, month=NOV, product_type="edr_standalone")["figures"][
        "endpoint_usage"] == 1


def test_U12_late_adjustments_shown_with_the_next_month(platform):
    company = make_company(parent=platform)
    entitlements_set(actor=None, company=company, purpose="own", keys={"endpoint_security", "a_la_carte"})
    Machine(company).beat(DAY)
    usage_month_close(month=NOV)
    Machine(company).beat(DAY)
    usage_company_rollup(company_id=company.pk)
    december = usage_totals(company=company, month=dt.date(2026, 12, 1), subtree=False)
    assert december["late_adjustments"]["endpoint_usage"] == 1
    assert december["late_adjustments_month"] == NOV



def test_U11_U12_late_adjustments_count_under_their_companys_product_type(platform):
    """getMonthlyUsagePerProductType and the EDR report split by product type: a late adjustment must
    show under its own company's type only, or a sum over the types would count it twice."""
    es = make_company(parent=platform)
    entitlements_set(actor=None, company=es, purpose="own", keys={"endpoint_security", "a_la_carte"})
    edr = make_company(parent=platform)
    entitlements_set(actor=None, company=edr, purpose="own", keys={"edr_standalone"})
    for company, modules in ((es, ["antimalware"]), (edr, ["edr"])):
        Machine(company).beat(DAY, modules=modules)
    usage_month_close(month=NOV)
    Machine(es).beat(DAY)
    Machine(edr).beat(DAY, modules=["edr"])
    Machine(edr).beat(DAY, modules=["edr"])
    for company in (es, edr):
        usage_company_rollup(company_id=company.pk)
    december = dt.date(2026, 12, 1)
    by_type = {kind: usage_totals(company=platform, month=december, product_type=kind)["late_adjustments"]
               for kind in ("endpoint_security", "edr_standalone")}
    assert by_type["endpoint_security"]["endpoint_usage"] == 1
    assert by_type["edr_standalone"]["endpoint_usage"] == 2
    everything = usage_totals(company=platform, month=december)["late_adjustments"]
    assert everything["endpoint_usage"] == 3

def _row(company, month, licensed, usage, finalized=False):
    from django.utils import timezone

    from usage.models import CompanyMonthUsage

    CompanyMonthUsage.objects.create(company=company, month=month, licensed_endpoints=licensed, lineage=company.lineage,
                                     endpoint_usage=usage, finalized_at=timezone.now() if finalized else None)


def test_U13_usage_page_children_sum_each_childs_own_subtree(platform):
    from usage.month_selectors import usage_children

    top = make_partner(parent=platform)
    reseller = make_partner(parent=top, name="B reseller")
    below = make_company(parent=reseller)
    direct = make_company(parent=top, name="A direct")
    quiet = make_company(parent=top, name="C quiet")  # no usage row: listed with zeros
    elsewhere = make_company(parent=platform)  # not below `top`: never summed in
    for company, licensed, usage in ((top, 100, 100), (reseller, 1, 1), (below, 4, 3), (direct, 2, 2),
                                     (elsewhere, 50, 50)):
        _row(company, NOV, licensed, usage)
    _row(below, dt.date(2026, 10, 1), 9, 9)  # another month
    rows = usage_children(company=top, month=NOV)
    assert [(r["name"], r["licensed_endpoints"], r["endpoint_usage"]) for r in rows] == [
        ("A direct", 2, 2), ("B reseller", 5, 4), (quiet.name, 0, 0)]
    assert [r["id"] for r in rows] == [direct.pk, reseller.pk, quiet.pk]


def test_U13_usage_history_sums_the_subtree_per_month_newest_first(platform):
    from usage.month_selectors import usage_history

    top = make_partner(parent=platform)
    child = make_company(parent=top)
    OCT = dt.date(2026, 10, 1)
    _row(top, OCT, 1, 1, finalized=True)
    _row(child, OCT, 3, 2, finalized=True)
    _row(child, NOV, 4, 4)
    _row(make_company(parent=platform), NOV, 50, 50)  # outside the subtree
    history = usage_history(company=top, subtree=True)
    assert [(h["month"], h["licensed_endpoints"], h["endpoint_usage"], h["finalized"]) for h in history] == [
        (NOV, 4, 4, False), (OCT, 4, 3, True)]
    own = usage_history(company=top, subtree=False)
    assert [(h["month"], h["licensed_endpoints"]) for h in own] == [(OCT, 1)]


def test_U12_a_month_is_final_for_a_subtree_once_its_rows_are_even_before_the_whole_close(platform):
    """The close finalizes company by company; MonthClose comes when all are done. A partner whose
    companies are all finalized reads "finalized" on its Usage page (month list and detail) while
    another partner's customer is still open; that partner reads "awaiting close"."""
    from django.utils import timezone

    from companies.models import Company
    from usage.models import CompanyMonthUsage
    from usage.month_selectors import usage_month_detail, usage_months
    from usage.rollups import month_previous

    previous = month_previous(timezone.now())
    done_partner, open_partner = make_partner(parent=platform), make_partner(parent=platform)
    done, stuck = make_company(parent=done_partner), make_company(parent=open_partner)
    companies = [done_partner, open_partner, done, stuck]
    Company.objects.filter(pk__in=[c.pk for c in companies]).update(
        created_at=dt.datetime(previous.year, previous.month, 2, tzinfo=dt.UTC))
    for company in companies:  # every company of the month has its row, as the close leaves them
        usage_company_rollup(company_id=company.pk, months=[previous])
    CompanyMonthUsage.objects.filter(month=previous).exclude(company=stuck).update(finalized_at=timezone.now())

    def status(company):
        return (usage_month_detail(company=company, month=previous)["status"],
                {m["month"]: m["finalized"] for m in usage_months(company=company)}[previous])

    assert status(done_partner) == ("finalized", True)
    assert status(done) == ("finalized", True)
    assert status(open_partner) == ("awaiting close", False)
    assert status(stuck) == ("awaiting close", False)


def test_U12_a_month_before_the_company_existed_is_final_not_awaiting_close_forever(platform):
    from usage.month_selectors import usage_month_detail

    partner = make_partner(parent=platform)
    make_company(parent=partner)
    # no close of January 2001 will ever run: nothing in the subtree existed to wait for
    assert usage_month_detail(company=partner, month=dt.date(2001, 1, 1))["status"] == "finalized"
    # the month they live in is open; once it ended it would wait for their rows to be finalized
    from django.utils import timezone
    from freezegun import freeze_time

    from usage.rollups import month_start

    current = month_start(timezone.now())
    assert usage_month_detail(company=partner, month=current)["status"] == "open"
    with freeze_time(current + dt.timedelta(days=33)):
        assert usage_month_detail(company=partner, month=current)["status"] == "awaiting close"
