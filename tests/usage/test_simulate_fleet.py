"""`manage.py simulate_fleet` against a live server: endpoints registered with the install token and
heartbeats sent through the real agent HTTP API (T1, T2), counted into usage; a second run changes
nothing (T4, T7)."""

import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django_tenants.utils import tenant_context

from licensing.entitlements import entitlements_set
from licensing.models import SeatAssignment
from tests.factories import make_company
from usage.management.commands.simulate_fleet import machine_for
from usage.models import CompanyMonthUsage
from usage.rollups import month_start
from usage.telemetry.models import Endpoint, Heartbeat

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("simulate_fleet", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def expected_heartbeats(days: int, per_day: int, now: dt.datetime) -> int:
    """Heartbeats falling at or before `now`: whole earlier days plus today's slots so far."""
    step = 86400 // per_day
    seconds_today = now.hour * 3600 + now.minute * 60 + now.second
    return (days - 1) * per_day + sum(1 for i in range(per_day) if step * i + step // 2 <= seconds_today)


def test_T1_T2_T4_T7_simulate_fleet_through_the_http_api(live_server, platform):
    first = make_company(parent=platform, name="Sim One")
    second = make_company(parent=platform, name="Sim Two")
    for company in (first, second):
        entitlements_set(actor=None, company=company, purpose="own",
                         keys={"endpoint_security", "a_la_carte", "patch_management"})
    args = ["--url", live_server.url, "--company", str(first.pk), "--company", str(second.pk), "--endpoints", "6",
            "--days", "2", "--heartbeats-per-day", "6", "--batch", "5", "--threads", "3"]
    output = run(*args)
    assert "12 endpoints registered, 0 already known" in output
    assert "heartbeats:" in output and "100%" in output  # the progress bar ran to the end

    now = dt.datetime.now(dt.UTC)
    per_endpoint = expected_heartbeats(2, 6, now)
    for company in (first, second):
        with tenant_context(company):
            assert Endpoint.objects.count() == 6
            assert Heartbeat.objects.count() == 6 * per_endpoint
            hostnames = set(Endpoint.objects.values_list("hostname", flat=True))
        assert hostnames == {machine_for(company, n, 1).hostname for n in range(6)}
        assert SeatAssignment.objects.filter(company=company).count() == 6
        usage = CompanyMonthUsage.objects.get(company=company, month=month_start(now))
        machines = [machine_for(company, n, 1) for n in range(6)]
        assert usage.active_endpoints == usage.licensed_endpoints == 6
        assert usage.patch_management == sum("patch_management" in m.modules for m in machines)
        # U2: antimalware everywhere, minus central-scan virtual machines (SVE not enabled: no deduction)
        assert usage.endpoint_usage == 6

    # T4, T7: the same machines and heartbeats again; nothing new is counted
    before = {c.pk: CompanyMonthUsage.objects.get(company=c, month=month_start(now)).endpoint_usage
              for c in (first, second)}
    again = run(*args)
    assert "0 endpoints registered, 12 already known" in again
    stored_again = int(again.split(" heartbeats stored")[0].rsplit(" ", 1)[1])
    assert stored_again <= 12  # at most a heartbeat slot that came due between the runs, per endpoint
    for company in (first, second):
        with tenant_context(company):
            assert Endpoint.objects.count() == 6
        assert SeatAssignment.objects.filter(company=company).count() == 6
        assert CompanyMonthUsage.objects.get(company=company, month=month_start(now)).endpoint_usage == \
            before[company.pk]
    assert connection.schema_name == "public"


def test_X2_simulate_fleet_refuses_bad_options(platform):
    with pytest.raises(CommandError, match="--url"):
        run("--endpoints", "2")
    with pytest.raises(CommandError, match="--batch: from 1 to 1000"):
        run("--local", "--batch", "5000")
    with pytest.raises(CommandError, match="--days: from 1 to 35, not 36"):  # the agent API's late window
        run("--local", "--days", "36")
    with pytest.raises(CommandError, match="no company with id 999999"):
        run("--local", "--company", "999999")
    with pytest.raises(CommandError, match="--url: give the console's address"):
        run("--url", "ftp://example", "--company", str(platform.pk))


def test_simulate_fleet_local_mode_counts_earlier_days_as_licensed(platform):
    company = make_company(parent=platform, name="Sim Local")
    entitlements_set(actor=None, company=company, purpose="own", keys={"endpoint_security", "a_la_carte"})
    output = run("--local", "--company", str(company.pk), "--endpoints", "3", "--days", "35", "--no-progress")
    assert "3 endpoints registered" in output and "0 rejected" in output
    previous = month_start(month_start(dt.datetime.now(dt.UTC)) - dt.timedelta(days=1))
    usage = CompanyMonthUsage.objects.get(company=company, month=previous)
    assert usage.active_endpoints == usage.licensed_endpoints == 3
