"""T5, L4, U1: an endpoint counts with what it ran while it held a seat. Trials are free (L4) and an
expired endpoint is no longer counted as protected from the moment it expires (T5), so an endpoint
whose seat began or ended during the month is counted from the endpoint-days on which it held it
(a day with activity on both sides of the moment counts whole), and not at all when it was active
only outside its seat."""

import datetime as dt

import pytest
from freezegun import freeze_time

from companies.models import CompanyStatus
from companies.services import company_set_status
from licensing.entitlements import entitlements_set
from licensing.models import SeatAssignment
from licensing.seats import reservation_set, seats_promote_all
from reports.builder import report_build
from tests.factories import make_company, make_user
from tests.usage.fleet import Machine
from usage.models import CompanyMonthUsage
from usage.rollups import usage_company_rollup

pytestmark = pytest.mark.django_db

NOV = dt.date(2026, 11, 1)
ALL = ("endpoint_security", "a_la_carte", "patch_management", "full_disk_encryption",
       "advanced_threat_security", "edr", "integrity_monitoring", "sve", "container_protection")


def on(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, tzinfo=dt.UTC)


def company_with(parent, *keys):
    company = make_company(parent=parent)
    entitlements_set(actor=None, company=company, purpose="own", keys=set(keys))
    return company


def usage(company):
    usage_company_rollup(company_id=company.pk, months=[NOV])
    return CompanyMonthUsage.objects.get(company=company, month=NOV)


def _in_trial_until_the_25th(platform, **machine):
    company = company_with(platform, *ALL)
    reservation_set(actor=None, company=company, seats=0)
    with freeze_time("2026-11-01 09:00:00"):
        endpoint = Machine(company, **machine)
    assert SeatAssignment.objects.get(endpoint_id=endpoint.id).state == "trial"
    return company, endpoint


def _licensed_takes_its_seat_on_the_25th(company):
    with freeze_time("2026-11-25 00:00:00"):
        reservation_set(actor=None, company=company, seats=1)
        seats_promote_all()


def test_T5_U7_uptime_after_the_endpoint_expired_is_not_billed(platform):
    with freeze_time("2026-10-20 09:00:00"):
        company = company_with(platform, *ALL)
        desktop = Machine(company, machine_type="virtual")
    desktop.beat(on(5), scan="central", uptime=3600)
    with freeze_time("2026-11-10 00:00:00"):
        company_set_status(actor=None, company=company, status=CompanyStatus.SUSPENDED)
    for day in range(11, 21):
        desktop.beat(on(day), scan="central", uptime=86_400)
    row = usage(company)
    assert (row.licensed_endpoints, row.sve_vdi_hours, row.active_endpoints) == (1, 1, 1)


def test_L4_U7_uptime_in_trial_is_free_once_the_endpoint_takes_a_seat(platform):
    company, desktop = _in_trial_until_the_25th(platform, machine_type="virtual")
    for day in range(1, 25):
        desktop.beat(on(day), scan="central", uptime=86_400)
    _licensed_takes_its_seat_on_the_25th(company)
    desktop.beat(on(25), scan="central", uptime=3600)
    assert usage(company).sve_vdi_hours == 1


def test_L4_U1_U3_an_endpoint_active_only_in_trial_adds_nothing_though_it_takes_a_seat_later(platform):
    company, endpoint = _in_trial_until_the_25th(platform)
    for day in range(1, 11):
        endpoint.beat(on(day), modules=["antimalware", "patch_management"])
    _licensed_takes_its_seat_on_the_25th(company)
    row = usage(company)
    assert (row.active_endpoints, row.licensed_endpoints, row.endpoint_usage, row.patch_management) == (1, 0, 0, 0)


def test_T5_U1_an_endpoint_active_only_after_it_expired_adds_nothing(platform):
    with freeze_time("2026-10-20 09:00:00"):
        company = company_with(platform, *ALL)
        endpoint = Machine(company)
    with freeze_time("2026-11-10 00:00:00"):
        company_set_status(actor=None, company=company, status=CompanyStatus.SUSPENDED)
    endpoint.beat(on(15), modules=["antimalware", "edr", "patch_management"])
    row = usage(company)
    assert (row.active_endpoints, row.licensed_endpoints, row.endpoint_usage, row.edr) == (1, 0, 0, 0)


def test_T5_U3_modules_count_from_the_days_the_seat_was_held_and_the_report_agrees(platform):
    """Licensed until the 10th with antimalware; EDR appears on the 15th, after it expired: endpoint usage
    counts it, EDR does not; the report's endpoint row and drill-downs say the same (R2, R3)."""
    with freeze_time("2026-10-20 09:00:00"):
        company = company_with(platform, *ALL)
        endpoint = Machine(company)
        other = Machine(company)  # licensed all month: unchanged
    endpoint.beat(on(3), modules=["antimalware"])
    other.beat(on(3), modules=["antimalware", "edr"])
    with freeze_time("2026-11-10 00:00:00"):
        company_set_status(actor=None, company=company, status=CompanyStatus.SUSPENDED)
    endpoint.beat(on(15), modules=["antimalware", "edr"], uptime=7200)
    row = usage(company)
    assert (row.licensed_endpoints, row.endpoint_usage, row.edr) == (2, 2, 1)

    report = report_build(actor=make_user(company=platform), company=company, month=NOV)
    assert {str(r["endpoint_id"]) for r in report.endpoints_behind(column="edr", company=company)} == {str(other.id)}
    assert {str(r["endpoint_id"]) for r in report.endpoints_behind(column="endpoint_usage", company=company)} \
        == {str(endpoint.id), str(other.id)}
    details = {str(r["endpoint_id"]): r for r in report.endpoints()}
    assert details[str(endpoint.id)]["licensed"] == "Yes"
    assert details[str(endpoint.id)]["m_edr"] == "No"  # what it ran while it held the seat
    assert details[str(endpoint.id)]["uptime_seconds"] == 600  # the 3rd's heartbeat, not the 15th's 7,200 s
    edr_days = {day.day: n for day, n in next(c for c in report.chart if c.key == "edr").points if n}
    assert edr_days == {3: 1}  # the chart counts the same days: not the 15th, after the expiry


def test_U8_U1_data_retention_charges_only_the_month_s_licensed_endpoints(platform):
    """Registered with a seat on 2 December, with a heartbeat dated 30 November (a wrong clock, an
    import): Data Retention charges it exactly when November's licensed endpoints count it (a seat taken
    at registration covers what was dated before it); it charged it while they did not."""
    with freeze_time("2026-10-20 09:00:00"):
        company = company_with(platform, "endpoint_security", "a_la_carte", "data_retention", "retention_90d")
    with freeze_time("2026-12-02 09:00:00"):
        endpoint = Machine(company)
    endpoint.beat(on(30))
    row = usage(company)
    assert (row.active_endpoints, row.licensed_endpoints, row.data_retention) == (1, 1, {"retention_90d": 1})


def _status(company, status, when):
    with freeze_time(when):
        company_set_status(actor=None, company=company, status=status)


def test_T5_U7_two_suspensions_in_a_month_bill_neither(platform):
    """Licensed since October; suspended 5-10 and 15-20 November: the desktop's uptime while suspended is
    billed in neither gap (each seat spell is kept apart; one span over both billed the first gap)."""
    with freeze_time("2026-10-20 09:00:00"):
        company = company_with(platform, *ALL)
        desktop = Machine(company, machine_type="virtual")
    desktop.beat(on(3), scan="central", uptime=3600)
    _status(company, CompanyStatus.SUSPENDED, "2026-11-05 00:00:00")
    for day in range(6, 10):
        desktop.beat(on(day), scan="central", uptime=86_400, modules=["antimalware", "edr"])
    _status(company, CompanyStatus.ACTIVE, "2026-11-10 00:00:00")
    desktop.beat(on(12), scan="central", uptime=3600)
    _status(company, CompanyStatus.SUSPENDED, "2026-11-15 00:00:00")
    for day in range(16, 20):
        desktop.beat(on(day), scan="central", uptime=86_400)
    _status(company, CompanyStatus.ACTIVE, "2026-11-20 00:00:00")
    desktop.beat(on(22), scan="central", uptime=3600)
    row = usage(company)
    assert (row.licensed_endpoints, row.sve_vdi_hours, row.edr) == (1, 3, 0)
    october = dt.date(2026, 10, 1)
    desktop.beat(dt.datetime(2026, 10, 25, 12, tzinfo=dt.UTC))
    usage_company_rollup(company_id=company.pk, months=[october])
    assert CompanyMonthUsage.objects.get(company=company, month=october).licensed_endpoints == 1


def test_U1_a_seat_taken_at_registration_counts_the_same_before_and_after_a_suspension(platform):
    """Licensed at registration on 10 November with a heartbeat dated 20 October (a wrong clock, an
    import): a seat taken at registration covers what was dated before it, in its current spell and once
    it is kept as an earlier spell after a suspension alike (October read 0, then 1 after the revival)."""
    oct_ = dt.date(2026, 10, 1)
    with freeze_time("2026-09-20 12:00:00"):
        company = company_with(platform, "endpoint_security", "a_la_carte")
    with freeze_time("2026-11-10 12:00:00"):
        endpoint = Machine(company)
    endpoint.beat(dt.datetime(2026, 10, 20, 12, tzinfo=dt.UTC))
    endpoint.beat(on(10))
    usage_company_rollup(company_id=company.pk, months=[oct_, NOV])
    before = CompanyMonthUsage.objects.get(company=company, month=oct_).licensed_endpoints
    _status(company, CompanyStatus.SUSPENDED, "2026-11-20 12:00:00")
    _status(company, CompanyStatus.ACTIVE, "2026-11-25 12:00:00")
    usage_company_rollup(company_id=company.pk, months=[oct_])
    assert before == CompanyMonthUsage.objects.get(company=company, month=oct_).licensed_endpoints == 1


def test_H4_a_revival_survives_clocks_that_disagree_by_a_minute(platform):
    """The promotion (a worker) stamped 12:01, the suspension (the web) 12:00: the seat kept as an earlier
    spell must not make the reactivation fail."""
    with freeze_time("2026-11-01 09:00:00"):
        company = company_with(platform, "endpoint_security", "a_la_carte")
        reservation_set(actor=None, company=company, seats=0)
        Machine(company)  # trial
    with freeze_time("2026-11-10 12:01:00"):
        reservation_set(actor=None, company=company, seats=1)
        seats_promote_all()
    _status(company, CompanyStatus.SUSPENDED, "2026-11-10 12:00:00")
    _status(company, CompanyStatus.ACTIVE, "2026-11-25 12:00:00")
    assert SeatAssignment.objects.get(company=company).state == "licensed"
