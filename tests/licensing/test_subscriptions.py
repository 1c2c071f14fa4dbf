"""Subscriptions and the daily licensing run (SPEC S1-S5, L4, L6, H4, T5, X1)."""

import datetime as dt
import io
import uuid

import pytest
from django.contrib.auth import get_user
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from freezegun import freeze_time

from companies.models import AuditEvent, Company, CompanyStatus
from companies.services import company_move, company_set_status, company_update
from licensing.models import License, SeatAssignment, SeatPool, SeatState
from licensing.seats import license_of, pool_of, reservation_set, seat_assign
from licensing.subscriptions import effective_end_date, effective_end_dates, licensing_daily, subscription_set
from tests.factories import PASSWORD, make_company, make_partner, make_user

pytestmark = pytest.mark.django_db

D = dt.date
NOTHING = {"renewed": 0, "suspended": 0, "trials_expired": 0, "trials_promoted": 0}


def subscribe(company, end_date, auto_renew=False, renew_months=12):
    return subscription_set(actor=None, company=company, end_date=end_date, auto_renew=auto_renew,
                            renew_months=renew_months)


def end_of(company) -> dt.date | None:
    return license_of(company).end_date


def status_of(company) -> str:
    return Company.objects.get(pk=company.pk).status


def daily_on(day: str) -> dict:
    """The daily run as beat starts it: no date given, the clock says which day it is."""
    with freeze_time(f"{day} 00:15:00"):
        return licensing_daily()


def install(company, n, when):
    return [seat_assign(company=company, endpoint_id=uuid.uuid4(), now=when) for _ in range(n)]


# --- S1 -------------------------------------------------------------------------------------------------

def test_S1_end_dates_of_many_companies_match_one_by_one(platform, django_assert_num_queries):
    dist = make_partner(parent=platform)
    msp = make_partner(parent=dist)
    dated = make_company(parent=msp)
    inherits = make_company(parent=msp)
    undated = make_company(parent=platform)
    subscribe(dist, D(2027, 6, 30))
    subscribe(dated, D(2027, 1, 31))
    companies = [dist, msp, dated, inherits, undated]
    with django_assert_num_queries(1):
        ends = effective_end_dates(companies)
    assert ends == {c.pk: effective_end_date(c)[0] for c in companies}
    assert (ends[inherits.pk], ends[dated.pk], ends[undated.pk]) == (D(2027, 6, 30), D(2027, 1, 31), None)


def test_S1_end_date_inherited_through_several_levels(platform):
    dist = make_partner(parent=platform, name="Dist")
    msp = make_partner(parent=dist, name="MSP")
    sub = make_partner(parent=msp, name="Sub")
    customer = make_company(parent=sub, name="Bakery")
    subscribe(dist, D(2027, 6, 30), auto_renew=True)
    assert effective_end_date(customer) == (D(2027, 6, 30), dist)
    assert effective_end_date(msp) == (D(2027, 6, 30), dist)

    subscribe(sub, D(2027, 3, 31))  # the nearest own date wins
    assert effective_end_date(customer) == (D(2027, 3, 31), sub)
    assert effective_end_date(msp) == (D(2027, 6, 30), dist)

    subscribe(customer, D(2027, 1, 31))
    assert effective_end_date(customer) == (D(2027, 1, 31), customer)
    subscribe(customer, None)  # back to inheriting
    assert effective_end_date(customer) == (D(2027, 3, 31), sub)


def test_S1_no_end_date_at_the_top_means_no_end_date(platform):
    msp = make_partner(parent=platform)
    customer = make_company(parent=msp)
    assert effective_end_date(customer) == (None, None)
    assert effective_end_date(platform) == (None, None)
    assert daily_on("2099-12-31") == NOTHING
    assert status_of(customer) == CompanyStatus.ACTIVE
    # the platform runs the installation: it has no end date to inherit
    with pytest.raises(ValidationError) as refused:
        subscribe(platform, D(2027, 1, 31))
    assert refused.value.message_dict == {"end_date": ["The platform has no subscription end date."]}
    assert end_of(platform) is None


# --- S2 -------------------------------------------------------------------------------------------------

def test_S2_later_end_date_refused_naming_the_parent_and_its_date(platform):
    msp = make_partner(parent=platform, name="Acme MSP")
    customer = make_company(parent=msp, name="Kite Bakery")
    subscribe(msp, D(2027, 3, 31))
    with pytest.raises(ValidationError) as refused:
        subscribe(customer, D(2027, 4, 1))
    assert refused.value.message_dict == {"end_date": [
        "The end date cannot be later than 2027-03-31, the end date of Acme MSP, which does not renew "
        "automatically (S2)."]}
    assert end_of(customer) is None
    subscribe(customer, D(2027, 3, 31))  # the same day is not later
    assert end_of(customer) == D(2027, 3, 31)

    # a parent that inherits its date is named, with where the date comes from
    sub = make_partner(parent=msp, name="Sub partner")
    shop = make_company(parent=sub, name="Shop")
    with pytest.raises(ValidationError, match="later than 2027-03-31, the end date of Sub partner "
                                              r"\(inherited from Acme MSP\)"):
        subscribe(shop, D(2027, 12, 31))


def test_S2_later_end_date_allowed_when_the_parent_auto_renews(platform):
    msp = make_partner(parent=platform, name="Acme MSP")
    sub = make_partner(parent=msp, name="Sub partner")
    customer = make_company(parent=sub)
    subscribe(msp, D(2027, 3, 31), auto_renew=True)
    subscribe(customer, D(2028, 3, 31))  # held to Sub partner, which inherits a renewing date
    assert effective_end_date(customer) == (D(2028, 3, 31), customer)


def test_S2_parent_cannot_stop_renewing_or_end_before_a_later_child(platform):
    msp = make_partner(parent=platform, name="Acme MSP")
    customer = make_company(parent=msp, name="Kite Bakery")
    subscribe(msp, D(2027, 3, 31), auto_renew=True)
    subscribe(customer, D(2027, 9, 30))
    with pytest.raises(ValidationError) as refused:
        subscribe(msp, D(2027, 3, 31), auto_renew=False)
    assert refused.value.message_dict == {"auto_renew": [
        "Acme MSP would end on 2027-03-31 without auto-renewal, before companies below it: Kite Bakery "
        "(2027-09-30). Change their end dates first, or keep auto-renewal on (S2)."]}
    assert license_of(msp).auto_renew is True
    # an end date of its own given to a partner that inherited is held to the same rule
    subscribe(msp, None)
    with pytest.raises(ValidationError, match="would end on 2027-06-30 without auto-renewal"):
        subscribe(msp, D(2027, 6, 30))
    subscribe(msp, D(2027, 9, 30))  # not earlier than the child: fine
    assert license_of(msp).auto_renew is False


# --- S3 -------------------------------------------------------------------------------------------------

def test_S3_monthly_renewal_across_a_month_end_keeps_ending_on_the_last_day(platform):
    customer = make_company(parent=platform)
    subscribe(customer, D(2027, 1, 31), auto_renew=True, renew_months=1)
    assert daily_on("2027-01-30")["renewed"] == 0
    assert daily_on("2027-01-31")["renewed"] == 1  # renewed on the end date, so it never lapses
    assert end_of(customer) == D(2027, 2, 28)
    assert daily_on("2027-02-28")["renewed"] == 1
    assert end_of(customer) == D(2027, 3, 31)  # not the 28th: month ends stay month ends
    event = AuditEvent.objects.filter(company=customer, action="license.renew").latest("id")
    assert (event.actor_id, event.actor_label) == (None, "system")
    assert (event.before, event.after) == ({"end_date": "2027-02-28"}, {"end_date": "2027-03-31"})


def test_S3_yearly_renewal_across_a_year_end(platform):
    customer = make_company(parent=platform)
    subscribe(customer, D(2026, 12, 31), auto_renew=True)
    assert daily_on("2026-12-31") == {**NOTHING, "renewed": 1}
    assert end_of(customer) == D(2027, 12, 31)
    assert daily_on("2027-01-01") == NOTHING
    assert status_of(customer) == CompanyStatus.ACTIVE


def test_S3_feb_29_renewed_by_12_months_ends_feb_28(platform):
    customer = make_company(parent=platform)
    subscribe(customer, D(2028, 2, 29), auto_renew=True)
    assert daily_on("2028-02-29")["renewed"] == 1
    assert end_of(customer) == D(2029, 2, 28)
    # a mid-month date keeps its day
    other = make_company(parent=platform)
    subscribe(other, D(2028, 2, 15), auto_renew=True, renew_months=12)
    assert daily_on("2028-02-15")["renewed"] == 1
    assert end_of(other) == D(2029, 2, 15)


def test_S3_job_three_months_late_catches_up_and_suspends_no_one(platform):
    monthly = make_company(parent=platform)
    month_end = make_company(parent=platform)
    yearly = make_company(parent=platform)
    subscribe(monthly, D(2027, 1, 15), auto_renew=True, renew_months=1)
    subscribe(month_end, D(2027, 1, 31), auto_renew=True, renew_months=1)
    subscribe(yearly, D(2026, 12, 31), auto_renew=True, renew_months=12)
    # nothing ran from 2026-12-31 to 2027-04-20
    assert daily_on("2027-04-20") == {**NOTHING, "renewed": 3}
    assert end_of(monthly) == D(2027, 5, 15)  # 02-15, 03-15, 04-15 all passed: one more
    assert end_of(month_end) == D(2027, 4, 30)
    assert end_of(yearly) == D(2027, 12, 31)
    assert [status_of(c) for c in (monthly, month_end, yearly)] == [CompanyStatus.ACTIVE] * 3
    # one audit event per renewal run, from the date before to the date after
    event = AuditEvent.objects.get(company=monthly, action="license.renew")
    assert (event.before, event.after) == ({"end_date": "2027-01-15"}, {"end_date": "2027-05-15"})


def test_S3_S2_renewal_stops_at_a_parent_that_does_not_renew(platform):
    msp = make_partner(parent=platform, name="Acme MSP")
    customer = make_company(parent=msp, name="Kite Bakery")
    subscribe(msp, D(2027, 6, 30))
    subscribe(customer, D(2027, 3, 31), auto_renew=True)
    assert daily_on("2027-03-31")["renewed"] == 1
    assert end_of(customer) == D(2027, 6, 30)  # not 2028-03-31: it cannot outlast Acme MSP
    event = AuditEvent.objects.get(company=customer, action="license.renew")
    assert event.after["limited_by"] == "Acme MSP ends 2027-06-30 without auto-renewal (S2)"
    assert daily_on("2027-06-30") == NOTHING
    assert daily_on("2027-07-01")["suspended"] == 2
    assert status_of(msp) == status_of(customer) == CompanyStatus.SUSPENDED


# --- S4 (H4, T5) ----------------------------------------------------------------------------------------

def test_S4_H4_T5_suspension_across_a_year_end_blocks_sign_in_and_expires_endpoints(client, platform):
    msp = make_partner(parent=platform, name="Acme MSP")
    reservation_set(actor=None, company=msp, seats=3)
    customer = make_company(parent=msp, name="Late Payer")
    waiting = make_company(parent=msp, name="Waiting")
    user = make_user(company=customer, email="late@payer.example")
    subscribe(customer, D(2026, 12, 31))
    install(customer, 3, dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    install(waiting, 1, dt.datetime(2026, 11, 3, tzinfo=dt.UTC))  # no seat left: trial
    client.force_login(user)

    assert daily_on("2026-12-31") == NOTHING  # the last day is still covered
    assert status_of(customer) == CompanyStatus.ACTIVE
    assert daily_on("2027-01-01") == {**NOTHING, "suspended": 1}

    customer.refresh_from_db()
    assert customer.status == CompanyStatus.SUSPENDED and customer.suspended_at is not None
    # H4: the open session is over and signing in again is refused
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302 and response.url.startswith(reverse("accounts:sign-in"))
    assert not get_user(client).is_authenticated
    assert not client.__class__().login(username=user.email, password=PASSWORD)
    # T5: every endpoint expired, the seats went back to the pool and the waiting trial took one
    assert set(SeatAssignment.objects.filter(company=customer).values_list("state", flat=True)) == {"expired"}
    assert SeatAssignment.objects.get(company=waiting).state == SeatState.LICENSED
    pool = pool_of(msp)
    assert pool.used == SeatAssignment.objects.filter(pool=pool, state=SeatState.LICENSED).count() == 1
    assert seat_assign(company=customer, endpoint_id=uuid.uuid4()).state == SeatState.EXPIRED
    # X1: written down as the system's doing, with the reason; nothing deleted
    event = AuditEvent.objects.get(company=customer, action="company.suspend")
    assert event.actor is None and event.actor_label == "system"
    assert event.after["reason"] == "subscription ended 2026-12-31"
    assert end_of(customer) == D(2026, 12, 31)


def test_S4_own_later_date_under_a_renewing_parent_is_not_suspended(platform):
    msp = make_partner(parent=platform, name="Acme MSP")
    later = make_partner(parent=msp, name="Later")
    make_company(parent=later, name="Below later")
    make_company(parent=msp, name="Inheriting")
    own_earlier = make_company(parent=msp, name="Own earlier")
    subscribe(msp, D(2026, 12, 31), auto_renew=True)
    subscribe(later, D(2027, 6, 30))
    subscribe(own_earlier, D(2026, 12, 31))  # its own date binds it, whatever the parent does
    # the job did not run on the 31st: on the 2nd it renews the parent first, then suspends
    assert daily_on("2027-01-02") == {**NOTHING, "renewed": 1, "suspended": 1}
    assert end_of(msp) == D(2027, 12, 31)
    statuses = dict(Company.objects.filter(parent__isnull=False).values_list("name", "status"))
    assert statuses == {"Acme MSP": "active", "Later": "active", "Below later": "active",
                        "Inheriting": "active", "Own earlier": "suspended"}


def test_S4_company_inheriting_from_a_non_renewing_ancestor_is_suspended(platform):
    dist = make_partner(parent=platform, name="Dist")
    msp = make_partner(parent=dist, name="MSP")
    customer = make_company(parent=msp, name="Customer")
    outside = make_company(parent=platform, name="Outside")
    subscribe(dist, D(2026, 12, 31))
    assert daily_on("2027-01-01") == {**NOTHING, "suspended": 3}
    assert [status_of(c) for c in (dist, msp, customer)] == [CompanyStatus.SUSPENDED] * 3
    assert status_of(outside) == status_of(platform) == CompanyStatus.ACTIVE
    events = AuditEvent.objects.filter(action="company.suspend")
    assert sorted(events.values_list("company__name", flat=True)) == ["Customer", "Dist", "MSP"]
    assert {(e.actor_id, e.after["reason"]) for e in events} == {(None, "subscription ended 2026-12-31")}


def test_S4_already_suspended_companies_are_not_touched_twice(platform):
    msp = make_partner(parent=platform, name="MSP")
    by_hand = make_company(parent=msp, name="By hand")
    other = make_company(parent=msp, name="Other")
    subscribe(msp, D(2026, 12, 31))
    company_set_status(actor=None, company=by_hand, status=CompanyStatus.SUSPENDED, reason="unpaid")
    suspended_at = Company.objects.get(pk=by_hand.pk).suspended_at
    assert daily_on("2027-01-01")["suspended"] == 2  # MSP and Other
    assert daily_on("2027-01-02") == NOTHING
    assert Company.objects.get(pk=by_hand.pk).suspended_at == suspended_at
    reasons = list(AuditEvent.objects.filter(company=by_hand, action="company.suspend")
                   .values_list("after__reason", flat=True))
    assert reasons == ["unpaid"]
    assert AuditEvent.objects.filter(company=other, action="company.suspend").count() == 1


# --- S5 -------------------------------------------------------------------------------------------------

def test_S5_license_type_is_monthly_and_license_key_unique_and_stable(platform):
    msp = make_partner(parent=platform, name="MSP")
    other_msp = make_partner(parent=platform, name="Other MSP")
    companies = [msp, other_msp] + [make_company(parent=msp) for _ in range(10)]
    keys = {c.pk: Company.objects.get(pk=c.pk).license_key for c in companies}
    assert len(set(keys.values())) == len(companies)
    assert Company._meta.get_field("license_key").unique
    assert {license_of(c).license_type for c in companies} == {"monthly"}
    assert License._meta.get_field("license_type").editable is False

    customer = companies[-1]
    subscribe(customer, D(2026, 12, 31), auto_renew=True)
    daily_on("2027-01-01")
    company_update(actor=None, company=customer, name="Renamed", address="1 Main St")
    company_set_status(actor=None, company=customer, status=CompanyStatus.SUSPENDED)
    company_set_status(actor=None, company=customer, status=CompanyStatus.ACTIVE)
    company_move(company=customer, new_parent=other_msp)
    assert Company.objects.get(pk=customer.pk).license_key == keys[customer.pk]
    assert license_of(customer).license_type == "monthly"


# --- L4 (T5) and L6 --------------------------------------------------------------------------------------

def test_L4_T5_trial_expires_across_a_year_end_via_the_daily_run(platform):
    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=0)
    (trial,) = install(customer, 1, dt.datetime(2026, 12, 10, 14, 0, tzinfo=dt.UTC))
    assert (trial.state, trial.trial_ends_on) == ("trial", D(2027, 1, 31))
    assert daily_on("2027-01-01") == NOTHING
    assert daily_on("2027-01-31") == NOTHING  # the last day of the trial
    assert daily_on("2027-02-01") == {**NOTHING, "trials_expired": 1}
    row = SeatAssignment.objects.get(company=customer)
    assert (row.state, row.trial_ends_on) == (SeatState.EXPIRED, None)
    assert daily_on("2027-02-02") == NOTHING


def test_L4_daily_run_gives_free_seats_to_trials_oldest_first(platform):
    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=0)
    old = install(customer, 1, dt.datetime(2027, 1, 5, tzinfo=dt.UTC))
    new = install(customer, 1, dt.datetime(2027, 1, 6, tzinfo=dt.UTC))
    assert old[0].state == new[0].state == SeatState.TRIAL
    # a seat freed without the event that would have promoted a trial (an outage, a manual fix)
    SeatPool.objects.filter(owner=customer).update(capacity=1)
    assert daily_on("2027-01-20") == {**NOTHING, "trials_promoted": 1}
    states = list(SeatAssignment.objects.filter(company=customer).order_by("first_seen_at")
                  .values_list("state", flat=True))
    assert states == [SeatState.LICENSED, SeatState.TRIAL]


def test_L6_minimum_usage_is_audited_and_kept_through_renewals(platform):
    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=10)
    subscription_set(actor=None, company=customer, end_date=D(2026, 12, 31), auto_renew=True, minimum_usage=6)
    event = AuditEvent.objects.filter(company=customer, action="license.subscription").latest("id")
    assert event.after["minimum_usage"] == 6 and event.before["minimum_usage"] is None
    with pytest.raises(ValidationError, match="cannot exceed the 10 reserved seats"):
        subscription_set(actor=None, company=customer, end_date=D(2026, 12, 31), auto_renew=True,
                         minimum_usage=11)
    daily_on("2027-01-01")
    lic = license_of(customer)
    assert (lic.end_date, lic.minimum_usage, lic.reserved_seats) == (D(2027, 12, 31), 6, 10)


# --- the daily run: idempotent, scheduled, runs in the worker and from the command line --------------------

def _state() -> tuple:
    return (sorted(License.objects.values_list("company_id", "end_date")),
            sorted(Company.objects.values_list("id", "status", "suspended_at")),
            sorted(SeatAssignment.objects.values_list("id", "state", "trial_ends_on", "expired_at")),
            sorted(SeatPool.objects.values_list("id", "used", "carved")),
            AuditEvent.objects.count())


def test_S3_S4_L4_daily_run_twice_the_same_day_changes_nothing_the_second_time(platform):
    msp = make_partner(parent=platform)
    renewing = make_company(parent=msp)
    lapsing = make_company(parent=msp)
    trials = make_company(parent=platform)
    reservation_set(actor=None, company=trials, seats=0)
    subscribe(renewing, D(2027, 1, 31), auto_renew=True, renew_months=1)
    subscribe(lapsing, D(2027, 1, 31))
    install(lapsing, 1, dt.datetime(2027, 1, 3, tzinfo=dt.UTC))
    install(trials, 2, dt.datetime(2026, 12, 20, tzinfo=dt.UTC))
    install(trials, 1, dt.datetime(2027, 1, 20, tzinfo=dt.UTC))
    SeatPool.objects.filter(owner=trials).update(capacity=1)  # room for the remaining trial

    first = daily_on("2027-02-01")
    assert first == {"renewed": 1, "suspended": 1, "trials_expired": 2, "trials_promoted": 1}
    after_first = _state()
    assert daily_on("2027-02-01") == NOTHING
    assert _state() == after_first


def test_S3_S4_daily_run_is_scheduled_at_00_15_utc(settings, monkeypatch):
    from django_celery_beat import schedulers
    from django_celery_beat.models import PeriodicTask

    from gz_console.celery import app

    assert settings.CELERY_BEAT_SCHEDULE["licensing-daily"]["task"] == "licensing.daily"
    # beat closes stale connections between ticks; here that would close the test's transaction
    monkeypatch.setattr(schedulers, "close_old_connections", lambda: None)
    schedulers.DatabaseScheduler(app=app)  # what beat does at start: copies the schedule into the database
    task = PeriodicTask.objects.get(name="licensing-daily")
    assert task.task == "licensing.daily" and task.enabled
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_month, str(crontab.timezone)) == ("15", "0", "*", "UTC")


def test_S4_licensing_daily_command_runs_for_a_given_date(platform):
    customer = make_company(parent=platform)
    subscribe(customer, D(2026, 12, 31))
    out = io.StringIO()
    call_command("licensing_daily", "--date", "2026-12-31", stdout=out)
    assert out.getvalue().strip() == "renewed=0 suspended=0 trials_expired=0 trials_promoted=0"
    out = io.StringIO()
    call_command("licensing_daily", "--date", "2027-01-01", stdout=out)
    assert out.getvalue().strip() == "renewed=0 suspended=1 trials_expired=0 trials_promoted=0"
    with pytest.raises(CommandError, match="--date: '01/01/2027' is not a date in the form YYYY-MM-DD"):
        call_command("licensing_daily", "--date", "01/01/2027")


@pytest.mark.django_db(transaction=True)
def test_S3_S4_L4_daily_task_runs_in_the_real_worker_and_returns_counts(platform, celery_worker_process):
    from licensing.tasks import daily

    msp = make_partner(parent=platform)
    renewing = make_company(parent=msp)
    lapsing = make_company(parent=msp)
    subscribe(renewing, D(2026, 12, 31), auto_renew=True)
    subscribe(lapsing, D(2026, 12, 31))
    reservation_set(actor=None, company=msp, seats=0)
    install(msp, 1, dt.datetime(2026, 11, 20, tzinfo=dt.UTC))  # trial until 2026-12-31

    counts = daily.delay("2027-01-01").get(timeout=30)
    assert counts == {"renewed": 1, "suspended": 1, "trials_expired": 1, "trials_promoted": 0}
    assert end_of(renewing) == D(2027, 12, 31)
    assert status_of(lapsing) == CompanyStatus.SUSPENDED
    assert daily.delay("2027-01-01").get(timeout=30) == NOTHING
