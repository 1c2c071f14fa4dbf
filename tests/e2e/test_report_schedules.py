"""R5 in the browser: an administrator creates a report schedule, pauses it and deletes it."""

import json

import pytest
from django_celery_beat.models import PeriodicTask

from reports.models import ReportSchedule
from tests.e2e.conftest import sign_in
from tests.factories import PASSWORD, make_company, make_partner, make_user

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_R5_administrator_creates_pauses_and_deletes_a_schedule(live_server, page, platform):
    partner = make_partner(parent=platform, name="Northwind MSP")
    customer = make_company(parent=partner, name="Fabrikam")
    admin = make_user(company=partner, email="admin@northwind.example")
    make_user(company=customer, email="it@fabrikam.example")
    elsewhere = make_partner(parent=platform, name="Elsewhere MSP")
    make_user(company=elsewhere, email="someone@elsewhere.example")

    sign_in(page, live_server, admin.email, PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/reports/schedules/")
    page.click("[data-testid=schedule-new]")

    page.fill("#id_name", "Fabrikam monthly")
    # choosing the company reloads the recipients: Fabrikam's own users may see its report (R5)
    page.select_option("select[name=company]", str(customer.pk))
    page.wait_for_selector("#recipients >> text=it@fabrikam.example")
    assert "someone@elsewhere.example" not in page.inner_text("#recipients")  # C6
    assert page.input_value("#id_day_of_month") == "1" and page.input_value("#id_hour") == "6"  # the default
    page.check("#recipients label:has-text('it@fabrikam.example') input")
    page.check("#recipients label:has-text('admin@northwind.example') input")
    page.click("[data-testid=schedule-save]")

    page.wait_for_selector("text=Schedule \u201cFabrikam monthly\u201d created.")
    schedule = ReportSchedule.objects.get()
    assert schedule.company == customer and schedule.recipients.count() == 2
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert task.enabled and json.loads(task.kwargs) == {"schedule_id": schedule.pk}
    assert (task.crontab.day_of_month, task.crontab.hour) == ("1", "6")
    assert page.inner_text("[data-testid=schedule-state]") == "Active"

    page.click("[data-testid=schedule-pause]")
    page.wait_for_selector("text=Schedule \u201cFabrikam monthly\u201d paused.")
    assert page.inner_text("[data-testid=schedule-state]") == "Paused"
    assert PeriodicTask.objects.get(pk=task.pk).enabled is False
    page.goto(f"{live_server.url}/reports/schedules/")
    row = page.locator(f"tr[data-schedule='{schedule.pk}']")
    assert "Paused" in row.inner_text()

    row.locator("a").first.click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-testid=schedule-delete]")
    page.wait_for_selector("text=Schedule \u201cFabrikam monthly\u201d deleted.")
    assert page.locator(f"tr[data-schedule='{schedule.pk}']").count() == 0
    assert not ReportSchedule.objects.exists() and not PeriodicTask.objects.filter(pk=task.pk).exists()
