"""Seats: reservations, shared pools, trials, promotion, expiry, minimum usage (SPEC L1-L6, T5)."""

import datetime as dt
import uuid

import pytest
from django.core.exceptions import ValidationError

from companies.services import company_move, company_set_status
from licensing.models import SeatAssignment, SeatPool, SeatState
from licensing.seats import (
    available_to_reserve,
    platform_seats_set,
    pool_of,
    pool_owner,
    reservation_set,
    seat_assign,
    seat_pool_promote,
    seat_release,
    seats_expire_trials,
    trial_end_for,
)
from licensing.subscriptions import subscription_set
from tests.factories import make_company, make_partner

pytestmark = pytest.mark.django_db


def install(company, n=1, when=None):
    return [seat_assign(company=company, endpoint_id=uuid.uuid4(), now=when) for _ in range(n)]


def states(company):
    return sorted(SeatAssignment.objects.filter(company=company).values_list("state", flat=True))


def assert_pool_counters_match(pool):
    pool.refresh_from_db()
    licensed = SeatAssignment.objects.filter(pool=pool, state=SeatState.LICENSED).count()
    assert pool.used == licensed


def test_L1_reserved_company_takes_only_from_its_reservation(platform):
    platform_seats_set(actor=None, seats=100)
    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=3)
    results = install(customer, 5)
    assert [r.state for r in results] == ["licensed"] * 3 + ["trial"] * 2
    pool = pool_of(customer)
    assert pool.owner == customer and pool.capacity == 3 and pool.used == 3
    platform_pool = pool_of(platform)
    assert (platform_pool.used, platform_pool.carved) == (0, 3)


def test_L2_pool_owner_is_nearest_reserved_ancestor_or_platform(platform):
    dist = make_partner(parent=platform)
    msp = make_partner(parent=dist)
    sub = make_partner(parent=msp)
    customer = make_company(parent=sub)
    assert pool_owner(customer) == platform
    reservation_set(actor=None, company=msp, seats=10)
    assert pool_owner(customer) == msp
    assert pool_owner(sub) == msp and pool_owner(msp) == msp and pool_owner(dist) == platform
    reservation_set(actor=None, company=customer, seats=2)
    # down to (not into) companies with their own reservation
    assert pool_owner(customer) == customer
    install(sub, 2)
    install(customer, 1)
    assert pool_of(msp).used == 2 and pool_of(customer).used == 1


def test_L3_reservation_is_carved_from_the_parents_pool(platform):
    msp = make_partner(parent=platform)
    reservation_set(actor=None, company=msp, seats=10)
    first = make_company(parent=msp)
    second = make_company(parent=msp)
    install(make_company(parent=msp), 2)  # shared members use 2 of msp's 10
    assert available_to_reserve(company=first) == 8
    reservation_set(actor=None, company=first, seats=6)
    assert available_to_reserve(company=second) == 2
    with pytest.raises(ValidationError, match="Only 2 seats are available to reserve"):
        reservation_set(actor=None, company=second, seats=3)
    # growing an existing reservation counts what it already holds
    assert available_to_reserve(company=first) == 8
    reservation_set(actor=None, company=first, seats=8)
    pool = pool_of(msp)
    assert (pool.capacity, pool.used, pool.carved) == (10, 2, 8)


def test_L3_reserving_takes_along_the_seats_already_held(platform):
    msp = make_partner(parent=platform)
    reservation_set(actor=None, company=msp, seats=10)
    customer = make_company(parent=msp)
    install(customer, 4)
    with pytest.raises(ValidationError, match="4 endpoints already hold seats"):
        reservation_set(actor=None, company=customer, seats=3)
    reservation_set(actor=None, company=customer, seats=5)
    assert (pool_of(msp).used, pool_of(msp).carved) == (0, 5)
    assert pool_of(customer).used == 4
    reservation_set(actor=None, company=customer, seats=None)
    assert (pool_of(msp).used, pool_of(msp).carved) == (4, 0)
    assert not SeatPool.objects.filter(owner=customer).exists()


def test_L4_overflow_enters_trial_until_end_of_next_month(platform):
    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=1)
    when = dt.datetime(2026, 12, 14, 9, 0, tzinfo=dt.UTC)
    licensed, trial = install(customer, 2, when=when)
    assert licensed.state == "licensed"
    assert (trial.state, trial.trial_ends_on) == ("trial", dt.date(2027, 1, 31))
    assert trial_end_for(dt.date(2026, 1, 31)) == dt.date(2026, 2, 28)
    assert trial_end_for(dt.date(2028, 1, 1)) == dt.date(2028, 2, 29)


def test_L4_trials_promoted_oldest_first_when_seats_free_up(platform):
    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=1)
    holder = uuid.uuid4()
    seat_assign(company=customer, endpoint_id=holder)
    old, middle, new = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for i, endpoint in enumerate((old, middle, new)):
        seat_assign(company=customer, endpoint_id=endpoint, now=dt.datetime(2026, 11, 1 + i, tzinfo=dt.UTC))
    seat_release(company=customer, endpoint_id=holder)
    state = dict(SeatAssignment.objects.filter(company=customer).values_list("endpoint_id", "state"))
    assert state == {old: "licensed", middle: "trial", new: "trial"}
    reservation_set(actor=None, company=customer, seats=2)  # the reservation grows
    state = dict(SeatAssignment.objects.filter(company=customer).values_list("endpoint_id", "state"))
    assert state == {old: "licensed", middle: "licensed", new: "trial"}
    assert_pool_counters_match(pool_of(customer))


def test_L4_T5_trial_expires_without_a_seat(platform):
    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=0)
    endpoint = uuid.uuid4()
    seat_assign(company=customer, endpoint_id=endpoint, now=dt.datetime(2026, 10, 20, tzinfo=dt.UTC))
    assert seats_expire_trials(today=dt.date(2026, 11, 30)) == 0  # last day of the trial
    assert seats_expire_trials(today=dt.date(2026, 12, 1)) == 1
    assert seats_expire_trials(today=dt.date(2026, 12, 2)) == 0  # idempotent
    row = SeatAssignment.objects.get(endpoint_id=endpoint)
    assert row.state == "expired" and row.expired_at is not None
    # a freed seat does not bring an expired endpoint back
    reservation_set(actor=None, company=customer, seats=1)
    assert SeatAssignment.objects.get(endpoint_id=endpoint).state == "expired"


def test_T7_same_endpoint_keeps_its_seat(platform):
    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=1)
    endpoint = uuid.uuid4()
    first = seat_assign(company=customer, endpoint_id=endpoint)
    again = seat_assign(company=customer, endpoint_id=endpoint)
    assert first == again and first.state == "licensed"
    assert pool_of(customer).used == 1


def test_H4_T5_suspension_expires_endpoints_and_frees_seats(platform):
    msp = make_partner(parent=platform)
    reservation_set(actor=None, company=msp, seats=2)
    payer, waiting = make_company(parent=msp), make_company(parent=msp)
    install(payer, 2)
    install(waiting, 1)
    assert states(waiting) == ["trial"]
    company_set_status(actor=None, company=payer, status="suspended")
    assert states(payer) == ["expired", "expired"]
    assert states(waiting) == ["licensed"]  # the freed seat went to the trial
    payer.refresh_from_db()
    assert seat_assign(company=payer, endpoint_id=uuid.uuid4()).state == "expired"
    assert_pool_counters_match(pool_of(msp))


def test_H5_move_needs_seats_and_moves_them(platform):
    small = make_partner(parent=platform, name="Small")
    reservation_set(actor=None, company=small, seats=1)
    big = make_partner(parent=platform, name="Big")
    reservation_set(actor=None, company=big, seats=10)
    customer = make_company(parent=big)
    install(customer, 3)
    with pytest.raises(ValidationError, match="Small cannot cover the 3 seats in use or reserved"):
        company_move(company=customer, new_parent=small)
    reservation_set(actor=None, company=small, seats=5)
    company_move(company=customer, new_parent=small)
    assert (pool_of(small).used, pool_of(big).used) == (3, 0)
    assert_pool_counters_match(pool_of(small))


def test_L6_minimum_usage_needs_and_fits_the_reservation(platform):
    customer = make_company(parent=platform)
    with pytest.raises(ValidationError, match="needs reserved seats"):
        subscription_set(actor=None, company=customer, end_date=None, auto_renew=False, minimum_usage=5)
    reservation_set(actor=None, company=customer, seats=4)
    with pytest.raises(ValidationError, match="cannot exceed the 4 reserved seats"):
        subscription_set(actor=None, company=customer, end_date=None, auto_renew=False, minimum_usage=5)
    subscription_set(actor=None, company=customer, end_date=None, auto_renew=False, minimum_usage=4)
    with pytest.raises(ValidationError, match="minimum usage is 4"):
        reservation_set(actor=None, company=customer, seats=3)


def test_platform_pool_capacity_limits_shared_installs(platform):
    platform_seats_set(actor=None, seats=2)
    customer = make_company(parent=platform)
    assert [r.state for r in install(customer, 3)] == ["licensed", "licensed", "trial"]
    platform_seats_set(actor=None, seats=3)
    assert states(customer) == ["licensed"] * 3
    assert seat_pool_promote(pool=pool_of(platform)) == 0


def test_L3_reserving_above_a_reservation_carves_it_along_instead_of_crashing(platform):
    """L3: a partner reserving for the first time takes along what its customers already reserved from
    the same pool (before: IntegrityError seat_pool_within_capacity, a 500 over REST)."""
    partner = make_partner(parent=platform)
    customer = make_company(parent=partner)
    reservation_set(actor=None, company=customer, seats=5)
    with pytest.raises(ValidationError, match="5 seats are reserved by companies below; reserve at least 5"):
        reservation_set(actor=None, company=partner, seats=3)
    reservation_set(actor=None, company=partner, seats=7)
    assert (pool_of(partner).capacity, pool_of(partner).carved) == (7, 5)
    assert pool_of(platform).carved == 7
    install(make_company(parent=partner), 3)  # the partner's 2 free seats, then trial
    assert pool_of(partner).used == 2


def test_L3_available_to_reserve_counts_the_reservations_below(platform):
    """L3: with 10 platform seats and a customer's 5 reserved below the partner, the partner can
    reserve all 10 (before: shown 5, and 8 refused)."""
    platform_seats_set(actor=None, seats=10)
    partner = make_partner(parent=platform)
    customer = make_company(parent=partner)
    reservation_set(actor=None, company=customer, seats=5)
    assert available_to_reserve(company=partner) == 10
    with pytest.raises(ValidationError, match="Only 10 seats are available to reserve"):
        reservation_set(actor=None, company=partner, seats=11)
    reservation_set(actor=None, company=partner, seats=8)
    assert (pool_of(platform).carved, pool_of(partner).carved, pool_of(partner).free) == (8, 5, 3)


def test_H5_move_between_partners_of_the_same_pool_needs_no_free_seats(platform):
    """H5: moving between two partners that share one pool moves no seat, so a full pool does not
    refuse it (before: compared with the pool's free seats as if the seats arrived from outside)."""
    dist = make_partner(parent=platform)
    reservation_set(actor=None, company=dist, seats=4)
    old, new = make_partner(parent=dist, name="Old"), make_partner(parent=dist, name="New")
    shared = make_company(parent=old)
    install(shared, 3)
    reserved = make_company(parent=old)
    reservation_set(actor=None, company=reserved, seats=1)
    assert pool_of(dist).free == 0
    company_move(company=shared, new_parent=new)
    company_move(company=reserved, new_parent=new)
    assert (pool_of(dist).used, pool_of(dist).carved) == (3, 1)
    assert_pool_counters_match(pool_of(dist))


def test_H4_L4_reactivation_revives_only_what_the_suspension_expired_and_seats_the_payers_first(platform):
    """H4/L4: reactivation brings back the endpoints the suspension expired, those that held a seat
    first; a trial that had run out before the suspension stays expired (before: every expired row got
    a new trial and the oldest, the long-expired trial, took the seat of the machine that had paid)."""
    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=0)
    ran_out, waiting, paying = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    seat_assign(company=customer, endpoint_id=ran_out, now=dt.datetime(2026, 8, 1, tzinfo=dt.UTC))
    assert seats_expire_trials(today=dt.date(2026, 10, 1)) == 1
    reservation_set(actor=None, company=customer, seats=1)
    seat_assign(company=customer, endpoint_id=paying, now=dt.datetime(2026, 10, 5, tzinfo=dt.UTC))
    seat_assign(company=customer, endpoint_id=waiting, now=dt.datetime(2026, 10, 1, tzinfo=dt.UTC))
    company_set_status(actor=None, company=customer, status="suspended")
    customer.refresh_from_db()
    during = uuid.uuid4()
    assert seat_assign(company=customer, endpoint_id=during).state == "expired"
    company_set_status(actor=None, company=customer, status="active")
    state = dict(SeatAssignment.objects.filter(company=customer).values_list("endpoint_id", "state"))
    assert state == {paying: "licensed", waiting: "trial", during: "trial", ran_out: "expired"}
    assert_pool_counters_match(pool_of(customer))
    paid = SeatAssignment.objects.get(endpoint_id=paying)
    assert paid.previously_licensed_from is not None and paid.previously_licensed_until is not None


def test_H4_L4_a_company_suspended_before_the_deploy_without_a_licence_revives(platform):
    """H4/L4: a company suspended before the seat rows recorded the suspension (and with no licence row:
    it draws on the platform's shared pool) is marked by migration 0006 from its suspended_at, so its
    reactivation revives what the suspension expired (before: 0005 filled only existing licence rows and
    reactivation revived nothing; the endpoints stayed expired for good)."""
    import importlib

    from django.apps import apps

    from licensing.models import License

    platform_seats_set(actor=None, seats=0)
    customer = make_company(parent=platform)
    ran_out, paying, waiting = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    seat_assign(company=customer, endpoint_id=ran_out, now=dt.datetime(2026, 8, 1, tzinfo=dt.UTC))
    assert seats_expire_trials(today=dt.date(2026, 10, 1)) == 1
    platform_seats_set(actor=None, seats=1)
    seat_assign(company=customer, endpoint_id=paying, now=dt.datetime(2026, 10, 5, tzinfo=dt.UTC))
    seat_assign(company=customer, endpoint_id=waiting, now=dt.datetime(2026, 10, 6, tzinfo=dt.UTC))
    company_set_status(actor=None, company=customer, status="suspended")
    customer.refresh_from_db()
    during = uuid.uuid4()
    seat_assign(company=customer, endpoint_id=during)
    # as the code before the deploy left it: no mark on the seat rows, no licence row
    SeatAssignment.objects.filter(company=customer).update(expired_by_suspension=False)
    License.objects.filter(company=customer).delete()

    importlib.import_module("licensing.migrations.0006_seat_expired_by_suspension").backfill(apps, None)
    company_set_status(actor=None, company=customer, status="active")

    state = dict(SeatAssignment.objects.filter(company=customer).values_list("endpoint_id", "state"))
    assert state == {paying: "licensed", waiting: "trial", during: "trial", ran_out: "expired"}
    assert_pool_counters_match(pool_of(customer))


def test_H5_L4_trials_that_move_take_the_new_pools_free_seats(platform):
    """H5/L4: a company's trial endpoints moved into a pool with free seats take them at once (before:
    only the old pool promoted, and they waited in trial next to free seats)."""
    old, new = make_partner(parent=platform, name="Old"), make_partner(parent=platform, name="New")
    reservation_set(actor=None, company=old, seats=1)
    reservation_set(actor=None, company=new, seats=5)
    customer = make_company(parent=old)
    install(customer, 2)
    assert states(customer) == ["licensed", "trial"]
    company_move(company=customer, new_parent=new)
    assert states(customer) == ["licensed", "licensed"]
    assert (pool_of(new).used, pool_of(old).used) == (2, 0)
    assert_pool_counters_match(pool_of(new))


def test_L4_promoting_a_pool_dissolved_meanwhile_promotes_nothing(platform):
    """L4: the daily promotion lists the pools with trials, then promotes each; a reservation removed in
    between dissolves its pool, which then has nothing to promote (before: DoesNotExist ended the run)."""
    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=1)
    listed = pool_of(customer)
    reservation_set(actor=None, company=customer, seats=None)
    assert seat_pool_promote(pool=listed) == 0
