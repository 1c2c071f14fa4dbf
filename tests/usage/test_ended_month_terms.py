"""L6, U12: an ended month keeps the licence terms it ended with until and through its close; terms
set after it ended take effect from the month they are set in."""

import datetime as dt

import pytest
from freezegun import freeze_time

from licensing.entitlements import entitlements_set
from licensing.services import license_update
from tests.factories import make_company
from tests.usage.fleet import Machine
from usage.models import CompanyMonthUsage
from usage.rollups import usage_company_rollup, usage_month_close

pytestmark = pytest.mark.django_db

NOV, DEC = dt.date(2026, 11, 1), dt.date(2026, 12, 1)


def terms(company, month):
    row = CompanyMonthUsage.objects.get(company=company, month=month)
    return row.minimum_usage, row.reserved_seats, row.end_date, row.auto_renew


def test_L6_U12_an_ended_month_keeps_the_licence_terms_it_ended_with_through_its_close(platform):
    with freeze_time("2026-11-02 09:00"):
        company = make_company(parent=platform)
        entitlements_set(actor=None, company=company, purpose="own", keys={"endpoint_security", "a_la_carte"})
        license_update(actor=None, company=company, reserved_seats=10, minimum_usage=5,
                       end_date=dt.date(2027, 6, 30), auto_renew=False)
        machine = Machine(company, now=dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC))
        machine.beat(dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC))
        usage_company_rollup(company_id=company.pk)
        november = terms(company, NOV)
    assert november == (5, 10, dt.date(2027, 6, 30), False)
    with freeze_time("2026-12-01 00:10"):
        license_update(actor=None, company=company, minimum_usage=1, reserved_seats=3,
                       end_date=dt.date(2027, 12, 31), auto_renew=True)
    with freeze_time("2026-12-01 00:20"):  # a late heartbeat for November, rolled up before the close
        machine.beat(dt.datetime(2026, 11, 30, 23, tzinfo=dt.UTC))
        usage_company_rollup(company_id=company.pk)
        assert terms(company, NOV) == november
    with freeze_time("2026-12-01 00:30"):
        usage_month_close(month=NOV)
    row = CompanyMonthUsage.objects.get(company=company, month=NOV)
    assert row.finalized_at is not None
    assert terms(company, NOV) == november
    with freeze_time("2026-12-01 00:40"):  # the open month takes the terms set in it
        machine.beat(dt.datetime(2026, 12, 1, 0, 35, tzinfo=dt.UTC))
        usage_company_rollup(company_id=company.pk)
    assert terms(company, DEC)[:2] + terms(company, DEC)[3:] == (1, 3, True)


def test_L6_S1_terms_set_late_in_the_month_reach_its_row_before_it_ends(platform):
    """The month's last rollup came on 2 November; the minimum was raised on 20 November and the end date
    set on the 25th with nothing rolled up since. The close keeps the terms the row holds (an ended month
    keeps the terms it ended with), so the change must reach the open month's row when it is made: it did
    not, and November closed with minimum 5."""
    from tests.factories import make_partner

    with freeze_time("2026-11-02 09:00"):
        partner = make_partner(parent=platform)
        entitlements_set(actor=None, company=partner, purpose="resell", keys={"endpoint_security", "a_la_carte"})
        company = make_company(parent=partner)
        entitlements_set(actor=None, company=company, purpose="own", keys={"endpoint_security", "a_la_carte"})
        license_update(actor=None, company=company, reserved_seats=10, minimum_usage=5)
        endpoint = Machine(company, now=dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC))
        endpoint.beat(dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC))
        usage_company_rollup(company_id=company.pk)
    with freeze_time("2026-11-20 09:00"):
        license_update(actor=None, company=company, minimum_usage=8)
    with freeze_time("2026-11-25 09:00"):  # the partner's end date, which the company inherits (S1)
        license_update(actor=None, company=partner, end_date=dt.date(2027, 6, 30))
    with freeze_time("2026-12-01 00:30"):
        usage_month_close(month=NOV)
    row = CompanyMonthUsage.objects.get(company=company, month=NOV)
    assert (row.minimum_usage, row.reserved_seats, row.end_date) == (8, 10, dt.date(2027, 6, 30))


def test_S1_a_partners_end_date_change_takes_no_lock_per_company_below_it(platform):
    """The open month's rows of a whole subtree take a new end date without a rollup lock per company: a
    partner with thousands of companies below it would fill the server's lock table (max_locks_per_
    transaction is shared by every session) and the change, or the nightly renewal, would fail."""
    from django.db import connection, transaction

    from tests.factories import make_partner

    partner = make_partner(parent=platform)
    for _ in range(30):
        make_company(parent=partner)
    with transaction.atomic():
        license_update(actor=None, company=partner, end_date=dt.date(2027, 6, 30))
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            assert cursor.fetchone()[0] <= 1
