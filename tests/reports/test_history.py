"""Report history: generated reports kept (CSV and PDF on disk) and downloadable again, each
only by who may see it (C6; C2/C3 for files with endpoint rows)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reports.delivery import report_run_deliver, report_send_now
from reports.models import ReportFile
from tests.factories import PASSWORD, make_user
from tests.reports.test_delivery import build, media, smtp  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def _sent(tree, *, company, recipients):
    run = report_send_now(actor=tree.p_admin, company_id=company.pk, month="2026-11",
                          recipient_ids=[u.pk for u in recipients])
    report_run_deliver(run_id=run.pk)
    return run


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


def test_R5_history_lists_and_downloads_the_report_as_sent(platform, smtp, media, client):  # noqa: F811
    tree = build(platform)
    _sent(tree, company=tree.a, recipients=[tree.p_admin])
    item = ReportFile.objects.get()
    assert item.owner == tree.p and item.company == tree.a and item.source == "email"
    assert (media / item.csv_file.name).exists() and (media / item.pdf_file.name).exists()

    client.login(username=tree.p_admin.email, password=PASSWORD)
    page = client.get("/reports/history/").content.decode()
    assert f'data-file="{item.pk}"' in page and "Monthly License Usage: Customer A, November 2026" in page

    csv_response = client.get(f"/reports/history/{item.pk}/csv")
    assert csv_response.status_code == 200
    assert csv_response["Content-Disposition"] == 'attachment; filename="monthly-license-usage-customer-a-2026-11.csv"'
    sent = [p for p in smtp.messages[0][1].iter_attachments() if p.get_filename().endswith(".csv")][0]
    assert _body(csv_response).decode().replace("\r\n", "\n") == sent.get_content().replace("\r\n", "\n")
    pdf_response = client.get(f"/reports/history/{item.pk}/pdf")
    assert pdf_response["Content-Type"] == "application/pdf" and _body(pdf_response).startswith(b"%PDF")
    assert client.get(f"/reports/history/{item.pk}/xlsx").status_code == 404


def test_C6_history_item_of_another_company_answers_404(platform, smtp, media, client):  # noqa: F811
    tree = build(platform)
    _sent(tree, company=tree.a, recipients=[tree.p_admin])
    item = ReportFile.objects.get()
    urls = [f"/reports/history/{item.pk}/csv", f"/reports/history/{item.pk}/pdf"]
    # another partner, and the customer the report is about (its history is its own), see nothing
    for user in (tree.s_admin, tree.a_admin):
        client.login(username=user.email, password=PASSWORD)
        assert all(client.get(url).status_code == 404 for url in urls)
        assert f'data-file="{item.pk}"' not in client.get("/reports/history/").content.decode()
        client.logout()
    client.login(username=tree.p_admin.email, password=PASSWORD)
    assert client.get(f"/reports/history/{item.pk + 1000}/csv").status_code == 404  # same answer as missing
    assert client.get(f"/reports/history/?company={tree.z.pk}").status_code == 404
    # a colleague of the same company downloads it
    client.logout()
    client.login(username=tree.p_reporter.email, password=PASSWORD)
    assert client.get(urls[0]).status_code == 200


def test_C3_history_file_with_endpoint_rows_closes_when_assist_goes_off(platform, smtp, media, client):  # noqa: F811
    tree = build(platform)
    _sent(tree, company=tree.a, recipients=[tree.p_admin])
    item = ReportFile.objects.get()
    assert item.network_detail
    client.login(username=tree.p_admin.email, password=PASSWORD)
    assert client.get(f"/reports/history/{item.pk}/csv").status_code == 200
    tree.a.partner_can_assist = False
    tree.a.save(update_fields=["partner_can_assist"])
    assert client.get(f"/reports/history/{item.pk}/csv").status_code == 404


def test_history_page_queries_stay_flat(platform, smtp, media, client):  # noqa: F811
    tree = build(platform)
    client.login(username=tree.p_admin.email, password=PASSWORD)
    counts = []
    for _ in range(2):
        _sent(tree, company=tree.a, recipients=[tree.p_admin, make_user(company=tree.a)])
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/reports/history/").status_code == 200
        counts.append(len(ctx.captured_queries))
    assert ReportFile.objects.count() == 4
    assert counts[0] == counts[1], counts


def test_X1_C6_history_delete_removes_the_report_and_its_files(platform, smtp, media, client,  # noqa: F811
                                                                django_capture_on_commit_callbacks):
    from companies.models import AuditEvent
    from reports.models import ReportDelivery

    tree = build(platform)
    run = _sent(tree, company=tree.a, recipients=[tree.p_admin])
    item = ReportFile.objects.get()
    paths = [media / item.csv_file.name, media / item.pdf_file.name]
    assert all(path.exists() for path in paths)
    url = f"/reports/history/{item.pk}/delete"
    # another partner and the report's customer answer 404, like a missing id (C6); nothing is deleted
    for user in (tree.s_admin, tree.a_admin):
        client.login(username=user.email, password=PASSWORD)
        assert client.post(url).status_code == 404
        client.logout()
    client.login(username=tree.p_admin.email, password=PASSWORD)
    assert client.post(f"/reports/history/{item.pk + 1000}/delete").status_code == 404
    assert client.get(url).status_code == 405
    # a reporter of the same company sees it but may not delete what was built for an administrator
    client.logout()
    client.login(username=tree.p_reporter.email, password=PASSWORD)
    assert 'data-testid="history-delete"' not in client.get("/reports/history/").content.decode()
    assert client.post(url).status_code == 403
    assert ReportFile.objects.filter(pk=item.pk).exists() and all(path.exists() for path in paths)
    client.logout()

    client.login(username=tree.p_admin.email, password=PASSWORD)
    page = client.get("/reports/history/").content.decode()
    assert f'action="/reports/history/{item.pk}/delete"' in page
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, follow=True)
    assert response.redirect_chain[-1][0] == "/reports/history/"
    assert "deleted" in response.content.decode() and f'data-file="{item.pk}"' not in response.content.decode()
    assert not ReportFile.objects.filter(pk=item.pk).exists()
    assert not any(path.exists() for path in paths)
    # the run keeps its delivery record; the audit log names the report (X1)
    assert ReportDelivery.objects.get(run=run).report_file is None
    event = AuditEvent.objects.get(action="report_file.delete")
    assert (event.actor, event.company, event.object_id) == (tree.p_admin, tree.p, str(item.pk))
    assert event.before["title"] == "Monthly License Usage: Customer A, November 2026"
    assert client.post(url).status_code == 404
