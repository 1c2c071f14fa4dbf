"""SPEC L5: concurrent installs never take more seats than exist (real PostgreSQL, one connection
per thread)."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections

from licensing.models import SeatAssignment, SeatState
from licensing.seats import pool_of, reservation_set, seat_assign
from tests.factories import make_company, make_partner

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
