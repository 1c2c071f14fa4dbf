"""Reports against hostile or awkward input and late data: spreadsheet formulas in names (CSV
injection), late adjustments in the CSV as on the page and PDF (U12), months out of range (X2),
names that would break a PDF footer or an email header, and a deleted schedule's waiting run (R5)."""

import csv
import datetime as dt
import io

import pytest
from django.core.exceptions import ValidationError

from companies.models import Company
from companies.services import company_update
from reports.builder import report_build
from reports.delivery import schedule_run_due
from reports.models import RunStatus
from reports.render import _css_string, report_csv_iter, report_pdf
from reports.schedules import schedule_create, schedule_delete
from tests.reports.test_delivery import NOV, build, media, smtp  # noqa: F401 - fixtures
from tests.reports.test_report_pages import partner_client, tree, url  # noqa: F401 - fixtures
from tests.usage.fleet import Machine
from usage.rollups import usage_company_rollup, usage_month_close

pytestmark = pytest.mark.django_db


def rows_of(report) -> list[list[str]]:
    return list(csv.reader(io.StringIO("".join(report_csv_iter(report)))))


def test_R4_a_name_or_hostname_that_is_a_formula_is_written_as_text(platform):
    from django_tenants.utils import tenant_context

    from usage.telemetry.models import Endpoint

    fleet = build(platform)
    Company.objects.filter(pk=fleet.a.pk).update(name='=HYPERLINK("http://evil","A")')
    with tenant_context(fleet.a):
        Endpoint.objects.filter(pk=Endpoint.objects.order_by("pk").values("pk")[:1]).update(hostname="@SUM(1+1)")
    fleet.a.refresh_from_db()
    cells = [cell for row in rows_of(report_build(actor=fleet.p_admin, company=fleet.a, month=NOV)) for cell in row]
    assert "'=HYPERLINK(\"http://evil\",\"A\")" in cells and "'@SUM(1+1)" in cells
    assert not [cell for cell in cells if cell.startswith(("=", "+", "@", "-"))]


def test_R4_U12_the_csv_carries_the_late_adjustments_the_page_and_pdf_show(platform):
    fleet = build(platform)
    october = dt.date(2026, 10, 1)
    Machine(fleet.a, now=dt.datetime(2026, 10, 1, tzinfo=dt.UTC)).beat(dt.datetime(2026, 10, 5, tzinfo=dt.UTC))
    usage_month_close(month=october)
    Machine(fleet.a, now=dt.datetime(2026, 10, 1, tzinfo=dt.UTC)).beat(dt.datetime(2026, 10, 20, tzinfo=dt.UTC))
    usage_company_rollup(company_id=fleet.a.pk)
    rows = rows_of(report_build(actor=fleet.p_admin, company=fleet.p, month=NOV))
    at = next(i for i, row in enumerate(rows) if row and row[0].startswith("Late adjustments to October 2026"))
    assert dict(zip(rows[at + 1], rows[at + 2], strict=True)) == {"Licensed endpoints": "1", "Endpoint usage": "1"}
    assert not any(row and row[0].startswith("Late adjustments")
                   for row in rows_of(report_build(actor=fleet.p_admin, company=fleet.p, month=october)))


@pytest.mark.parametrize("month", ["0000-01", "0001-01", "9999-12", "1999-12", "2026-1\u0661"])
def test_X2_R1_a_month_out_of_range_is_a_400_naming_month(partner_client, tree, month):  # noqa: F811
    for name in ("reports:index", "reports:csv", "reports:pdf"):
        response = partner_client.get(url(name, company=tree.p.pk, month=month))
        assert response.status_code == 400, (name, month)
        assert "month" in response.content.decode()


def test_X2_R5_send_now_refuses_a_month_before_2000(platform):
    from reports.delivery import report_send_now

    fleet = build(platform)
    with pytest.raises(ValidationError) as error:
        report_send_now(actor=fleet.p_admin, company_id=fleet.a.pk, month="0001-01", recipient_ids=[fleet.p_admin.pk])
    assert set(error.value.message_dict) == {"month"}


def test_R4_the_pdf_footer_prints_quotes_and_ampersands_as_themselves(platform):
    import subprocess

    assert _css_string('Smith & O\'Brien "IT"\n</style>') == (
        "Smith \\26  O\\27 Brien \\22 IT\\22 \\a \\3c /style\\3e ")
    fleet = build(platform)
    Company.objects.filter(pk=fleet.p.pk).update(name='Smith & O\'Brien "IT"')
    fleet.p.refresh_from_db()
    pdf = report_pdf(report_build(actor=fleet.p_admin, company=fleet.p, month=NOV))
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    assert 'Smith & O\'Brien "IT"' in text and "u0026" not in text


def test_X2_a_company_name_with_a_line_break_is_refused(platform):
    fleet = build(platform)
    with pytest.raises(ValidationError) as error:
        company_update(actor=fleet.p_admin, company=fleet.a, name="Acme\nBcc: everyone@example.test")
    assert set(error.value.message_dict) == {"name"}


def test_R5_deleting_a_schedule_cancels_its_run_waiting_for_the_close(platform, smtp, media):  # noqa: F811
    from reports.tasks import run_deliver

    fleet = build(platform)
    schedule = schedule_create(actor=fleet.p_admin, data={"name": "Monthly", "company": fleet.a.pk, "day_of_month": 1,
                                                          "hour": 0, "recipients": [fleet.p_admin.pk]})
    run = schedule_run_due(schedule_id=schedule.pk, fired_at=dt.datetime(2026, 12, 1, 0, 0, 5, tzinfo=dt.UTC))
    assert run_deliver.apply(args=[run.pk]).get() == {"waiting_for_month_close": True}
    schedule_delete(actor=fleet.p_admin, schedule=schedule)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.is_final
    assert "deleted" in run.last_error
    assert run_deliver.apply(args=[run.pk]).get() == {"sent": 0, "failed": 0, "skipped": 0}
    usage_month_close(month=NOV)
    assert run_deliver.apply(args=[run.pk]).get()["sent"] == 0
    assert smtp.messages == []


def test_R5_H5_a_schedule_for_a_company_that_moved_away_is_removed_not_left_firing(platform):
    from django_celery_beat.models import PeriodicTask

    from companies.models import AuditEvent
    from companies.services import company_move
    from reports.models import ReportSchedule
    from tests.factories import make_company, make_partner, make_user

    top = make_partner(parent=platform, name="Top")
    north, south = make_partner(parent=top, name="North"), make_partner(parent=top, name="South")
    acme = make_company(parent=north, name="Acme")
    north_admin, top_admin = make_user(company=north), make_user(company=top)
    gone = schedule_create(actor=north_admin, data={"name": "Acme monthly", "company": acme.pk,
                                                    "recipients": [north_admin.pk]})
    kept = schedule_create(actor=top_admin, data={"name": "Acme for Top", "company": acme.pk,
                                                  "recipients": [top_admin.pk]})
    task_id = gone.periodic_task_id
    company_move(actor=None, company=acme, new_parent=south)
    assert list(ReportSchedule.objects.values_list("pk", flat=True)) == [kept.pk]  # Top still has Acme below it
    assert not PeriodicTask.objects.filter(pk=task_id).exists()
    assert AuditEvent.objects.filter(company=north, action="report_schedule.delete").exists()
    schedule_create(actor=north_admin, data={"name": "Acme monthly", "company": north.pk,
                                             "recipients": [north_admin.pk]})  # the name is free again
