"""Companies rolled up together in one batch (usage.rollups.usage_rollup_companies): the fan-out's and
the month close's unit of work. A company's figures must not depend on which batch it is in, the
statements must not grow with the batch, and the fan-out must reach every pending company."""

import datetime as dt
import time

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from freezegun import freeze_time

from licensing.entitlements import entitlements_set
from tests.factories import make_company
from tests.usage.fleet import Machine, mailbox
from usage.models import CompanyMonthUsage, LateAdjustment, MonthClose, PendingRollup
from usage.rollups import heartbeats_pending, usage_company_rollup, usage_month_close, usage_rollup_companies

NOV = dt.date(2026, 11, 1)
DAY = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC)
RETENTION = {"endpoint_security", "a_la_carte", "data_retention"}


def _company(platform, *keys):
    with freeze_time("2026-10-20"):
        company = make_company(parent=platform)
        entitlements_set(actor=None, company=company, purpose="own", keys=set(keys))
    return company


# Fleets that exercise different rules, so a batch mixes companies whose statements differ.
def _sve_fleet(platform):
    company = _company(platform, "endpoint_security", "a_la_carte", "sve", "patch_management")
    Machine(company).beat(DAY, modules=["antimalware", "patch_management"])
    Machine(company, os_type="server", machine_type="virtual").beat(DAY, scan="central")
    Machine(company, machine_type="virtual").beat(DAY, scan="central", uptime=107_280)
    return company


def _retention_fleet(platform):
    company = _company(platform, *RETENTION, "retention_90d")
    Machine(company).beat(DAY)
    Machine(company).beat(DAY + dt.timedelta(days=3), modules=["antimalware", "edr"])
    return company


def _mailbox_fleet(platform):
    company = _company(platform, "endpoint_security", "a_la_carte", "security_for_exchange", "email_security")
    mailbox(company, NOV, "a@example.test", product="exchange")
    mailbox(company, NOV, "b@example.test", sent=3)
    Machine(company).beat(DAY)
    return company


def _ats_fleet(platform):
    company = _company(platform, "endpoint_security", "a_la_carte", "advanced_threat_security")
    for _ in range(3):
        Machine(company).beat(DAY, modules=["antimalware", "hyperdetect", "sandbox_analyzer"])
    Machine(company).beat(DAY, modules=["antimalware", "hyperdetect"])
    return company


def _quiet_fleet(platform):  # nothing new: the batch must still recompute its asked-for month
    return _company(platform, "endpoint_security", "a_la_carte")


FLEETS = [_sve_fleet, _retention_fleet, _mailbox_fleet, _ats_fleet, _quiet_fleet]


def _figures(company, month=NOV):
    row = CompanyMonthUsage.objects.get(company=company, month=month)
    return {**{key: getattr(row, key) for key in CompanyMonthUsage.FIGURES},
            "data_retention": row.data_retention, "product_type": row.product_type, "enabled": row.enabled}


@pytest.mark.django_db
def test_U1_U13_a_company_counts_the_same_in_a_batch_as_alone(platform):
    together = [build(platform) for build in FLEETS]
    alone = [build(platform) for build in FLEETS]
    done = usage_rollup_companies(company_ids=[c.pk for c in together], months=[NOV])
    for company in alone:
        usage_company_rollup(company_id=company.pk, months=[NOV])
    assert set(done) == {c.pk for c in together}
    assert all(done[c.pk] == [NOV] for c in together)
    for mixed, single in zip(together, alone, strict=True):
        assert _figures(mixed) == _figures(single)
        assert heartbeats_pending(company=mixed) == 0
    # the figures are the rules' own, not merely equal to each other
    sve, retention, mail, ats, quiet = (_figures(c) for c in together)
    assert (sve["sve_vs"], sve["sve_vdi_hours"], sve["endpoint_usage"], sve["patch_management"]) == (1, 30, 1, 1)
    assert retention["data_retention"] == {"retention_90d": 2}
    assert (mail["exchange_mailboxes"], mail["email_security_mailboxes"]) == (1, 1)
    assert (ats["ats"], ats["hyperdetect"], ats["sandbox_analyzer"]) == (4, 4, 3)
    assert quiet["active_endpoints"] == 0


@pytest.mark.django_db
def test_T4_rerunning_a_batch_changes_nothing_and_new_heartbeats_count_once(platform):
    companies = [build(platform) for build in FLEETS]
    ids = [c.pk for c in companies]
    usage_rollup_companies(company_ids=ids, months=[NOV])
    first = [_figures(c) for c in companies]
    usage_rollup_companies(company_ids=ids, months=[NOV])
    assert [_figures(c) for c in companies] == first
    Machine(companies[4]).beat(DAY)  # one company of the batch gets a new endpoint
    assert usage_rollup_companies(company_ids=ids)[companies[4].pk] == [NOV]
    assert _figures(companies[4])["endpoint_usage"] == 1
    assert [_figures(c) for c in companies[:4]] == first[:4]


@pytest.mark.django_db
def test_U12_a_finalized_month_in_a_batch_gets_a_late_adjustment_not_a_change(platform):
    closed, open_ = _company(platform, "endpoint_security", "a_la_carte"), _quiet_fleet(platform)
    Machine(closed).beat(DAY)
    usage_month_close(month=NOV)
    Machine(closed).beat(DAY)
    Machine(open_).beat(DAY)
    # the close still under way: `open_` not finalized yet (MonthClose is written last)
    CompanyMonthUsage.objects.filter(company=open_).update(finalized_at=None)
    MonthClose.objects.filter(month=NOV).delete()
    usage_rollup_companies(company_ids=[closed.pk, open_.pk])
    assert _figures(closed)["endpoint_usage"] == 1
    assert list(LateAdjustment.objects.filter(company=closed).values_list("delta", flat=True)) == [
        {"active_endpoints": 1, "licensed_endpoints": 1, "endpoint_usage": 1}]
    assert _figures(open_)["endpoint_usage"] == 1
    assert not LateAdjustment.objects.filter(company=open_).exists()


def _late_queries_for(platform, count):
    """Queries to roll up `count` companies whose finalized November got a late heartbeat each."""
    companies = [_company(platform, "endpoint_security", "a_la_carte") for _ in range(count)]
    for company in companies:
        Machine(company).beat(DAY)
    usage_rollup_companies(company_ids=[c.pk for c in companies], months=[NOV])
    CompanyMonthUsage.objects.filter(company__in=companies, month=NOV).update(finalized_at=DAY)
    for n, company in enumerate(companies):
        for _ in range(n % 2 + 1):  # one or two late endpoints: the deltas differ
            Machine(company).beat(DAY)
    with CaptureQueriesContext(connection) as queries:
        usage_rollup_companies(company_ids=[c.pk for c in companies])
    deltas = dict(LateAdjustment.objects.filter(company__in=companies).values_list("company_id", "delta"))
    assert deltas == {c.pk: dict.fromkeys(("active_endpoints", "licensed_endpoints", "endpoint_usage"), n % 2 + 1)
                      for n, c in enumerate(companies)}
    return len(queries)


@pytest.mark.django_db
def test_U12_late_adjustments_of_a_batch_stay_flat_as_it_grows(platform):
    """Late data for finalized months is recorded per company, in the same queries for 1 or 4."""
    _late_queries_for(platform, 1)  # caches warmed
    assert _late_queries_for(platform, 4) == _late_queries_for(platform, 1)


def _queries_for(platform, count):
    companies = [FLEETS[i % len(FLEETS)](platform) for i in range(count)]
    with CaptureQueriesContext(connection) as queries:
        usage_rollup_companies(company_ids=[c.pk for c in companies], months=[NOV])
    return len(queries)


@pytest.mark.django_db
def test_U13_rollup_statements_stay_flat_as_the_batch_grows(platform):
    """Every fleet kind is in both batches, so both run the same kinds of statement; a per-company
    query anywhere would make the larger batch cost more."""
    _queries_for(platform, 1)  # caches warmed (catalogue rules), so both counts below are like for like
    small = _queries_for(platform, len(FLEETS))
    large = _queries_for(platform, 4 * len(FLEETS))
    assert large == small


@pytest.mark.django_db(transaction=True)
def test_T4_fanout_rolls_up_every_pending_company_in_batches(platform, celery_worker_process, monkeypatch):
    from usage import rollups
    from usage.tasks import rollup_fanout

    monkeypatch.setattr(rollups, "BATCH_SIZE", 2)
    queued = []
    split = rollups.batches
    monkeypatch.setattr(rollups, "batches", lambda ids, size=None: queued.extend(split(ids, size)) or split(ids, size))
    companies = [build(platform) for build in FLEETS[:4]]
    PendingRollup.objects.bulk_create([PendingRollup(company=c) for c in companies], ignore_conflicts=True)
    assert rollup_fanout.apply().get() == 4
    assert sorted(map(len, queued)) == [2, 2]
    assert sorted(i for batch in queued for i in batch) == sorted(c.pk for c in companies)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(heartbeats_pending(company=c) == 0 for c in companies):
        time.sleep(0.2)
    assert all(heartbeats_pending(company=c) == 0 for c in companies)
    assert _figures(companies[3])["ats"] == 4
    assert not PendingRollup.objects.filter(company__in=companies).exists()


@pytest.mark.django_db(transaction=True)
def test_T4_one_broken_company_does_not_hold_back_its_batch(platform):
    """A batch is one transaction: when it fails, its companies are rolled up one by one, so only the
    broken one waits (its pending mark stays for the next fan-out) and the task names it."""
    from usage.tasks import RollupFailed, rollup_companies

    companies = [_company(platform, "endpoint_security", "a_la_carte") for _ in range(3)]
    for company in companies:
        Machine(company).beat(DAY)
    PendingRollup.objects.bulk_create([PendingRollup(company=c) for c in companies])
    broken = companies[1]
    with connection.cursor() as cursor:  # say its schema is being changed by a migration racing the rollup
        cursor.execute(f'ALTER TABLE "{broken.schema_name}".telemetry_heartbeat RENAME COLUMN modules TO away')
    with pytest.raises(RollupFailed, match=rf"\[{broken.pk}\]"):
        rollup_companies.apply(args=[[c.pk for c in companies], [NOV.isoformat()]]).get()
    for healthy in (companies[0], companies[2]):
        assert _figures(healthy)["endpoint_usage"] == 1
        assert heartbeats_pending(company=healthy) == 0
    assert not CompanyMonthUsage.objects.filter(company=broken).exists()
    assert heartbeats_pending(company=broken) == 1
    assert list(PendingRollup.objects.values_list("company_id", flat=True)) == [broken.pk]


@pytest.mark.django_db(transaction=True)
def test_T4_a_rollup_stopped_while_taking_ingest_locks_keeps_none_of_them(platform):
    """An insert in flight holds its company's ingest lock; a rollup that gives up waiting for it
    (lock_timeout here) must not keep the locks it already took, or ingestion for those companies
    would hang until the worker's connection is recycled."""
    import psycopg2

    from usage.locks import ingest_lock_key

    first, second = (_company(platform, "endpoint_security", "a_la_carte") for _ in range(2))
    settings = connection.settings_dict
    params = {"dbname": settings["NAME"], "user": settings["USER"], "host": settings["HOST"] or None,
              "port": settings["PORT"] or None, "password": settings["PASSWORD"] or None}
    ingest = psycopg2.connect(**params)  # an agent's insert, in flight for the second company
    observer = psycopg2.connect(**params)
    observer.autocommit = True
    try:
        with ingest.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [ingest_lock_key(second.pk)])
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '300ms'")
        with pytest.raises(DatabaseError, match="lock timeout"):
            usage_rollup_companies(company_ids=[first.pk, second.pk])
        with observer.cursor() as cursor:  # the first company's key was taken before the wait
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [ingest_lock_key(first.pk)])
            assert cursor.fetchone()[0] is True
            cursor.execute("SELECT pg_advisory_unlock(%s)", [ingest_lock_key(first.pk)])
    finally:
        ingest.rollback()
        ingest.close()
        observer.close()
    usage_rollup_companies(company_ids=[first.pk, second.pk])  # and the next run goes through


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broken_part", ["COLUMN modules",  # fails in the merge
                                         "SEQUENCE"])  # numbering heartbeats: fails under the ingest locks
def test_U12_month_close_finalizes_the_others_and_waits_for_a_broken_company(platform, broken_part):
    from usage.models import MonthClose
    from usage.rollups import MonthCloseIncomplete

    companies = [_company(platform, "endpoint_security", "a_la_carte") for _ in range(3)]
    for company in companies:
        Machine(company).beat(DAY)
    broken = companies[1]
    table = f'"{broken.schema_name}".telemetry_heartbeat'
    sequence = f'"{broken.schema_name}".telemetry_heartbeat_seq_seq'
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME {broken_part} TO away" if broken_part.startswith("COLUMN")
                       else f"ALTER SEQUENCE {sequence} RENAME TO away")
    with pytest.raises(MonthCloseIncomplete, match=rf"\[{broken.pk}\]"):
        usage_month_close(month=NOV)
    assert not MonthClose.objects.filter(month=NOV).exists()  # report emails keep waiting
    rows = {row.company_id: row for row in CompanyMonthUsage.objects.filter(company__in=companies, month=NOV)}
    assert broken.pk not in rows
    assert all(rows[c.pk].finalized_at is not None and rows[c.pk].endpoint_usage == 1
               for c in (companies[0], companies[2]))

    with connection.cursor() as cursor:  # repaired: the next run finishes the close
        cursor.execute(f"ALTER TABLE {table} RENAME COLUMN away TO modules" if broken_part.startswith("COLUMN")
                       else f'ALTER SEQUENCE "{broken.schema_name}".away RENAME TO telemetry_heartbeat_seq_seq')
    assert usage_month_close(month=NOV) >= 3
    assert MonthClose.objects.filter(month=NOV).exists()
    assert _figures(broken)["endpoint_usage"] == 1
    assert CompanyMonthUsage.objects.get(company=broken, month=NOV).finalized_at is not None
    assert not LateAdjustment.objects.filter(company__in=companies).exists()  # the others did not change
