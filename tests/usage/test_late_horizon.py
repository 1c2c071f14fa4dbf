"""T4, U12: the agent API accepts heartbeats back to the late horizon, the earlier of 35 days ago and
the start of the previous month (whose late data still reaches the report made at the start of the
next month), and the purge removes raw heartbeats only below that same horizon, so a resend of a
purged heartbeat is refused, never counted twice."""

import datetime as dt

import pytest
from django_tenants.utils import tenant_context
from freezegun import freeze_time

from licensing.entitlements import entitlements_set
from tests.factories import make_company
from tests.usage.fleet import Machine
from tests.usage.test_agent_api import agent, heartbeat, send, stored
from usage.models import LateAdjustment, late_horizon
from usage.rollups import heartbeats_purge, usage_company_rollup, usage_month_close
from usage.selectors import usage_totals
from usage.telemetry.models import Heartbeat

pytestmark = pytest.mark.django_db

OCT, NOV = dt.date(2026, 10, 1), dt.date(2026, 11, 1)
UTC = dt.UTC


def company_with(platform, *keys):
    company = make_company(parent=platform)
    entitlements_set(actor=None, company=company, purpose="own", keys=set(keys))
    return company


def test_T4_U12_the_horizon_is_the_earlier_of_35_days_ago_and_the_previous_months_start():
    assert late_horizon(dt.datetime(2026, 11, 6, 9, tzinfo=UTC)) == dt.datetime(2026, 10, 1, tzinfo=UTC)
    assert late_horizon(dt.datetime(2026, 12, 1, tzinfo=UTC)) == dt.datetime(2026, 10, 27, tzinfo=UTC)
    assert late_horizon(dt.datetime(2026, 12, 31, 12, tzinfo=UTC)) == dt.datetime(2026, 11, 1, tzinfo=UTC)
    assert late_horizon(dt.datetime(2027, 1, 1, tzinfo=UTC)) == dt.datetime(2026, 11, 27, tzinfo=UTC)


def test_T4_U12_a_heartbeat_of_the_previous_months_first_day_is_accepted_36_days_later_as_a_late_adjustment(
        client, platform):
    with freeze_time("2026-09-20 12:00"):
        company = company_with(platform, "endpoint_security", "a_la_carte")
        _, token = agent(client, company)
    with freeze_time("2026-11-01 00:30"):
        usage_month_close(month=OCT)
    with freeze_time("2026-11-06 09:00"):
        item = heartbeat(observed_at="2026-10-01T12:00:00Z")
        body = send(client, token, [item]).json()
        assert (body["accepted"], body["rejected"]) == (1, [])
        usage_company_rollup(company_id=company.pk)
    adjustment = LateAdjustment.objects.get(company=company)
    assert (adjustment.month, adjustment.reported_in) == (OCT, NOV)
    assert adjustment.delta["active_endpoints"] == 1
    assert usage_totals(company=company, month=NOV)["late_adjustments"]["active_endpoints"] == 1


def test_T4_U12_a_heartbeat_before_the_previous_month_and_older_than_35_days_is_refused_naming_both_times(
        client, platform):
    with freeze_time("2026-09-20 12:00"):
        company = company_with(platform, "endpoint_security", "a_la_carte")
        _, token = agent(client, company)
    with freeze_time("2026-11-06 09:00"):
        body = send(client, token, [heartbeat(observed_at="2026-09-30T23:59:00Z"),
                                    heartbeat(observed_at="2026-10-01T00:00:00Z")]).json()
    assert body["accepted"] == 1
    [refused] = body["rejected"]
    assert refused["index"] == 0
    assert refused["error"].startswith("observed_at: 2026-09-30T23:59:00Z is before the earliest time accepted "
                                       "now, 2026-10-01T00:00:00Z")
    assert [row.observed_at for row in stored(company)] == [dt.datetime(2026, 10, 1, tzinfo=UTC)]


def test_T4_U12_the_purge_keeps_the_previous_months_heartbeats_until_both_bounds_pass(platform):
    company = company_with(platform, "endpoint_security", "a_la_carte")
    machine = Machine(company, now=dt.datetime(2026, 9, 20, tzinfo=UTC))
    with freeze_time("2026-10-01 12:00"):
        machine.beat(dt.datetime(2026, 10, 1, 12, tzinfo=UTC))
    with freeze_time("2026-11-01 00:30"):
        usage_month_close(month=OCT)
    assert heartbeats_purge(now=dt.datetime(2026, 11, 6, 9, tzinfo=UTC)) == 0  # 36 days old, October's
    assert heartbeats_purge(now=dt.datetime(2026, 11, 30, 23, 59, tzinfo=UTC)) == 0
    with tenant_context(company):
        assert Heartbeat.objects.count() == 1
    assert heartbeats_purge(now=dt.datetime(2026, 12, 1, tzinfo=UTC)) == 1  # both bounds passed
    with tenant_context(company):
        assert not Heartbeat.objects.exists()


def test_T4_a_resend_below_where_a_purge_once_reached_is_refused_though_the_late_horizon_is_older(client, platform):
    """A purge that reached further than today's horizon (the rule before the late horizon removed what was
    35 days old even in the previous month; migration usage 0005 records where it may have reached) must not
    let a resend of what it removed be stored and counted again."""
    from usage.models import HeartbeatPurge

    with freeze_time("2026-09-20 12:00"):
        company = company_with(platform, "endpoint_security", "a_la_carte")
        _, token = agent(client, company)
    HeartbeatPurge.objects.create(pk=1, purged_below=dt.datetime(2026, 10, 2, 9, tzinfo=UTC))
    with freeze_time("2026-11-06 09:00"):  # the late horizon alone would accept 1 October on
        body = send(client, token, [heartbeat(observed_at="2026-10-01T12:00:00Z"),
                                    heartbeat(observed_at="2026-10-02T09:00:00Z")]).json()
    assert body["accepted"] == 1
    assert body["rejected"][0]["error"].startswith("observed_at: 2026-10-01T12:00:00Z is before the earliest time "
                                                   "accepted now, 2026-10-02T09:00:00Z")


def test_T4_each_purge_records_how_far_it_reached_before_it_removes_anything(platform):
    from usage.models import HeartbeatPurge, heartbeats_earliest

    heartbeats_purge(now=dt.datetime(2026, 12, 3, tzinfo=UTC))  # horizon 29 October, purged a day below it
    assert HeartbeatPurge.objects.get().purged_below == dt.datetime(2026, 10, 28, tzinfo=UTC)
    heartbeats_purge(now=dt.datetime(2026, 11, 6, tzinfo=UTC))  # a purge with an earlier clock keeps the mark
    assert heartbeats_earliest(dt.datetime(2026, 12, 3, tzinfo=UTC)) == dt.datetime(2026, 10, 29, tzinfo=UTC)
    assert heartbeats_earliest(dt.datetime(2026, 11, 6, tzinfo=UTC)) == dt.datetime(2026, 10, 28, tzinfo=UTC)


def test_T4_the_purge_stays_a_day_below_the_horizon_so_an_ingest_a_moment_before_cannot_race_it(platform):
    """An ingest checks observed_at against the horizon, then inserts; a purge committing in between must
    not remove the original of the resend it is storing: rows a day below the horizon stay."""
    company = company_with(platform, "endpoint_security", "a_la_carte")
    machine = Machine(company, now=dt.datetime(2026, 9, 20, tzinfo=UTC))
    with freeze_time("2026-10-28 12:05"):
        machine.beat(dt.datetime(2026, 10, 28, 12, tzinfo=UTC))  # half a day below the horizon of 3 December
        usage_company_rollup(company_id=company.pk)
    assert heartbeats_purge(now=dt.datetime(2026, 12, 3, tzinfo=UTC)) == 0
    assert heartbeats_purge(now=dt.datetime(2026, 12, 4, 12, tzinfo=UTC)) == 1
