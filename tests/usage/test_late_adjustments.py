"""Late data after a month close (U12), from every source that changes a finalized month: heartbeats
for an older month, mailbox reports (U14, U15) and Data Retention tiers (U8)."""

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from licensing.entitlements import entitlements_set
from tests.factories import make_company, make_partner
from tests.usage.fleet import Machine
from tests.usage.test_agent_api import MAILBOXES, agent, mailbox_report, post
from usage.models import CompanyMonthUsage, LateAdjustment, MonthClose, PendingRollup
from usage.month_selectors import usage_history
from usage.rollups import (
    month_start,
    usage_company_rollup,
    usage_month_close,
    usage_rollup_batch,
    usage_rollup_companies,
)
from usage.selectors import usage_totals

pytestmark = pytest.mark.django_db

SEP, OCT, NOV = dt.date(2026, 9, 1), dt.date(2026, 10, 1), dt.date(2026, 11, 1)


def at(month: dt.date, day: int) -> dt.datetime:
    return dt.datetime(month.year, month.month, day, 12, tzinfo=dt.UTC)


def company_with(platform, *keys):
    company = make_company(parent=platform)
    entitlements_set(actor=None, company=company, purpose="own", keys=set(keys))
    return company


def test_U12_late_data_for_an_older_month_is_reported_in_the_next_report_made(platform):
    """September's data arriving after October was closed (and its report made) belongs in
    November's report: October's is already out, and its answer must not change."""
    company = company_with(platform, "endpoint_security", "a_la_carte")
    Machine(company, now=at(SEP, 1)).beat(at(SEP, 10))
    usage_month_close(month=SEP)
    usage_month_close(month=OCT)
    october_before = usage_totals(company=company, month=OCT)
    Machine(company, now=at(SEP, 1)).beat(at(SEP, 12))  # an agent that was offline since September
    usage_company_rollup(company_id=company.pk)
    adjustment = LateAdjustment.objects.get(company=company)
    assert (adjustment.month, adjustment.reported_in) == (SEP, NOV)
    november = usage_totals(company=company, month=NOV)
    assert november["late_adjustments"] == {"active_endpoints": 1, "licensed_endpoints": 1, "endpoint_usage": 1}
    assert november["late_adjustments_months"] == [SEP]
    assert usage_totals(company=company, month=OCT) == october_before
    assert october_before["late_adjustments"] == {}


def test_U12_late_data_for_the_previous_month_is_reported_with_the_open_month(platform):
    company = company_with(platform, "endpoint_security", "a_la_carte")
    Machine(company, now=at(OCT, 1)).beat(at(OCT, 10))
    usage_month_close(month=OCT)
    Machine(company, now=at(OCT, 1)).beat(at(OCT, 30))
    usage_company_rollup(company_id=company.pk)
    assert LateAdjustment.objects.get(company=company).reported_in == NOV
    assert usage_totals(company=company, month=NOV)["late_adjustments"]["endpoint_usage"] == 1


def test_U12_U8_a_late_change_of_data_retention_is_an_adjustment(platform):
    from freezegun import freeze_time

    keys = {"endpoint_security", "a_la_carte", "data_retention", "retention_90d"}
    with freeze_time("2026-09-20"):
        company = company_with(platform, *keys)
    Machine(company, now=at(OCT, 1)).beat(at(OCT, 10))
    usage_month_close(month=OCT)
    assert CompanyMonthUsage.objects.get(company=company, month=OCT).data_retention == {"retention_90d": 1}
    Machine(company, now=at(OCT, 1)).beat(at(OCT, 20))
    usage_company_rollup(company_id=company.pk)
    assert LateAdjustment.objects.get(company=company).delta == {
        "active_endpoints": 1, "licensed_endpoints": 1, "endpoint_usage": 1, "data_retention:retention_90d": 1}
    assert CompanyMonthUsage.objects.get(company=company, month=OCT).data_retention == {"retention_90d": 1}


def test_U14_U15_a_mailbox_report_alone_is_rolled_up_and_after_the_close_adjusts(client, platform):
    """No heartbeat touches the month a mailbox report changes: the report names its month for the
    next rollup, which recomputes it (the open month) or records a late adjustment (a closed one)."""
    from freezegun import freeze_time

    current = month_start(timezone.now())
    previous = month_start(current - dt.timedelta(days=1))
    with freeze_time(previous - dt.timedelta(days=5)):  # Email Security enabled in both months
        company = company_with(platform, "endpoint_security", "a_la_carte", "email_security")
    _, token = agent(client, company)
    usage_company_rollup(company_id=company.pk)  # the registration's figures, none from mail yet
    assert post(client, MAILBOXES, mailbox_report(), token).status_code == 200
    assert PendingRollup.objects.get(company=company).months == [current]
    assert usage_rollup_companies(company_ids=[company.pk]) == {company.pk: [current]}  # as the fan-out calls it
    assert CompanyMonthUsage.objects.get(company=company, month=current).email_security_mailboxes == 1
    assert not PendingRollup.objects.filter(company=company).exists()

    usage_month_close(month=previous)
    last_day = dt.datetime.combine(current - dt.timedelta(days=1), dt.time(12), tzinfo=dt.UTC)
    assert post(client, MAILBOXES, mailbox_report(observed_at=last_day.isoformat()), token).status_code == 200
    assert post(client, MAILBOXES, mailbox_report(), token).status_code == 200  # both months wait
    assert sorted(PendingRollup.objects.get(company=company).months) == [previous, current]
    usage_rollup_companies(company_ids=[company.pk])
    adjustment = LateAdjustment.objects.get(company=company)
    assert (adjustment.month, adjustment.reported_in, adjustment.delta) == (
        previous, current, {"email_security_mailboxes": 1})
    assert CompanyMonthUsage.objects.get(company=company, month=previous).email_security_mailboxes == 0


def test_U12_U13_a_partners_month_is_finalized_in_its_history_only_when_all_its_companies_are(platform):
    north = make_partner(parent=platform)
    acme, bolt = make_company(parent=north), make_company(parent=north)
    for company in (acme, bolt):
        Machine(company, now=at(OCT, 1)).beat(at(OCT, 10))
    usage_company_rollup(company_id=acme.pk, months=[OCT])
    usage_company_rollup(company_id=bolt.pk, months=[OCT])
    CompanyMonthUsage.objects.filter(company=acme, month=OCT).update(finalized_at=timezone.now())
    assert [(h["month"], h["finalized"]) for h in usage_history(company=north, subtree=True)] == [(OCT, False)]
    assert [(h["month"], h["finalized"]) for h in usage_history(company=acme, subtree=False)] == [(OCT, True)]
    CompanyMonthUsage.objects.filter(company=bolt, month=OCT).update(finalized_at=timezone.now())
    assert [(h["month"], h["finalized"]) for h in usage_history(company=north, subtree=True)] == [(OCT, True)]
    assert not MonthClose.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_U12_a_company_failing_alone_is_reported_as_failed_not_raised(platform):
    """The month close's last batch can hold one company: its failure is a failed company (the close
    retries), not an error that skips writing the others' progress."""
    company = company_with(platform, "endpoint_security", "a_la_carte")
    Machine(company).beat(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TABLE "{company.schema_name}".telemetry_heartbeat CASCADE')
    assert usage_rollup_batch(company_ids=[company.pk]) == ({}, [company.pk])


def test_U12_late_data_goes_after_the_newest_finalized_month_even_before_the_month_close(platform):
    """A subtree's report goes out once its own rows are final, before MonthClose is written (other
    companies may still be failing): late data then belongs to the month after, not that report."""
    company = company_with(platform, "endpoint_security", "a_la_carte")
    Machine(company, now=at(SEP, 1)).beat(at(SEP, 10))
    usage_month_close(month=SEP)
    usage_company_rollup(company_id=company.pk, months=[OCT])
    CompanyMonthUsage.objects.filter(company=company, month=OCT).update(finalized_at=timezone.now())
    assert not MonthClose.objects.filter(month=OCT).exists()
    Machine(company, now=at(SEP, 1)).beat(at(SEP, 12))
    usage_company_rollup(company_id=company.pk)
    assert LateAdjustment.objects.get(company=company).reported_in == NOV


def test_U12_a_company_added_after_the_close_gets_a_frozen_month_and_its_data_is_late(platform):
    north = make_partner(parent=platform)
    old = make_company(parent=north)
    Machine(old, now=at(OCT, 1)).beat(at(OCT, 10))
    usage_month_close(month=OCT)
    assert usage_totals(company=north, month=OCT)["figures"]["endpoint_usage"] == 1
    newcomer = make_company(parent=north)  # added after October was closed
    Machine(newcomer, now=at(OCT, 1)).beat(at(OCT, 25))  # dated in the closed month
    usage_company_rollup(company_id=newcomer.pk)
    row = CompanyMonthUsage.objects.get(company=newcomer, month=OCT)
    assert row.finalized_at is not None and row.endpoint_usage == 0 and f"/{north.pk}/" in row.lineage
    assert usage_totals(company=north, month=OCT)["figures"]["endpoint_usage"] == 1  # as closed
    adjustment = LateAdjustment.objects.get(company=newcomer)
    assert adjustment.delta == {"active_endpoints": 1, "licensed_endpoints": 1, "endpoint_usage": 1}
    assert usage_totals(company=north, month=adjustment.reported_in)["late_adjustments"]["endpoint_usage"] == 1


def test_U12_the_hourly_close_also_finishes_an_older_month_left_open(platform):
    from usage.tasks import month_close

    company = company_with(platform, "endpoint_security", "a_la_carte")
    Machine(company, now=at(SEP, 1)).beat(at(SEP, 10)).beat(at(OCT, 10))
    usage_company_rollup(company_id=company.pk, months=[SEP, OCT])  # September's close never finished
    month_close.apply().get()
    closed = sorted(MonthClose.objects.values_list("month", flat=True))
    assert SEP in closed and month_start(month_start(timezone.now()) - dt.timedelta(days=1)) in closed
    assert CompanyMonthUsage.objects.get(company=company, month=SEP).finalized_at is not None
    assert month_close.apply().get() == 0  # nothing left: a no-op


def test_U12_the_month_close_is_scheduled_every_hour(settings):
    """An unfinished close (a company's rollup failing) is finished by the next hourly run."""
    entry = settings.CELERY_BEAT_SCHEDULE["usage-month-close"]
    assert entry["task"] == "usage.month_close"
    schedule = entry["schedule"]
    assert schedule.minute == {30} and schedule.hour == set(range(24)) and schedule.day_of_month == set(range(1, 32))


def test_U12_U8_the_usage_page_lists_late_months_and_retention_tiers(client, platform):
    from tests.factories import make_user

    company = company_with(platform, "endpoint_security", "a_la_carte")
    for month, delta in ((SEP, {"endpoint_usage": 1}), (OCT, {"endpoint_usage": 2, "data_retention:retention_1y": 1})):
        LateAdjustment.objects.create(company=company, month=month, reported_in=NOV, lineage=company.lineage,
                                      delta=delta)
    client.force_login(make_user(company=company))
    html = client.get("/usage/", {"month": "2026-11"}).content.decode()
    assert "Late adjustments to September 2026, October 2026" in html
    assert "Data Retention (retention_1y)" in html
    section = html[html.index('data-testid="late-adjustments"'):]
    assert "+3" in section and "+1" in section
