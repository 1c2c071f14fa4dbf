"""Issue 4's "Done when" items that the rule-by-rule files left open: the clock moved across month
and year ends for installs over the agent API (L4, T1), the exact 50-against-20 race for nested
pools (L5), and a change of partner that would break S2 (H5)."""

import datetime as dt
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.exceptions import ValidationError
from django.db import connections
from freezegun import freeze_time

from companies.models import Company, CompanyStatus
from companies.services import company_move
from licensing.models import SeatAssignment, SeatState
from licensing.seats import license_of, pool_of, reservation_set, seat_assign
from licensing.subscriptions import licensing_daily, subscription_set
from tests.factories import make_company, make_partner
from usage.agent import install_token_for

REGISTER = "/api/agent/v1/register"
HEARTBEATS = "/api/agent/v1/heartbeats"


def _register(client, company):
    body = {"hardware_id": f"hw-{uuid.uuid4()}", "hostname": "pc", "os_family": "windows",
            "os_type": "workstation", "machine_type": "physical"}
    response = client.post(REGISTER, data=json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {install_token_for(company=company).token}")
    assert response.status_code == 201, response.content
    return response.json()


def _seat_answer(client, agent_token):
    response = client.post(HEARTBEATS, data=json.dumps({"heartbeats": []}), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {agent_token}")
    assert response.status_code == 200, response.content
    return response.json()["seat"]


@pytest.mark.django_db
def test_L4_T1_trial_end_follows_the_clock_across_month_and_year_ends(client, platform):
    """Registrations under a moving clock (no date handed in): the trial runs to the end of the
    month after the install, the last second of a year and the first of the next differ by a
    month, and the daily run expires each trial the day after its last day."""
    customer = make_company(parent=platform, name="Clockwork")
    reservation_set(actor=None, company=customer, seats=0)
    answers = {}
    for moment in ("2026-11-30 23:59:59", "2026-12-01 00:00:00", "2026-12-31 23:59:59", "2027-01-01 00:00:00",
                   "2027-01-31 12:00:00"):
        with freeze_time(moment):
            answers[moment] = _register(client, customer)
    assert {moment: answer["seat"] for moment, answer in answers.items()} == {
        "2026-11-30 23:59:59": {"state": "trial", "trial_ends_at": "2026-12-31"},
        "2026-12-01 00:00:00": {"state": "trial", "trial_ends_at": "2027-01-31"},
        "2026-12-31 23:59:59": {"state": "trial", "trial_ends_at": "2027-01-31"},
        "2027-01-01 00:00:00": {"state": "trial", "trial_ends_at": "2027-02-28"},
        "2027-01-31 12:00:00": {"state": "trial", "trial_ends_at": "2027-02-28"},
    }

    def daily(day):
        with freeze_time(f"{day} 00:15:00"):
            return licensing_daily()["trials_expired"]

    assert daily("2026-12-31") == 0  # the last day of the first trial is still covered
    assert daily("2027-01-01") == 1  # the day after: expired (T5)
    with freeze_time("2027-01-01 00:20:00"):
        assert _seat_answer(client, answers["2026-11-30 23:59:59"]["agent_token"]) == {
            "state": "expired", "trial_ends_at": None}
        assert _seat_answer(client, answers["2026-12-01 00:00:00"]["agent_token"])["state"] == "trial"
    assert daily("2027-01-31") == 0
    assert daily("2027-02-01") == 2
    assert daily("2027-02-28") == 0  # February's last day, in a common year
    assert daily("2027-03-01") == 2
    assert daily("2027-03-02") == 0
    assert set(SeatAssignment.objects.filter(company=customer).values_list("state", flat=True)) == {"expired"}


@pytest.mark.django_db(transaction=True)
def test_L5_fifty_parallel_registrations_against_twenty_free_seats_of_a_nested_pool(platform):
    """The pool of 20 free seats is a partner's reservation, less a reservation carved out below
    it; the 50 installs come from companies two levels down that share it, each thread on its own
    connection, released together."""
    msp = make_partner(parent=platform, name="Nested MSP")
    reservation_set(actor=None, company=msp, seats=32)
    carved = make_company(parent=msp, name="Carved")
    reservation_set(actor=None, company=carved, seats=12)  # 20 seats left to share
    reseller = make_partner(parent=msp, name="Sub reseller")  # no reservation: shares the MSP's pool
    sharing = [make_company(parent=reseller, name=f"Shop {i}") for i in range(5)]
    barrier = threading.Barrier(50)

    def register(i):
        try:
            barrier.wait(timeout=30)
            return seat_assign(company=sharing[i % len(sharing)], endpoint_id=uuid.uuid4()).state
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=50) as executor:
        results = list(executor.map(register, range(50)))
    assert (results.count(SeatState.LICENSED), results.count(SeatState.TRIAL)) == (20, 30)
    pool = pool_of(sharing[0])
    assert pool.owner_id == msp.pk
    licensed = SeatAssignment.objects.filter(pool=pool, state=SeatState.LICENSED).count()
    assert (pool.capacity, pool.carved, pool.used) == (32, 12, licensed) == (32, 12, 20)
    assert SeatAssignment.objects.filter(pool=pool, state=SeatState.TRIAL).count() == 30
    assert pool_of(carved).used == 0  # the carved reservation lent nothing


@pytest.mark.django_db
def test_H5_S2_move_refused_when_the_new_partner_ends_earlier_without_auto_renewal(platform):
    ending = make_partner(parent=platform, name="Ending MSP")
    subscription_set(actor=None, company=ending, end_date=dt.date(2027, 6, 30), auto_renew=False)
    renewing = make_partner(parent=platform, name="Renewing MSP")
    subscription_set(actor=None, company=renewing, end_date=dt.date(2027, 3, 31), auto_renew=True)
    # a company with its own later end date, allowed under a renewing partner (S2)
    late = make_company(parent=renewing, name="Late Co")
    subscription_set(actor=None, company=late, end_date=dt.date(2027, 12, 31), auto_renew=False)
    with pytest.raises(ValidationError) as refused:
        company_move(company=late, new_parent=ending)
    message = " ".join(refused.value.messages)
    assert "Ending MSP" in message and "2027-06-30" in message and "Late Co (2027-12-31)" in message
    assert Company.objects.get(pk=late.pk).parent_id == renewing.pk
    # the same for a later date further down a moving subtree
    sub = make_partner(parent=renewing, name="Sub")
    deep = make_company(parent=sub, name="Deep Co")
    subscription_set(actor=None, company=deep, end_date=dt.date(2028, 1, 31), auto_renew=False)
    with pytest.raises(ValidationError, match=r"Deep Co \(2028-01-31\)"):
        company_move(company=sub, new_parent=ending)
    # a date within the new partner's, or a new partner that renews, is fine
    early = make_company(parent=renewing, name="Early Co")
    subscription_set(actor=None, company=early, end_date=dt.date(2027, 5, 31), auto_renew=False)
    company_move(company=early, new_parent=ending)
    subscription_set(actor=None, company=ending, end_date=dt.date(2027, 6, 30), auto_renew=True)
    company_move(company=late, new_parent=ending)
    company_move(company=sub, new_parent=ending)
    assert license_of(late).end_date == dt.date(2027, 12, 31)
    assert Company.objects.get(pk=late.pk).status == CompanyStatus.ACTIVE


@pytest.mark.django_db(transaction=True)
def test_L3_L5_parallel_reservations_and_installs_never_oversell_the_parents_pool(platform):
    """Twelve siblings each try to reserve 3 of a partner's 20 seats while 20 installs race for the
    shared rest, each on its own connection: what is carved plus what is used never exceeds the
    pool, the refused reservations say how many seats are available, and the counters equal the
    assignments."""
    msp = make_partner(parent=platform, name="Racing MSP")
    reservation_set(actor=None, company=msp, seats=20)
    siblings = [make_company(parent=msp, name=f"Sibling {i}") for i in range(12)]
    sharing = make_company(parent=msp, name="Sharing")
    barrier = threading.Barrier(32)

    def work(i):
        try:
            barrier.wait(timeout=30)
            if i < 12:
                try:
                    reservation_set(actor=None, company=siblings[i], seats=3)
                except ValidationError as error:
                    return error.message_dict["reserved_seats"][0]
                return "reserved"
            return seat_assign(company=sharing, endpoint_id=uuid.uuid4()).state
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=32) as executor:
        results = list(executor.map(work, range(32)))
    reserved = results[:12].count("reserved")
    refusals = [r for r in results[:12] if r != "reserved"]
    assert all(r.startswith("Only ") and r.endswith(" seats are available to reserve.") for r in refusals)
    pool = pool_of(msp)
    licensed = SeatAssignment.objects.filter(pool=pool, state=SeatState.LICENSED).count()
    assert pool.carved == 3 * reserved
    assert pool.used == licensed == results[12:].count(SeatState.LICENSED)
    assert pool.used + pool.carved <= pool.capacity == 20
    assert results[12:].count(SeatState.TRIAL) == 20 - licensed
    assert sum(license_of(s).reserved_seats or 0 for s in siblings) == pool.carved


@pytest.mark.django_db
def test_X1_L4_daily_trial_expiries_and_promotions_are_audited(platform):
    """The daily run's trial expiries and promotions write the audit log (issue 4: "each writes
    the audit log"), one event per company naming its endpoints, as the system; a second run
    writes nothing."""
    from companies.models import AuditEvent

    expiring = make_company(parent=platform, name="Expiring")
    reservation_set(actor=None, company=expiring, seats=0)
    waiting = make_company(parent=platform, name="Waiting")
    reservation_set(actor=None, company=waiting, seats=1)
    old = [seat_assign(company=expiring, endpoint_id=uuid.uuid4(), now=dt.datetime(2026, 11, 5, tzinfo=dt.UTC))
           for _ in range(2)]
    assert {info.state for info in old} == {SeatState.TRIAL}
    holder, queued = uuid.uuid4(), uuid.uuid4()
    seat_assign(company=waiting, endpoint_id=holder)
    seat_assign(company=waiting, endpoint_id=queued, now=dt.datetime(2027, 1, 2, tzinfo=dt.UTC))
    from licensing.models import SeatPool

    SeatPool.objects.filter(owner=waiting).update(capacity=2)  # a seat freed without its event

    with freeze_time("2027-01-01 00:15:00"):
        counts = licensing_daily()
    assert (counts["trials_expired"], counts["trials_promoted"]) == (2, 1)
    expired = AuditEvent.objects.get(company=expiring, action="license.trials_expire")
    assert expired.actor is None and expired.actor_label == "system"
    assert expired.before["state"] == "trial"
    assert expired.after["state"] == "expired" and expired.after["count"] == 2
    assert sorted(expired.after["endpoint_ids"]) == sorted(
        str(e) for e in SeatAssignment.objects.filter(company=expiring).values_list("endpoint_id", flat=True))
    promoted = AuditEvent.objects.get(company=waiting, action="license.trials_promote")
    assert promoted.before["state"] == "trial"
    assert promoted.after == {"state": "licensed", "count": 1, "endpoint_ids": [str(queued)]}
    events = AuditEvent.objects.count()
    with freeze_time("2027-01-01 06:00:00"):
        licensing_daily()
    assert AuditEvent.objects.count() == events
