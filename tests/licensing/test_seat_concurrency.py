"""SPEC L5: concurrent installs never take more seats than exist (real PostgreSQL, one connection
per thread)."""

import datetime as dt
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections, transaction

from companies.services import company_move
from licensing.models import SeatAssignment, SeatPool, SeatState
from licensing.seats import platform_seats_set, pool_of, reservation_set, seat_assign, seat_release
from tests.factories import make_company, make_partner
from usage.agent import agent_register, install_token_for

pytestmark = pytest.mark.django_db(transaction=True)


def _race(companies, count):
    """`count` registrations spread over `companies`, released together by a barrier."""
    barrier = threading.Barrier(count)

    def register(i):
        try:
            barrier.wait(timeout=30)
            return seat_assign(company=companies[i % len(companies)], endpoint_id=uuid.uuid4()).state
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(register, range(count)))


def _licensed(pool):
    return SeatAssignment.objects.filter(pool=pool, state=SeatState.LICENSED).count()


def test_L5_fifty_parallel_registrations_against_twenty_seats(platform):
    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=20)
    results = _race([customer], 50)
    assert results.count("licensed") == 20 and results.count("trial") == 30
    pool = pool_of(customer)
    assert pool.used == 20 == _licensed(pool)
    assert SeatAssignment.objects.filter(company=customer, state=SeatState.TRIAL).count() == 30
    assert connection.vendor == "postgresql"


def test_L5_nested_pools_under_concurrency(platform):
    msp = make_partner(parent=platform)
    reservation_set(actor=None, company=msp, seats=30)
    reserved = make_company(parent=msp)
    reservation_set(actor=None, company=reserved, seats=10)  # carved: 20 seats left for the shared members
    shared_a, shared_b = make_company(parent=msp), make_company(parent=msp)
    results = _race([reserved, shared_a, shared_b], 60)  # 20 each
    msp_pool, reserved_pool = pool_of(msp), pool_of(reserved)
    assert reserved_pool.used == 10 == _licensed(reserved_pool)
    assert msp_pool.used == 20 == _licensed(msp_pool)
    assert (msp_pool.used + msp_pool.carved) <= msp_pool.capacity
    assert results.count("licensed") == 30 and results.count("trial") == 30


# --- a registration meeting a change of the pool it draws from (L1, L2, L5, H5) --------------------------

def _waiting_on_a_lock(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
            row = cursor.fetchone()
        if row and row[0] == "Lock":
            return True
        time.sleep(0.02)
    return False


def _register_during(change, token: str):
    """`change` holds its locks until a registration on another connection waits on one of them
    (_during). Returns whether the registration waited, and the registration."""
    return _during(change, lambda: agent_register(
        install_token=token, hardware_id=f"HW-{uuid.uuid4()}", hostname="h", os_family="windows",
        os_type="workstation", machine_type="physical"))


@pytest.mark.parametrize(("seats", "state"), [(2, SeatState.LICENSED), (0, SeatState.TRIAL)])
def test_L1_L2_L5_registration_during_a_new_reservation_draws_only_on_the_reservation(platform, seats, state):
    """A registration that started while the company drew on the shared pool, and reaches the seat
    while the company's first reservation is being committed, takes its seat from the reservation
    (or enters trial there), never from the parent's pool: the pool is decided under the lock."""
    platform_seats_set(actor=None, seats=10)
    partner = make_partner(parent=platform)
    customer = make_company(parent=partner)
    token = install_token_for(company=customer).token
    shared = pool_of(customer)
    assert shared.owner_id == platform.pk

    waited, registration = _register_during(
        lambda: reservation_set(actor=None, company=customer, seats=seats), token)

    assert waited, "the registration never waited for the reservation: the interleaving did not happen"
    own = SeatPool.objects.get(owner=customer)
    row = SeatAssignment.objects.get(company=customer, endpoint_id=registration.endpoint_id)
    assert (row.pool_id, row.state, registration.seat.state) == (own.pk, state, state)
    shared.refresh_from_db()
    assert (shared.used, shared.carved) == (0, seats)
    assert own.used == (1 if state == SeatState.LICENSED else 0) == _licensed(own)


def test_H5_L2_L5_registration_during_a_move_draws_on_the_new_partners_pool(platform):
    """A registration that reaches the seat while its company is being moved under a partner with a
    reservation takes the seat from that partner's pool, not from the pool it is leaving."""
    platform_seats_set(actor=None, seats=10)
    old_partner, new_partner = make_partner(parent=platform), make_partner(parent=platform)
    reservation_set(actor=None, company=new_partner, seats=3)
    customer = make_company(parent=old_partner)
    token = install_token_for(company=customer).token
    shared, reserved = pool_of(customer), pool_of(new_partner)

    waited, registration = _register_during(
        lambda: company_move(company=customer, new_parent=new_partner), token)

    assert waited, "the registration never waited for the move: the interleaving did not happen"
    row = SeatAssignment.objects.get(company=customer, endpoint_id=registration.endpoint_id)
    assert (row.pool_id, row.state) == (reserved.pk, SeatState.LICENSED)
    shared.refresh_from_db()
    reserved.refresh_from_db()
    assert (shared.used, shared.carved) == (0, 3)
    assert reserved.used == 1 == _licensed(reserved)


def _during(change, action):
    """`change` runs in a transaction on one connection and keeps it open until `action`, on another
    connection, is waiting on one of its locks; then it commits. Returns whether `action` waited, and
    what it returned."""
    waited, _, acted = _hold_then(change, lambda: None, action)
    return waited, acted


def test_L4_L5_a_trial_expiring_during_a_promotion_stays_expired_and_takes_no_seat(platform):
    """L4/L5: the promotion chose a trial that the daily expiry was expiring at that moment; once the
    expiry commits, the endpoint stays expired and the pool counts no seat for it (before: the UPDATE
    by id alone licensed the expired endpoint)."""
    from licensing.seats import seat_pool_promote, seats_expire_trials

    platform_seats_set(actor=None, seats=0)
    customer = make_company(parent=platform)
    endpoint = uuid.uuid4()
    assert seat_assign(company=customer, endpoint_id=endpoint).state == SeatState.TRIAL
    pool = pool_of(customer)
    SeatPool.objects.filter(pk=pool.pk).update(capacity=1)  # a seat frees up; nobody promoted yet

    waited, promoted = _during(lambda: seats_expire_trials(today=dt.date(2100, 1, 1)),
                               lambda: seat_pool_promote(pool=pool))

    assert waited, "the promotion never waited for the expiry: the interleaving did not happen"
    assert promoted == 0
    assert SeatAssignment.objects.get(endpoint_id=endpoint).state == SeatState.EXPIRED
    pool.refresh_from_db()
    assert pool.used == 0 == _licensed(pool)


def test_L3_L5_a_reservation_during_its_parents_first_reservation_carves_from_the_parents_new_pool(platform):
    """L3/L5: a customer reserving while its partner's first reservation is being committed carves from
    the partner's new pool and takes its endpoints' seats from there (before: it read the platform's
    pool, waited on it, then carved from the platform and left its seats counted in the partner's)."""
    platform_seats_set(actor=None, seats=20)
    partner = make_partner(parent=platform)
    customer = make_company(parent=partner)
    for _ in range(2):
        seat_assign(company=customer, endpoint_id=uuid.uuid4())

    waited, _ = _during(lambda: reservation_set(actor=None, company=partner, seats=10),
                        lambda: reservation_set(actor=None, company=customer, seats=3))

    assert waited, "the customer's reservation never waited for its partner's: the interleaving did not happen"
    platform_pool, partner_pool, own = pool_of(platform), pool_of(partner), pool_of(customer)
    assert (platform_pool.used, platform_pool.carved) == (0, 10)
    assert (partner_pool.capacity, partner_pool.used, partner_pool.carved) == (10, 0, 3)
    assert (own.owner_id, own.capacity, own.used) == (customer.pk, 3, 2)
    for pool in (platform_pool, partner_pool, own):
        assert pool.used == _licensed(pool)


def test_L4_L5_a_release_locks_the_pool_before_its_endpoint_so_a_promotion_does_not_deadlock(platform):
    """L4/L5: a promotion (or a reservation) holds the pool and then locks trial rows; a release of one
    of those trials used to lock its row first and then wait for the pool: a deadlock, one of the two
    failed. The release now waits for the pool before it locks anything."""
    platform_seats_set(actor=None, seats=0)
    customer = make_company(parent=platform)
    endpoint = uuid.uuid4()
    seat_assign(company=customer, endpoint_id=endpoint)
    pool = pool_of(customer)
    holding, go_on, pids = threading.Event(), threading.Event(), []

    def promotion():
        try:
            with transaction.atomic():
                SeatPool.objects.select_for_update().get(pk=pool.pk)
                holding.set()
                assert go_on.wait(timeout=30)
                return len(list(SeatAssignment.objects.select_for_update().filter(endpoint_id=endpoint)))
        finally:
            connections.close_all()

    def release():
        try:
            assert holding.wait(timeout=30)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            return seat_release(company=customer, endpoint_id=endpoint)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=2) as threads:
        promoting, releasing = threads.submit(promotion), threads.submit(release)
        try:
            while not pids and not releasing.done():
                time.sleep(0.01)
            assert pids and _waiting_on_a_lock(pids[0])
        finally:
            go_on.set()
        assert promoting.result(timeout=60) == 1
        releasing.result(timeout=60)
    assert not SeatAssignment.objects.filter(endpoint_id=endpoint).exists()


def _hold_then(first, then, action):
    """On one connection `first` runs in a transaction and holds its locks until `action`, on another
    connection, waits on one of them; then `then` runs in the same transaction. Returns whether `action`
    waited, and what each returned (a deadlock makes one of them raise)."""
    holding, go_on, pids = threading.Event(), threading.Event(), []

    def hold():
        try:
            with transaction.atomic():
                first()
                holding.set()
                assert go_on.wait(timeout=30)
                return then()
        finally:
            connections.close_all()

    def act():
        try:
            assert holding.wait(timeout=30)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            return action()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=2) as threads:
        held, acted = threads.submit(hold), threads.submit(act)
        try:
            while not pids and not acted.done():
                time.sleep(0.01)
            waited = bool(pids) and _waiting_on_a_lock(pids[0])
        finally:
            go_on.set()
        return waited, held.result(timeout=60), acted.result(timeout=60)


def test_H4_L5_a_suspension_meeting_a_reservation_does_not_deadlock(platform):
    """H4/L5: the suspension locks the company row (company_set_status) and its hook then expired the
    seats after updating the company's licence; a reservation holding that licence waits for the company
    row: a deadlock, one of the two failed. The hooks now lock no licence row."""
    from companies.models import Company
    from companies.services import company_set_status

    platform_seats_set(actor=None, seats=10)
    customer = make_company(parent=platform)
    endpoints = [uuid.uuid4() for _ in range(2)]
    for endpoint in endpoints:
        seat_assign(company=customer, endpoint_id=endpoint)

    waited, suspended, reserved = _hold_then(
        lambda: Company.objects.select_for_update().get(pk=customer.pk),
        lambda: company_set_status(actor=None, company=customer, status="suspended"),
        lambda: reservation_set(actor=None, company=customer, seats=3))

    assert waited, "the reservation never waited for the suspension: the interleaving did not happen"
    assert suspended.status == "suspended" and reserved.reserved_seats == 3
    assert set(SeatAssignment.objects.filter(company=customer).values_list("state", flat=True)) == {"expired"}
    own = pool_of(customer)
    assert (own.capacity, own.used) == (3, 0) == (3, _licensed(own))
    company_set_status(actor=None, company=customer, status="active")
    assert set(SeatAssignment.objects.filter(company=customer).values_list("state", flat=True)) == {"licensed"}
    assert pool_of(customer).used == 2 == _licensed(pool_of(customer))


def test_H4_L5_a_suspension_meeting_a_release_does_not_deadlock(platform):
    """H4/L5: a release locks the pool, then its endpoint's row (seat_release); the suspension's hook
    locked the company's seat rows, then their pools: a deadlock, one of the two failed. The hook now
    locks the pools first, then the rows, and checks that their pools did not change meanwhile."""
    from companies.services import company_set_status

    customer = make_company(parent=platform)
    reservation_set(actor=None, company=customer, seats=2)
    released, kept = uuid.uuid4(), uuid.uuid4()
    for endpoint in (released, kept):
        assert seat_assign(company=customer, endpoint_id=endpoint).state == SeatState.LICENSED
    pool = pool_of(customer)

    waited, _, suspended = _hold_then(
        lambda: SeatPool.objects.select_for_update().get(pk=pool.pk),
        lambda: seat_release(company=customer, endpoint_id=released),
        lambda: company_set_status(actor=None, company=customer, status="suspended"))

    assert waited, "the suspension never waited for the release: the interleaving did not happen"
    assert suspended.status == "suspended"
    assert list(SeatAssignment.objects.filter(company=customer).values_list("endpoint_id", "state")) == [
        (kept, SeatState.EXPIRED)]
    pool.refresh_from_db()
    assert pool.used == 0 == _licensed(pool)
