"""R5: report schedules on django-celery-beat: the default (previous month, at the start of each
month), editing, pausing and deleting, and the same due task fired twice sending once."""

import datetime as dt
import json
import os
import threading
import urllib.parse

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry
from freezegun import freeze_time

from companies.models import AuditEvent
from reports.delivery import report_run_deliver, schedule_run_due
from reports.models import DeliveryStatus, ReportDelivery, ReportFile, ReportRun, ReportSchedule, RunStatus
from reports.schedules import schedule_create, schedule_delete, schedule_pause, schedule_update
from tests.factories import PASSWORD, make_user
from tests.reports.test_delivery import NOV, build, free_port, media, smtp, smtp_start  # noqa: F401 - fixtures
from usage.models import MonthClose

# The Celery worker (tests/conftest.py celery_worker_process) starts once per session with this
# process's environment, and its email settings come from EMAIL_URL. Modules are collected before
# any test starts the worker, so the SMTP address the worker test listens on is set here.
os.environ.setdefault("EMAIL_URL", f"smtp://127.0.0.1:{free_port()}")

MONTH_START = dt.datetime(2026, 12, 1, 6, 0, 30, tzinfo=dt.UTC)


def _data(tree, **overrides) -> dict:
    data = {"name": "Monthly usage for A", "company": tree.a.pk, "recipients": [tree.p_admin.pk, tree.a_admin.pk]}
    data.update(overrides)
    return data


@pytest.mark.django_db
def test_R5_default_schedule_sends_previous_month_at_month_start(platform):
    tree = build(platform)
    schedule = schedule_create(actor=tree.p_admin, data=_data(tree))
    assert (schedule.day_of_month, schedule.hour, schedule.paused) == (1, 6, False)
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.task == "reports.schedule_due" and task.enabled
    assert json.loads(task.kwargs) == {"schedule_id": schedule.pk}
    cron = task.crontab
    fields = (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week)
    assert fields == ("0", "6", "1", "*", "*")
    assert str(cron.timezone) == "UTC"

    # beat's own entry: not due on the last evening of November, due just after 06:00 on December 1st
    task.last_run_at = dt.datetime(2026, 11, 1, 6, 0, 5, tzinfo=dt.UTC)
    task.save()
    with freeze_time(dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC)):
        assert not ModelEntry(task).is_due().is_due
    with freeze_time(MONTH_START):
        assert ModelEntry(task).is_due().is_due

    run = schedule_run_due(schedule_id=schedule.pk, fired_at=MONTH_START)
    assert run.month == dt.date(2026, 11, 1)  # the previous month
    assert sorted(run.deliveries.values_list("email", flat=True)) == ["admin@a.test", "admin@p.test"]
    # fired again (a second beat, a restart): the same run, no second set of deliveries
    assert schedule_run_due(schedule_id=schedule.pk, fired_at=MONTH_START + dt.timedelta(minutes=3)).pk == run.pk
    assert ReportDelivery.objects.count() == 2
    assert AuditEvent.objects.filter(action="report_schedule.create", company=tree.p).count() == 1


@pytest.mark.django_db
def test_R5_edit_pause_and_delete_a_schedule_update_beat(platform):
    tree = build(platform)
    schedule = schedule_create(actor=tree.p_admin, data=_data(tree))
    task_id = schedule.periodic_task_id

    schedule = schedule_update(actor=tree.p_admin, schedule=schedule,
                               data=_data(tree, day_of_month=3, hour=7, recipients=[tree.p_admin.pk],
                                          only_direct=True, product_type="endpoint_security"))
    task = PeriodicTask.objects.get(pk=task_id)
    assert (task.crontab.day_of_month, task.crontab.hour) == ("3", "7")
    assert list(schedule.recipients.values_list("email", flat=True)) == ["admin@p.test"]
    assert schedule.only_direct and schedule.product_type == "endpoint_security"

    schedule_pause(actor=tree.p_admin, schedule=schedule, paused=True)
    assert PeriodicTask.objects.get(pk=task_id).enabled is False
    assert schedule_run_due(schedule_id=schedule.pk, fired_at=MONTH_START) is None  # paused: nothing runs
    schedule_pause(actor=tree.p_admin, schedule=schedule, paused=False)
    assert PeriodicTask.objects.get(pk=task_id).enabled is True

    run = schedule_run_due(schedule_id=schedule.pk, fired_at=MONTH_START)
    schedule_delete(actor=tree.p_admin, schedule=schedule)
    assert not PeriodicTask.objects.filter(pk=task_id).exists()
    assert not ReportSchedule.objects.exists()
    run.refresh_from_db()
    assert run.schedule_id is None  # the run history stays
    assert schedule_run_due(schedule_id=schedule.pk, fired_at=MONTH_START) is None


@pytest.mark.django_db
def test_R5_bad_schedule_input_names_each_field_and_writes_nothing(platform):
    tree = build(platform)
    tasks_before = PeriodicTask.objects.count()
    with pytest.raises(ValidationError) as error:
        schedule_create(actor=tree.p_admin, data={
            "name": "", "company": tree.a.pk, "kind": "weekly", "product_type": "antivirus",
            "day_of_month": 31, "hour": 24, "recipients": [tree.p_admin.pk]})
    assert set(error.value.message_dict) == {"name", "kind", "product_type", "day_of_month", "hour"}
    with pytest.raises(ValidationError) as error:  # C6: another partner's company reads as not in the list
        schedule_create(actor=tree.p_admin, data=_data(tree, company=tree.z.pk))
    assert set(error.value.message_dict) == {"company"}
    with pytest.raises(ValidationError) as error:  # R5: a user who may not see the report
        schedule_create(actor=tree.p_admin, data=_data(tree, recipients=[tree.s_admin.pk]))
    assert set(error.value.message_dict) == {"recipients"}
    with pytest.raises(ValidationError):  # only administrators manage schedules
        schedule_create(actor=tree.p_reporter, data=_data(tree))
    schedule_create(actor=tree.p_admin, data=_data(tree))
    with pytest.raises(ValidationError) as error:
        schedule_create(actor=tree.p_admin, data=_data(tree))
    assert set(error.value.message_dict) == {"name"}
    assert ReportSchedule.objects.count() == 1 and PeriodicTask.objects.count() == tasks_before + 1


@pytest.mark.django_db
def test_R5_schedule_pages_create_edit_pause_delete(platform, client):
    tree = build(platform)
    client.login(username=tree.p_admin.email, password=PASSWORD)
    assert client.get("/reports/schedules/").status_code == 200
    form = client.get("/reports/schedules/new")
    assert form.status_code == 200 and "admin@p.test" in form.content.decode()
    bad = client.post("/reports/schedules/new", {"name": "", "company": tree.a.pk, "kind": "endpoint",
                                                  "day_of_month": 30, "hour": 6, "recipients": [tree.p_admin.pk]})
    assert bad.status_code == 400
    assert 'data-field="name"' in bad.content.decode() and 'data-field="day_of_month"' in bad.content.decode()
    response = client.post("/reports/schedules/new", {
        "name": "A monthly", "company": tree.a.pk, "kind": "endpoint", "product_type": "", "day_of_month": 1,
        "hour": 6, "recipients": [tree.p_admin.pk, tree.a_admin.pk]})
    schedule = ReportSchedule.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/reports/schedules/{schedule.pk}"
    recipients = client.get(f"/reports/schedules/recipients?company={tree.p.pk}").content.decode()
    assert "admin@p.test" in recipients and "admin@a.test" not in recipients  # A's users do not see P's report
    client.post(f"/reports/schedules/{schedule.pk}", {
        "name": "A monthly", "company": tree.a.pk, "kind": "endpoint", "day_of_month": 2, "hour": 5,
        "recipients": [tree.p_admin.pk]})
    schedule.refresh_from_db()
    assert (schedule.day_of_month, schedule.hour, schedule.recipients.count()) == (2, 5, 1)
    client.post(f"/reports/schedules/{schedule.pk}/pause", {"paused": "1"})
    assert ReportSchedule.objects.get().paused and not PeriodicTask.objects.get(pk=schedule.periodic_task_id).enabled
    client.post(f"/reports/schedules/{schedule.pk}/delete")
    assert not ReportSchedule.objects.exists()


@pytest.mark.django_db
def test_C6_another_company_schedule_answers_404(platform, client):
    tree = build(platform)
    schedule = schedule_create(actor=tree.p_admin, data=_data(tree))
    other_admin = make_user(company=tree.s, email="other@s.test")
    client.login(username=other_admin.email, password=PASSWORD)
    for url in (f"/reports/schedules/{schedule.pk}", f"/reports/schedules/{schedule.pk + 1000}"):
        assert client.get(url).status_code == 404
    assert client.post(f"/reports/schedules/{schedule.pk}/pause", {"paused": "1"}).status_code == 404
    assert client.post(f"/reports/schedules/{schedule.pk}/delete").status_code == 404
    assert "Monthly usage for A" not in client.get("/reports/schedules/").content.decode()
    # a customer below the partner does not see the partner's schedules either
    client.logout()
    client.login(username=tree.a_admin.email, password=PASSWORD)
    assert client.get(f"/reports/schedules/{schedule.pk}").status_code == 404
    # a reporter of the same company does not manage schedules
    client.logout()
    client.login(username=tree.p_reporter.email, password=PASSWORD)
    assert client.get(f"/reports/schedules/{schedule.pk}").status_code == 404
    assert client.get("/reports/schedules/").status_code == 403
    schedule.refresh_from_db()
    assert not schedule.paused and ReportSchedule.objects.count() == 1


@pytest.mark.django_db
def test_R5_schedule_list_queries_stay_flat(platform, client, django_assert_max_num_queries):
    from django.test.utils import CaptureQueriesContext

    tree = build(platform)
    client.login(username=tree.p_admin.email, password=PASSWORD)
    counts = []
    for n in (1, 6):
        while ReportSchedule.objects.count() < n:
            schedule = schedule_create(actor=tree.p_admin, data=_data(tree, name=f"S{ReportSchedule.objects.count()}"))
            schedule_run_due(schedule_id=schedule.pk, fired_at=MONTH_START)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/reports/schedules/").status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1], counts


@pytest.mark.django_db(transaction=True)
def test_R5_two_workers_delivering_the_same_run_send_once(platform, smtp, media):  # noqa: F811
    """Two deliveries of the same run at the same moment (two due tasks picked up by two workers):
    each recipient still gets one email (row locks, SKIP LOCKED)."""
    tree = build(platform)
    schedule = schedule_create(actor=tree.p_admin, data=_data(tree))
    run = schedule_run_due(schedule_id=schedule.pk, fired_at=MONTH_START)
    barrier = threading.Barrier(2)
    errors = []

    def deliver():
        try:
            barrier.wait()
            report_run_deliver(run_id=run.pk)
        except Exception as error:  # pragma: no cover - surfaced below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert sorted(rcpts[0] for rcpts, _ in smtp.messages) == ["admin@a.test", "admin@p.test"]
    run.refresh_from_db()
    assert run.status == RunStatus.SENT


@pytest.mark.django_db
def test_R5_U12_a_scheduled_run_waits_for_its_month_to_be_closed(platform, smtp, media):  # noqa: F811
    """A schedule firing before the month close (a schedule at 00:00, or a late close) does not
    email figures that the close may still change: it waits, then sends the frozen ones."""
    from reports.tasks import run_deliver

    tree = build(platform)
    schedule = schedule_create(actor=tree.p_admin, data=_data(tree, day_of_month=1, hour=0))
    run = schedule_run_due(schedule_id=schedule.pk, fired_at=dt.datetime(2026, 12, 1, 0, 0, 5, tzinfo=dt.UTC))
    assert run_deliver.apply(args=[run.pk]).get() == {"waiting_for_month_close": True}
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.next_retry_at is not None and run.attempts == 0
    assert smtp.messages == []

    MonthClose.objects.create(month=run.month)
    assert run_deliver.apply(args=[run.pk]).get()["sent"] == 2
    run.refresh_from_db()
    assert run.status == RunStatus.SENT
    assert sorted(rcpts[0] for rcpts, _ in smtp.messages) == ["admin@a.test", "admin@p.test"]


@pytest.mark.django_db
def test_R5_U12_a_company_failing_its_close_holds_back_only_its_own_subtrees_reports(platform, smtp,  # noqa: F811
                                                                                        media):  # noqa: F811
    """Partner S's customer Z cannot be rolled up (its schema lost the sequence numbering its heartbeats,
    which every rollup reads): the month close finalizes everyone else and keeps retrying, so MonthClose
    is not written. P's report on A does not depend on Z and is sent; a report on S's subtree waits until
    Z is finalized too."""
    from reports.tasks import run_deliver
    from usage.rollups import MonthCloseIncomplete, usage_month_close
    from usage.selectors import month_closed_at

    tree = build(platform)
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER SEQUENCE "{tree.z.schema_name}".telemetry_heartbeat_seq_seq RENAME TO broken')
    with pytest.raises(MonthCloseIncomplete):
        usage_month_close(month=NOV)
    assert not MonthClose.objects.filter(month=NOV).exists()
    closed = month_closed_at(company_ids=[tree.a.pk, tree.p.pk, tree.s.pk, tree.z.pk, platform.pk], month=NOV)
    assert closed[tree.a.pk] is not None and closed[tree.p.pk] is not None
    assert closed[tree.s.pk] is None and closed[tree.z.pk] is None and closed[platform.pk] is None

    fired = dt.datetime(2026, 12, 1, 6, 0, 5, tzinfo=dt.UTC)
    run_a = schedule_run_due(schedule_id=schedule_create(actor=tree.p_admin, data=_data(tree)).pk, fired_at=fired)
    run_s = schedule_run_due(schedule_id=schedule_create(actor=tree.s_admin, data={
        "name": "Monthly usage for S", "company": tree.s.pk, "recipients": [tree.s_admin.pk]}).pk, fired_at=fired)
    assert run_deliver.apply(args=[run_s.pk]).get() == {"waiting_for_month_close": True}
    assert run_deliver.apply(args=[run_a.pk]).get()["sent"] == 2
    assert sorted(rcpts[0] for rcpts, _ in smtp.messages) == ["admin@a.test", "admin@p.test"]

    with connection.cursor() as cursor:  # repaired: the close's retry finishes the month
        cursor.execute(f'ALTER SEQUENCE "{tree.z.schema_name}".broken RENAME TO telemetry_heartbeat_seq_seq')
    usage_month_close(month=NOV)
    assert run_deliver.apply(args=[run_s.pk]).get()["sent"] == 1
    assert smtp.to("admin@s.test")


@pytest.fixture
def worker_smtp():
    """The SMTP server the Celery worker sends to (EMAIL_URL above)."""
    parts = urllib.parse.urlsplit(os.environ["EMAIL_URL"])
    if parts.scheme != "smtp" or parts.hostname not in ("127.0.0.1", "localhost"):
        pytest.skip(f"EMAIL_URL points the worker at {parts.scheme}://{parts.hostname}, not a local SMTP server")
    controller, sink = smtp_start(parts.port)
    yield sink
    controller.stop()


def _fire(app, name: str):
    """One beat process: load the schedule from the database, check the entry is due, send it."""
    app.loader.import_default_modules()  # as `celery beat` does at start: the tasks get registered
    scheduler = DatabaseScheduler(app=app, lazy=True)
    entry = scheduler.schedule[name]
    assert entry.is_due().is_due
    return scheduler.apply_async(entry, advance=False)


@pytest.mark.django_db(transaction=True)
def test_R5_beat_due_task_fired_twice_at_month_start_sends_one_email_per_recipient(
        platform, celery_worker_process, worker_smtp):
    """Beat's due task for December 1st, fired by two beat processes and once more after a restart,
    through a real Celery worker: one email per recipient for November, and the history keeps it."""
    from gz_console.celery import app

    tree = build(platform)
    schedule = schedule_create(actor=tree.p_admin, data=_data(tree))
    task = schedule.periodic_task
    PeriodicTask.objects.filter(pk=task.pk).update(last_run_at=dt.datetime(2026, 11, 1, 6, 0, 5, tzinfo=dt.UTC))
    MonthClose.objects.create(month=dt.date(2026, 11, 1))  # the close ran at 00:30, before the 06:00 schedule

    with freeze_time(MONTH_START, tick=True):
        fired = [_fire(app, task.name) for _ in range(2)]  # two beat processes
        fired.append(_fire(app, task.name))  # a restart before beat saved last_run_at
    results = [result.get(timeout=120) for result in fired]
    for result in results:
        app.AsyncResult(result["deliver_task"]).get(timeout=180)

    assert {result["run"] for result in results} == {ReportRun.objects.get().pk}
    run = ReportRun.objects.get()
    assert run.month == dt.date(2026, 11, 1) and run.status == RunStatus.SENT
    assert run.fired_at.date() == dt.date(2026, 12, 1)
    received = sorted(rcpts[0] for rcpts, _ in worker_smtp.messages)
    assert received == ["admin@a.test", "admin@p.test"]
    for _, message in worker_smtp.messages:
        assert message["Subject"] == "Monthly License Usage: Customer A, November 2026"
        names = sorted(part.get_filename() for part in message.iter_attachments() if part.get_filename())
        assert names == ["monthly-license-usage-customer-a-2026-11.csv", "monthly-license-usage-customer-a-2026-11.pdf"]
    assert set(run.deliveries.values_list("status", flat=True)) == {DeliveryStatus.SENT}

    # the history: one file per company of recipients, downloadable again by the partner
    files = ReportFile.objects.filter(company=tree.a, month=dt.date(2026, 11, 1))
    assert sorted(files.values_list("owner__name", flat=True)) == ["Customer A", "Partner P"]
    from django.test import Client

    client = Client()
    client.login(username=tree.p_admin.email, password=PASSWORD)
    page = client.get("/reports/history/").content.decode()
    assert "Customer A" in page and "November 2026" in page
    mine = files.get(owner=tree.p)
    download = client.get(f"/reports/history/{mine.pk}/csv")
    sent_csv = next(part for _, m in worker_smtp.messages if m["To"] == "admin@p.test"
                    for part in m.iter_attachments() if part.get_filename().endswith(".csv")).get_content()
    downloaded = b"".join(download.streaming_content).decode()
    assert downloaded.replace("\r\n", "\n") == sent_csv.replace("\r\n", "\n")
    assert downloaded.count("host-") == 3  # the partner may see Customer A's endpoints


@pytest.mark.django_db
def test_A2_C6_a_schedule_run_is_for_administrators_only(platform, client, smtp, media):  # noqa: F811
    """A reporter may send a report and follow that run, but a schedule's runs (recipients and
    all) answer 404 and cannot be sent again by anyone but an administrator."""
    tree = build(platform)
    schedule = schedule_create(actor=tree.p_admin, data=_data(tree, name="Board pack"))
    run = schedule_run_due(schedule_id=schedule.pk, fired_at=MONTH_START)
    ReportRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED)
    client.force_login(tree.p_reporter)
    assert client.get(f"/reports/runs/{run.pk}").status_code == 404
    assert client.post(f"/reports/runs/{run.pk}/retry").status_code == 404
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    client.force_login(tree.p_admin)
    page = client.get(f"/reports/runs/{run.pk}")
    assert page.status_code == 200 and "Board pack" in page.content.decode()
