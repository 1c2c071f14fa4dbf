"""Every counting rule of the Monthly License Usage (SPEC U1-U15), through the real rollup SQL."""

import datetime as dt
import uuid

import pytest
from django.db import connection
from django_tenants.utils import tenant_context

from licensing.entitlements import entitlements_set
from licensing.seats import reservation_set
from tests.factories import make_company, make_partner
from tests.usage.fleet import Machine, mailbox
from usage.models import CompanyMonthUsage, EndpointDay, LateAdjustment
from usage.rollups import heartbeats_pending, usage_company_rollup, usage_month_close

pytestmark = pytest.mark.django_db

NOV = dt.date(2026, 11, 1)
DAY = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC)


def company_with(platform, *keys, **kwargs):
    company = make_company(parent=platform, **kwargs)
    entitlements_set(actor=None, company=company, purpose="own", keys=set(keys))
    return company


def usage(company, month=NOV):
    usage_company_rollup(company_id=company.pk, months=[month])
    return CompanyMonthUsage.objects.get(company=company, month=month)


ALL_ADDONS = ("endpoint_security", "a_la_carte", "patch_management", "full_disk_encryption",
              "advanced_threat_security", "edr", "integrity_monitoring", "sve", "container_protection",
              "security_for_exchange", "email_security")


def test_U1_licensed_endpoints_held_a_seat_in_the_month(platform):
    company = company_with(platform, *ALL_ADDONS)
    reservation_set(actor=None, company=company, seats=2)
    for _ in range(3):
        Machine(company).beat(DAY)
    Machine(company, os_type="server", machine_type="virtual").beat(DAY)  # trial: no seat
    figures = usage(company)
    assert (figures.active_endpoints, figures.licensed_endpoints) == (4, 2)


def _suspended_and_back(platform):
    """A and B share their partner's one seat. A's endpoint holds it from 5 October; A is suspended on
    10 November, B's new endpoint takes the freed seat, A returns on 20 November with its endpoint in
    trial. Returns (partner, A, A's endpoint)."""
    from freezegun import freeze_time

    from companies.models import CompanyStatus
    from companies.services import company_set_status
    from licensing.models import SeatAssignment, SeatState

    partner = make_partner(parent=platform)
    entitlements_set(actor=None, company=partner, purpose="resell", keys=set(ALL_ADDONS))
    reservation_set(actor=None, company=partner, seats=1)
    a, b = make_company(parent=partner), make_company(parent=partner)
    for company in (a, b):
        entitlements_set(actor=None, company=company, purpose="own", keys=set(ALL_ADDONS))
    with freeze_time("2026-10-05 09:00:00"):
        endpoint = Machine(a)
    with freeze_time("2026-11-10 09:00:00"):
        company_set_status(actor=None, company=a, status=CompanyStatus.SUSPENDED)
    with freeze_time("2026-11-15 09:00:00"):
        Machine(b)  # takes the freed seat
    with freeze_time("2026-11-20 09:00:00"):
        company_set_status(actor=None, company=a, status=CompanyStatus.ACTIVE)
    assert SeatAssignment.objects.get(company=a, endpoint_id=endpoint.id).state == SeatState.TRIAL
    return partner, a, endpoint


def test_U1_H4_a_seat_held_before_a_suspension_counts_only_in_the_months_it_covered(platform):
    """A's endpoint held a seat in November (1-10) and reported then, so November counts it; in December
    it is in trial and is not licensed. Reporting in November only after the seat was gone (the 25th, in
    trial) does not count it (T5, L4: tests/usage/test_seat_spells.py)."""
    _partner, a, endpoint = _suspended_and_back(platform)
    endpoint.beat(dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    endpoint.beat(dt.datetime(2026, 12, 3, tzinfo=dt.UTC))
    december = dt.date(2026, 12, 1)
    assert usage(a).licensed_endpoints == 0  # active in November only while in trial
    endpoint.beat(dt.datetime(2026, 11, 6, tzinfo=dt.UTC))
    assert usage(a).licensed_endpoints == 1
    assert (usage(a, december).active_endpoints, usage(a, december).licensed_endpoints) == (1, 0)


def test_U1_L4_T7_an_endpoint_that_takes_a_seat_again_counts_in_each_month_it_held_one(platform):
    """October: held a seat. Suspended on 10 November (November counts: it held the seat until then),
    back in trial on 20 November, the trial runs out on 31 December with no seat free (December does
    not count), the partner buys a second seat and the agent registers again on 5 January: licensed
    (January counts) while the months of its first seat still count it."""
    from freezegun import freeze_time

    from licensing.models import SeatAssignment, SeatState
    from licensing.seats import seat_assign, seats_expire_trials

    partner, a, endpoint = _suspended_and_back(platform)
    seats_expire_trials(today=dt.date(2027, 1, 1))
    assert SeatAssignment.objects.get(company=a, endpoint_id=endpoint.id).state == SeatState.EXPIRED
    reservation_set(actor=None, company=partner, seats=2)
    with freeze_time("2027-01-05 09:00:00"):
        assert seat_assign(company=a, endpoint_id=endpoint.id).state == SeatState.LICENSED  # the retake
    for day in (dt.datetime(2026, 10, 20, tzinfo=dt.UTC), dt.datetime(2026, 11, 6, tzinfo=dt.UTC),
                dt.datetime(2026, 12, 15, tzinfo=dt.UTC), dt.datetime(2027, 1, 6, tzinfo=dt.UTC)):
        endpoint.beat(day)
    months = [dt.date(2026, 10, 1), NOV, dt.date(2026, 12, 1), dt.date(2027, 1, 1)]
    assert [(usage(a, m).active_endpoints, usage(a, m).licensed_endpoints) for m in months] == [
        (1, 1), (1, 1), (1, 0), (1, 1)]


def test_U2_core_modules_add_no_usage_only_antimalware(platform):
    company = company_with(platform, *ALL_ADDONS)
    Machine(company).beat(DAY, modules=["antimalware", "firewall", "relay", "power_user"])
    Machine(company).beat(DAY, modules=["firewall", "content_control"])  # no antimalware
    figures = usage(company)
    assert figures.endpoint_usage == 1 and figures.licensed_endpoints == 2


def test_U2_U6_U7_U9_sve_and_container_deductions(platform):
    company = company_with(platform, *ALL_ADDONS)
    Machine(company).beat(DAY)  # physical workstation: endpoint usage
    Machine(company, os_type="server", machine_type="virtual").beat(DAY, scan="central")  # VS
    Machine(company, os_family="linux", os_type="workstation", machine_type="virtual").beat(
        DAY, scan="central")  # Linux VM counts as a server
    Machine(company, os_type="server", machine_type="virtual").beat(DAY, scan="hybrid")  # no central scan
    Machine(company, machine_type="virtual").beat(DAY, scan="central", uptime=3600)  # VDI
    Machine(company, os_type="server", machine_type="virtual", container_host=True).beat(
        DAY, modules=["antimalware", "container_protection"], scan="central")  # container on a VS
    Machine(company, os_type="server", container_host=True).beat(
        DAY, modules=["antimalware", "container_protection"])  # container on a physical server
    figures = usage(company)
    assert figures.sve_vs == 2  # 3 central-scan virtual servers minus the container on one (U9)
    assert figures.sve_vdi_hours == 1
    assert figures.container_protection == 2
    # physical workstation + hybrid virtual server; container on physical deducted from here (U9)
    assert figures.endpoint_usage == 2


def test_U2_without_sve_central_scan_machines_are_endpoint_usage(platform):
    company = company_with(platform, "endpoint_security", "a_la_carte")
    Machine(company, os_type="server", machine_type="virtual").beat(DAY, scan="central")
    figures = usage(company)
    assert figures.endpoint_usage == 1 and figures.sve_vs == 0
    assert "sve" not in figures.enabled


def test_U3_addon_counts_module_at_any_time_in_month(platform):
    company = company_with(platform, *ALL_ADDONS)
    machine = Machine(company)
    machine.beat(DAY, modules=["antimalware", "patch_management"])
    machine.beat(DAY + dt.timedelta(days=5), modules=["antimalware", "full_disk_encryption"])
    Machine(company).beat(DAY, modules=["antimalware", "edr", "integrity_monitoring"])
    figures = usage(company)
    assert (figures.patch_management, figures.full_disk_encryption, figures.edr,
            figures.integrity_monitoring) == (1, 1, 1, 1)


def test_U4_ats_counted_once_source_example(platform):
    """7 endpoints with both HyperDetect and Sandbox Analyzer plus 2 with HyperDetect only: 9."""
    company = company_with(platform, *ALL_ADDONS)
    for _ in range(7):
        Machine(company).beat(DAY, modules=["antimalware", "hyperdetect", "sandbox_analyzer"])
    for _ in range(2):
        Machine(company).beat(DAY, modules=["antimalware", "hyperdetect"])
    figures = usage(company)
    assert figures.ats == 9 and figures.hyperdetect == 9 and figures.sandbox_analyzer == 7
    Machine(company).beat(DAY, modules=["antimalware", "sandbox_analyzer"])  # Sandbox Analyzer only
    figures = usage(company)
    assert (figures.ats, figures.hyperdetect, figures.sandbox_analyzer) == (10, 9, 8)


@pytest.mark.parametrize(("seconds", "hours"), [(107_280, 30), (3_900, 2), (3_600, 1), (3_650, 2), (0, 0)])
def test_U7_vdi_hours_round_up_per_company_and_month(platform, seconds, hours):
    company = company_with(platform, *ALL_ADDONS)
    vdi = Machine(company, machine_type="virtual")
    remaining, when = seconds, DAY
    while remaining > 0:  # at most 86,400 s per heartbeat
        chunk = min(remaining, 86_400)
        vdi.beat(when, scan="central", uptime=chunk)
        remaining -= chunk
        when += dt.timedelta(days=1)
    if seconds == 0:
        vdi.beat(DAY, scan="central", uptime=0)
    assert usage(company).sve_vdi_hours == hours


def test_U7_hours_rounded_once_per_company_not_per_endpoint(platform):
    company = company_with(platform, *ALL_ADDONS)
    for _ in range(3):
        Machine(company, machine_type="virtual").beat(DAY, scan="central", uptime=1_200)
    assert usage(company).sve_vdi_hours == 1  # 3,600 s in all


def test_U5_xdr_per_category(platform):
    company = company_with(platform, "endpoint_security", "a_la_carte", "xdr", "xdr_network", "xdr_identity")
    Machine(company).beat(DAY, sensors=["network"])
    Machine(company).beat(DAY, sensors=["cloud"])  # category not enabled
    Machine(company).beat(DAY)
    figures = usage(company)
    assert figures.xdr_network == 3  # the licensed endpoints
    assert figures.xdr_identity == 0  # enabled, no sensor deployed
    assert figures.xdr_cloud == 0  # deployed, not enabled


def test_U5_disabling_category_shows_next_month(platform):
    company = company_with(platform, "endpoint_security", "a_la_carte", "xdr", "xdr_network")
    Machine(company).beat(DAY, sensors=["network"])
    entitlements_set(actor=None, company=company, purpose="own", keys={"endpoint_security", "a_la_carte", "xdr"})
    assert usage(company).xdr_network == 1  # it was enabled during November


def test_U8_data_retention_upgrade_downgrade_and_offline(platform):
    from freezegun import freeze_time

    base = {"endpoint_security", "a_la_carte", "data_retention"}
    with freeze_time("2026-10-20"):
        company = company_with(platform, *base, "retention_90d")
    early = Machine(company)
    early.beat(dt.datetime(2026, 11, 3, tzinfo=dt.UTC))  # offline before the upgrade
    late = Machine(company)
    late.beat(dt.datetime(2026, 11, 3, tzinfo=dt.UTC))
    with freeze_time("2026-11-12"):  # upgrade: charged from the moment it happens
        entitlements_set(actor=None, company=company, purpose="own", keys=base | {"retention_1y"})
    late.beat(dt.datetime(2026, 11, 20, tzinfo=dt.UTC))
    with freeze_time("2026-11-25"):  # downgrade: from next month
        entitlements_set(actor=None, company=company, purpose="own", keys=base | {"retention_180d"})
    assert usage(company).data_retention == {"retention_90d": 1, "retention_1y": 1}
    late.beat(dt.datetime(2026, 12, 5, tzinfo=dt.UTC))
    assert usage(company, dt.date(2026, 12, 1)).data_retention == {"retention_180d": 1}


def test_U10_mdr_counts_edr_endpoints_when_service_enabled(platform):
    plain = company_with(platform, "endpoint_security", "a_la_carte", "edr")
    Machine(plain).beat(DAY, modules=["antimalware", "edr"])
    assert usage(plain).mdr_foundations == 0
    mdr = company_with(platform, "endpoint_security", "secure", "mdr_foundations")
    Machine(mdr).beat(DAY, modules=["antimalware", "edr"])
    Machine(mdr).beat(DAY)
    assert usage(mdr).mdr_foundations == 1


def test_U11_edr_product_type(platform):
    company = company_with(platform, "edr_standalone")
    Machine(company).beat(DAY, modules=["edr"])
    Machine(company).beat(DAY, modules=["edr"])
    figures = usage(company)
    assert figures.product_type == "edr_standalone" and figures.endpoint_usage == 2
    assert figures.edr == 0  # no add-ons for EDR companies


def test_U12_month_close_freezes_and_late_data_is_an_adjustment(platform):
    company = company_with(platform, *ALL_ADDONS)
    machine = Machine(company)
    machine.beat(DAY)
    assert usage_month_close(month=NOV) >= 1
    frozen = CompanyMonthUsage.objects.get(company=company, month=NOV)
    assert frozen.finalized_at is not None and frozen.endpoint_usage == 1
    Machine(company).beat(DAY)  # arrives after the close (T4: kept, not dropped)
    usage_company_rollup(company_id=company.pk)
    frozen.refresh_from_db()
    assert frozen.endpoint_usage == 1
    assert list(LateAdjustment.objects.filter(company=company).values_list("delta", flat=True)) == [
        {"active_endpoints": 1, "licensed_endpoints": 1, "endpoint_usage": 1}]
    assert usage_month_close(month=NOV) == 0  # re-running the close changes nothing
    usage_company_rollup(company_id=company.pk, months=[NOV])
    assert LateAdjustment.objects.filter(company=company).count() == 1  # no double adjustment


def test_U13_not_enabled_addon_counts_nothing(platform):
    company = company_with(platform, "endpoint_security", "a_la_carte")
    Machine(company).beat(DAY, modules=["antimalware", "patch_management"])
    figures = usage(company)
    assert figures.patch_management == 0 and "patch_management" not in figures.enabled


def test_U14_U15_mailboxes(platform):
    company = company_with(platform, *ALL_ADDONS)
    for i in range(3):
        mailbox(company, NOV, f"ex-{i}", product="exchange", environment="on_premises")
    mailbox(company, NOV, "alice", sent=3)
    mailbox(company, NOV, "bob", object_class="", received=1)
    mailbox(company, NOV, "silent")  # no email in the month
    mailbox(company, NOV, "alias", primary=False, sent=5)
    mailbox(company, NOV, "team", object_class="group", environment="on_premises", sent=2)
    mailbox(company, NOV, "dyn", object_class="msExchDynamicDistributionList", environment="on_premises", sent=2)
    mailbox(company, NOV, "shared", object_class="sharedMailbox", received=9)
    figures = usage(company)
    assert figures.exchange_mailboxes == 3
    assert figures.email_security_mailboxes == 2


def test_T4_rollup_counts_each_heartbeat_once_and_is_idempotent(platform):
    company = company_with(platform, *ALL_ADDONS)
    machine = Machine(company, machine_type="virtual")
    for i in range(4):
        machine.beat(DAY + dt.timedelta(hours=i), scan="central", uptime=1000)
    usage_company_rollup(company_id=company.pk)
    usage_company_rollup(company_id=company.pk)
    day = EndpointDay.objects.get(company=company)
    assert (day.uptime_seconds, day.heartbeats) == (4000, 4)
    assert heartbeats_pending(company=company) == 0
    assert CompanyMonthUsage.objects.get(company=company, month=NOV).sve_vdi_hours == 2


def test_U13_partner_sum_is_read_from_the_subtree_rows(platform):
    partner = make_partner(parent=platform)
    entitlements_set(actor=None, company=partner, purpose="resell", keys={"endpoint_security", "a_la_carte"})
    children = [company_with(partner, "endpoint_security", "a_la_carte") for _ in range(2)]
    for child in children:
        Machine(child).beat(DAY)
        usage(child)
    from django.db.models import Sum

    total = CompanyMonthUsage.objects.filter(company__lineage__startswith=partner.lineage, month=NOV).aggregate(
        Sum("endpoint_usage"))["endpoint_usage__sum"]
    assert total == 2
    assert connection.schema_name == "public"


def test_T4_purge_removes_only_merged_heartbeats_past_the_late_window(platform):
    """Raw heartbeats go once merged and older than the open month and the late window; an unmerged
    one stays whatever its age, and the endpoint-day rows (the lasting record) stay."""
    from usage.rollups import heartbeats_purge
    from usage.telemetry.models import Heartbeat

    company = company_with(platform, *ALL_ADDONS)
    machine = Machine(company)
    machine.beat(DAY)  # merged below, from before the open month: the one to go
    machine.beat(dt.datetime(2027, 1, 5, tzinfo=dt.UTC), heartbeat_id=(open_month := uuid.uuid4()))
    usage_company_rollup(company_id=company.pk)
    machine.beat(DAY, heartbeat_id=(waiting := uuid.uuid4()))  # stored after the rollup: not merged yet
    assert heartbeats_purge(now=dt.datetime(2027, 1, 15, tzinfo=dt.UTC)) == 1
    with tenant_context(company):
        assert set(Heartbeat.objects.values_list("id", flat=True)) == {open_month, waiting}
    assert EndpointDay.objects.filter(company=company, day=DAY.date()).exists()
    assert heartbeats_purge(now=dt.datetime(2026, 12, 1, tzinfo=dt.UTC)) == 0  # inside the late window
