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
