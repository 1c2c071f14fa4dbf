"""reports.*: instant Monthly License Usage reports through the report services (R1, R4, R5),
history and downloads under C6, acting for the administrator who created the key."""

import base64
import csv
import datetime as dt
import io
import shutil
import subprocess

import pytest

from companies.services import company_set_assist
from licensing.entitlements import entitlements_set
from reports.models import ReportDelivery, ReportFile, ReportRun, ReportSchedule
from tests.reports.test_delivery import smtp  # noqa: F401 - fixture
from tests.usage.fleet import Machine
from usage.rollups import usage_company_rollup

pytestmark = pytest.mark.django_db
PARAMS = {"name": "November usage", "type": 13, "options": {"targetMonth": "11/2026"}}


def _basic(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_R4_create_list_and_download_a_report(rpc, tree):
    key = tree.keys[tree.north.pk]
    report_id = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [str(tree.acme.pk)]}, key=key)
    item = ReportFile.objects.get(pk=int(report_id))
    assert (item.owner, item.company, item.built_for) == (tree.north, tree.acme, tree.admins[tree.north.pk])
    listed = rpc.result("reports", "getReportsList", {}, key=key)
    assert listed["total"] == 1 and listed["items"][0]["id"] == report_id and listed["items"][0]["type"] == 13
    links = rpc.result("reports", "getDownloadLinks", {"reportId": report_id}, key=key)
    assert links["readyForDownload"] is True
    path = links["csvUrl"].split("://", 1)[1].split("/", 1)[1]
    response = rpc.client.get("/" + path, **_basic(key))
    assert response.status_code == 200
    content = b"".join(response.streaming_content).decode()
    assert content.startswith("Path,Company name") and "Acme Dental" in content
    pdf = rpc.client.get("/" + links["pdfUrl"].split("://", 1)[1].split("/", 1)[1], **_basic(key))
    assert pdf.status_code == 200 and b"".join(pdf.streaming_content).startswith(b"%PDF")


def test_R4_R5_emailing_the_created_report_keeps_one_copy_in_the_history(rpc, tree, smtp):  # noqa: F811
    from reports.delivery import report_run_deliver

    key = tree.keys[tree.north.pk]
    north_admin, acme_admin = tree.admins[tree.north.pk], tree.admins[tree.acme.pk]
    report_id = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [tree.acme.pk],
                                                       "emailList": [north_admin.email, acme_admin.email]}, key=key)
    run = ReportRun.objects.get(company=tree.acme)
    report_run_deliver(run_id=run.pk)
    sent = dict(ReportDelivery.objects.filter(run=run).values_list("recipient", "report_file"))
    assert sent[north_admin.pk] == int(report_id)  # the report the call created, not a copy
    assert sent[acme_admin.pk] != int(report_id)  # built for what Acme's own users may see
    assert ReportFile.objects.filter(owner=tree.north).count() == 1
    assert sorted(rcpts[0] for rcpts, _ in smtp.messages) == sorted([north_admin.email, acme_admin.email])


def test_R5_email_list_must_be_users_who_may_see_it(rpc, tree):
    key = tree.keys[tree.north.pk]
    acme_admin = tree.admins[tree.acme.pk]
    rpc.result("reports", "createReport", {**PARAMS, "targetIds": [tree.acme.pk],
                                           "emailList": [acme_admin.email]}, key=key)
    run = ReportRun.objects.get(company=tree.acme)
    assert list(ReportDelivery.objects.filter(run=run).values_list("recipient", flat=True)) == [acme_admin.pk]
    before = ReportFile.objects.count()
    error = rpc.error("reports", "createReport", {**PARAMS, "targetIds": [tree.acme.pk],
                                                  "emailList": [tree.admins[tree.pine.pk].email]}, key=key)
    assert error["code"] == -32602 and "'emailList'" in error["data"]["details"]
    assert ReportFile.objects.count() == before  # nothing half-written


@pytest.mark.parametrize("params,named", [
    ({"type": 2, "targetIds": ["{acme}"]}, "type"),
    ({"type": 13, "targetIds": []}, "targetIds"),
    ({"type": 13, "targetIds": ["x"]}, "targetIds"),
    ({"type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 4}}, "scheduledInfo.occurrence"),
    ({"type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 9}}, "scheduledInfo.occurrence"),
    ({"type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": "5"}}, "scheduledInfo.occurrence"),
    ({"type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 5}, "emailList": ["{admin}"]}, "name"),
    ({**PARAMS, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 5}, "emailList": ["{admin}"]},
     "options.targetMonth"),
    ({"name": "M", "type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 5}}, "emailList"),
    ({"name": "M", "type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 5, "day": 31},
      "emailList": ["{admin}"]}, "scheduledInfo.day"),
    ({"name": "M", "type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 5, "startHour": 24},
      "emailList": ["{admin}"]}, "scheduledInfo.startHour"),
    ({"name": "M", "type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 5, "startMinute": 30},
      "emailList": ["{admin}"]}, "scheduledInfo.startMinute"),
    ({"name": "M", "type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 5, "days": [1]},
      "emailList": ["{admin}"]}, "scheduledInfo.days"),
    ({"name": "M", "type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 5, "every": 2},
      "emailList": ["{admin}"]}, "scheduledInfo.every"),
    ({"name": "M", "type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 5},
      "emailList": ["admin@pine-dairy.test"]}, "emailList"),
    ({"type": 13, "targetIds": ["{acme}"], "options": {"targetMonth": "2026-11"}}, "options.targetMonth"),
    ({"type": 13, "targetIds": ["{acme}"], "options": {"targetMonth": "01/2099"}}, "options.targetMonth"),
    ({"type": 13, "targetIds": ["{acme}"], "options": {"productType": 7}}, "options.productType"),
    ({"type": 13, "targetIds": ["{acme}"], "colour": 1}, "colour"),
])
def test_X2_create_report_bad_input_is_32602(rpc, tree, params, named):
    names = {"{acme}": str(tree.acme.pk), "{admin}": tree.admins[tree.north.pk].email}
    params = {k: ([names.get(v, v) for v in value] if k in ("targetIds", "emailList") else value)
              for k, value in params.items()}
    error = rpc.error("reports", "createReport", params, key=tree.keys[tree.north.pk])
    assert error["code"] == -32602 and f"'{named}'" in error["data"]["details"], error
    assert not ReportFile.objects.exists() and not ReportSchedule.objects.exists()


def test_C6_foreign_reports_and_targets_answer_like_missing(rpc, tree):
    north, south = tree.keys[tree.north.pk], tree.keys[tree.south.pk]
    missing_target = rpc.call("reports", "createReport", {**PARAMS, "targetIds": [10**9]}, key=north)
    assert missing_target[1]["error"]["data"]["details"] == "Company not found."
    for foreign in (tree.pine, tree.south, tree.platform):
        assert rpc.call("reports", "createReport", {**PARAMS, "targetIds": [foreign.pk]}, key=north) == \
            missing_target
    report_id = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [tree.acme.pk]}, key=north)
    missing = rpc.call("reports", "getDownloadLinks", {"reportId": 10**9}, key=south)
    assert missing[1]["error"]["data"]["details"] == "Report not found."
    assert rpc.call("reports", "getDownloadLinks", {"reportId": report_id}, key=south) == missing
    assert rpc.result("reports", "getReportsList", {}, key=south)["total"] == 0
    url = f"/api/v1.0/jsonrpc/reports/download/{report_id}.csv"
    assert rpc.client.get(url, **_basic(south)).status_code == 404
    assert rpc.client.get(url, **_basic("gzk_bad_key")).status_code == 401
    # Acme's own key: a report Northwind made is in Northwind's history, not Acme's
    assert rpc.call("reports", "getDownloadLinks", {"reportId": report_id}, key=tree.keys[tree.acme.pk]) == missing


def test_A4_reports_need_the_reports_scope(rpc, tree):
    key = tree.scoped(tree.north, ["companies", "licensing", "usage"])
    assert rpc.error("reports", "createReport", {**PARAMS, "targetIds": [tree.acme.pk]}, key=key,
                     status=403)["code"] == -32000
    assert rpc.error("reports", "getReportsList", {}, key=key, status=403)["code"] == -32000
    assert not ReportFile.objects.exists()


def test_reports_stop_when_the_key_creator_is_no_longer_an_administrator(rpc, tree):
    admin = tree.admins[tree.north.pk]
    admin.is_active = False
    admin.save(update_fields=["is_active"])
    error = rpc.error("reports", "getReportsList", {}, key=tree.keys[tree.north.pk])
    assert error["code"] == -32000 and "administrator" in error["data"]["details"]


# --- scheduled reports (monthly, R5) and deleteReport ---------------------------------------------------

MONTHLY = {"name": "Acme monthly", "type": 13, "scheduledInfo": {"occurrence": 5, "day": 3, "startHour": 7},
           "options": {"productType": 1, "onlyDirectCompanies": True}}


@pytest.fixture
def files(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def _scheduled(rpc, tree, **extra) -> str:
    return rpc.result("reports", "createReport", {**MONTHLY, "targetIds": [str(tree.acme.pk)],
                                                  "emailList": [tree.admins[tree.north.pk].email], **extra},
                      key=tree.keys[tree.north.pk])


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def test_R5_X1_scheduled_create_report_is_a_monthly_schedule(rpc, tree, files, smtp):  # noqa: F811
    from django.utils import timezone

    from companies.models import AuditEvent
    from reports.delivery import report_run_deliver, schedule_run_due

    key, admin = tree.keys[tree.north.pk], tree.admins[tree.north.pk]
    report_id = _scheduled(rpc, tree)
    assert report_id.startswith("schedule-")
    schedule = ReportSchedule.objects.get(pk=int(report_id.removeprefix("schedule-")))
    assert (schedule.owner, schedule.company, schedule.created_by, schedule.name) == \
        (tree.north, tree.acme, admin, "Acme monthly")
    assert (schedule.day_of_month, schedule.hour, schedule.product_type, schedule.only_direct) == \
        (3, 7, "edr_standalone", True)
    assert list(schedule.recipients.all()) == [admin]
    crontab = schedule.periodic_task.crontab
    assert (crontab.day_of_month, crontab.hour, crontab.minute, schedule.periodic_task.enabled) == ("3", "7", "0", True)
    assert AuditEvent.objects.filter(action="report_schedule.create", object_id=str(schedule.pk), actor=admin).exists()
    # the same name twice: the schedule's name is unique per company
    error = rpc.error("reports", "createReport", {**MONTHLY, "targetIds": [tree.acme.pk],
                                                  "emailList": [admin.email]}, key=key)
    assert error["code"] == -32602 and "'name'" in error["data"]["details"]

    listed = rpc.result("reports", "getReportsList", {}, key=key)
    assert listed["total"] == 1 and listed["items"][0]["id"] == report_id
    assert listed["items"][0]["occurrence"] == 5 and listed["items"][0]["scheduledInfo"]["day"] == 3
    assert rpc.result("reports", "getDownloadLinks", {"reportId": report_id}, key=key) == {
        "readyForDownload": False, "lastInstanceUrl": None, "allInstancesUrls": [], "csvUrl": None, "pdfUrl": None}

    # beat fires the schedule: the report sent lands in the history and is the schedule's instance
    run = schedule_run_due(schedule_id=schedule.pk, fired_at=timezone.now())
    report_run_deliver(run_id=run.pk)
    assert len(smtp.messages) == 1
    instance = ReportFile.objects.get()
    links = rpc.result("reports", "getDownloadLinks", {"reportId": report_id}, key=key)
    assert links["readyForDownload"] is True and links["lastInstanceUrl"].endswith(f"/download/{instance.pk}.csv")
    assert [_path(u) for u in links["allInstancesUrls"]] == [
        f"/api/v1.0/jsonrpc/reports/download/{instance.pk}.{fmt}" for fmt in ("csv", "pdf")]
    response = rpc.client.get(_path(links["csvUrl"]), **_basic(key))
    assert response.status_code == 200 and "Acme Dental" in b"".join(response.streaming_content).decode()


def test_reports_list_pages_schedules_then_generated_reports(rpc, tree, files):
    key = tree.keys[tree.north.pk]
    schedules = [_scheduled(rpc, tree, name=name) for name in ("B monthly", "A monthly")]
    made = [rpc.result("reports", "createReport", {**PARAMS, "targetIds": [tree.acme.pk]}, key=key) for _ in range(2)]
    first = rpc.result("reports", "getReportsList", {"perPage": 3}, key=key)
    second = rpc.result("reports", "getReportsList", {"perPage": 3, "page": 2}, key=key)
    assert (first["total"], first["pagesCount"]) == (4, 2)
    assert [i["id"] for i in first["items"] + second["items"]] == [schedules[1], schedules[0], made[1], made[0]]
    assert [i["occurrence"] for i in first["items"]] == [5, 5, 1]
    assert [i["id"] for i in rpc.result("reports", "getReportsList", {"name": "A month"}, key=key)["items"]] == \
        [schedules[1]]


def test_X1_delete_report_removes_a_generated_report_and_its_files(rpc, tree, files,
                                                                   django_capture_on_commit_callbacks):
    from companies.models import AuditEvent

    key = tree.keys[tree.north.pk]
    report_id = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [tree.acme.pk]}, key=key)
    item = ReportFile.objects.get(pk=int(report_id))
    paths = [files / item.csv_file.name, files / item.pdf_file.name]
    assert all(path.exists() for path in paths)
    with django_capture_on_commit_callbacks(execute=True):
        assert rpc.result("reports", "deleteReport", {"reportId": report_id}, key=key) is True
    assert not ReportFile.objects.exists() and not any(path.exists() for path in paths)
    event = AuditEvent.objects.get(action="report_file.delete")
    assert (event.actor, event.object_id) == (tree.admins[tree.north.pk], report_id)
    for method in ("getDownloadLinks", "deleteReport"):
        assert rpc.error("reports", method, {"reportId": report_id}, key=key)["data"]["details"] == \
            "Report not found."
    assert rpc.result("reports", "getReportsList", {}, key=key)["total"] == 0


def test_X1_delete_scheduled_report_deletes_the_schedule_and_keeps_what_it_sent(rpc, tree, files,
                                                                              smtp):  # noqa: F811
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    from companies.models import AuditEvent
    from reports.delivery import report_run_deliver, schedule_run_due

    key = tree.keys[tree.north.pk]
    report_id = _scheduled(rpc, tree)
    schedule = ReportSchedule.objects.get()
    task_id = schedule.periodic_task_id
    report_run_deliver(run_id=schedule_run_due(schedule_id=schedule.pk, fired_at=timezone.now()).pk)
    assert rpc.result("reports", "deleteReport", {"reportId": report_id}, key=key) is True
    assert not ReportSchedule.objects.exists() and not PeriodicTask.objects.filter(pk=task_id).exists()
    assert AuditEvent.objects.filter(action="report_schedule.delete", object_id=str(schedule.pk)).exists()
    # what it already sent stays in the history (and the run history), deletable by its own id
    assert ReportFile.objects.count() == 1 and ReportRun.objects.get().schedule is None
    listed = rpc.result("reports", "getReportsList", {}, key=key)
    assert [i["occurrence"] for i in listed["items"]] == [1]
    assert rpc.error("reports", "getDownloadLinks", {"reportId": report_id}, key=key)["data"]["details"] == \
        "Report not found."


@pytest.mark.parametrize("params", [{}, {"reportId": "abc"}, {"reportId": "schedule-x"}, {"reportId": True},
                                    {"reportId": 1, "force": True}])
@pytest.mark.parametrize("method", ["deleteReport", "getDownloadLinks"])
def test_X2_report_id_bad_input_is_32602(rpc, tree, method, params):
    error = rpc.error("reports", method, params, key=tree.keys[tree.north.pk])
    named = "force" if "force" in params else "reportId"
    assert error["code"] == -32602 and f"'{named}'" in error["data"]["details"], error


def test_C6_foreign_scheduled_and_generated_reports_answer_like_missing(rpc, tree, files):
    north = tree.keys[tree.north.pk]
    scheduled = _scheduled(rpc, tree)
    generated = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [tree.acme.pk]}, key=north)
    # a foreign target for a scheduled report answers like a missing company, and creates nothing
    missing_target = rpc.call("reports", "createReport", {**MONTHLY, "name": "x", "targetIds": [10**9],
                                                          "emailList": ["admin@northwind-msp.test"]}, key=north)
    assert missing_target[1]["error"]["data"]["details"] == "Company not found."
    for foreign in (tree.pine, tree.south):
        assert rpc.call("reports", "createReport", {**MONTHLY, "name": "x", "targetIds": [foreign.pk],
                                                    "emailList": ["admin@northwind-msp.test"]}, key=north) == \
            missing_target
    assert ReportSchedule.objects.count() == 1
    for method in ("deleteReport", "getDownloadLinks"):
        for missing_id in ("schedule-1000000000", str(10**9)):
            missing = rpc.call("reports", method, {"reportId": missing_id}, key=north)
            assert missing[1]["error"]["data"]["details"] == "Report not found."
            # Southgate's key and Acme's own key (the report's company) see neither
            for key in (tree.keys[tree.south.pk], tree.keys[tree.acme.pk]):
                for report_id in (scheduled, generated):
                    assert rpc.call("reports", method, {"reportId": report_id}, key=key) == missing
    assert rpc.result("reports", "getReportsList", {}, key=tree.keys[tree.south.pk])["total"] == 0
    assert ReportSchedule.objects.count() == 1 and ReportFile.objects.count() == 1


def test_A4_delete_and_scheduled_reports_need_the_reports_scope(rpc, tree, files):
    north = tree.keys[tree.north.pk]
    scheduled = _scheduled(rpc, tree)
    generated = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [tree.acme.pk]}, key=north)
    key = tree.scoped(tree.north, ["companies", "licensing", "usage"])
    for report_id in (scheduled, generated):
        for method in ("deleteReport", "getDownloadLinks"):
            assert rpc.error("reports", method, {"reportId": report_id}, key=key, status=403)["code"] == -32000
    assert rpc.error("reports", "createReport", {**MONTHLY, "name": "other", "targetIds": [tree.acme.pk],
                                                 "emailList": ["admin@northwind-msp.test"]},
                     key=key, status=403)["code"] == -32000
    assert ReportSchedule.objects.count() == 1 and ReportFile.objects.count() == 1


# --- C3: a company whose partner may not assist (Bolt Legal) ---------------------------------------------

NOV = dt.date(2026, 11, 1)
DAY = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)


@pytest.fixture
def network(tree):
    """Acme (assist on) has one endpoint, Bolt (assist off) two; `hosts` are what a report must never
    show of Bolt's network to Northwind: hostnames (first) and endpoint ids."""
    entitlements_set(actor=None, company=tree.north, purpose="resell", keys={"endpoint_security", "a_la_carte"})
    tree.hosts = {}
    for company, count in ((tree.acme, 1), (tree.bolt, 2)):
        entitlements_set(actor=None, company=company, purpose="own", keys={"endpoint_security", "a_la_carte"})
        machines = [Machine(company).beat(DAY) for _ in range(count)]
        usage_company_rollup(company_id=company.pk, months=[NOV])
        tree.hosts[company.pk] = [f"host-{m.id.hex[:6]}" for m in machines] + [str(m.id) for m in machines]
    return tree


def _download(rpc, key: str, url: str) -> bytes:
    response = rpc.client.get(_path(url), **_basic(key))
    assert response.status_code == 200, response
    return b"".join(response.streaming_content)


def _pdf_text(data: bytes, tmp_path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    return subprocess.run(["pdftotext", "-raw", str(path), "-"], check=True, capture_output=True, text=True).stdout


def _company_rows(text: str) -> dict[str, dict]:
    lines = list(csv.reader(io.StringIO(text)))
    return {line[1]: dict(zip(lines[0], line, strict=True)) for line in lines[1:] if len(line) == len(lines[0])}


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler-utils is not installed")
def test_C3_report_of_a_company_without_assist_has_its_figures_and_no_endpoint_rows(rpc, network, files,
                                                                                    tmp_path):
    key = network.keys[network.north.pk]
    report_id = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [network.bolt.pk]}, key=key)
    item = ReportFile.objects.get(pk=int(report_id))
    assert item.company == network.bolt and item.network_detail is False
    links = rpc.result("reports", "getDownloadLinks", {"reportId": report_id}, key=key)
    text = _download(rpc, key, links["csvUrl"]).decode()
    row = _company_rows(text)["Bolt Legal"]  # company-level figures stay (C3)
    assert (row["Licensed endpoints"], row["Endpoint usage"]) == ("2", "2")
    assert "Uptime (seconds)" not in text  # no endpoint details section
    assert not [host for host in network.hosts[network.bolt.pk] if host in text]
    pdf = _pdf_text(_download(rpc, key, links["pdfUrl"]), tmp_path)
    assert "Bolt Legal" in pdf and "Endpoint details are not part of this report" in pdf
    assert not [host for host in network.hosts[network.bolt.pk] if host in pdf]


def test_C3_only_endpoint_details_of_a_company_without_assist_lists_no_endpoint(rpc, network, files):
    """As on the report page, where the option shows "Endpoint details are not available" rather
    than an error: the report is made and holds no endpoint of the company."""
    key = network.keys[network.north.pk]
    options = {"targetMonth": "11/2026", "onlyEndpointDetails": True}
    texts = {}
    for company in (network.acme, network.bolt):
        report_id = rpc.result("reports", "createReport", {"type": 13, "targetIds": [company.pk],
                                                           "options": options}, key=key)
        links = rpc.result("reports", "getDownloadLinks", {"reportId": report_id}, key=key)
        texts[company.pk] = _download(rpc, key, links["csvUrl"]).decode()
    assert network.hosts[network.acme.pk][0] in texts[network.acme.pk]  # assist on: its endpoint is listed
    assert texts[network.bolt.pk] == ""
    assert ReportFile.objects.get(company=network.bolt).network_detail is False


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler-utils is not installed")
def test_C3_partner_report_leaves_out_the_endpoints_of_its_company_without_assist(rpc, network, files, tmp_path):
    key = network.keys[network.north.pk]
    report_id = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [network.north.pk]}, key=key)
    links = rpc.result("reports", "getDownloadLinks", {"reportId": report_id}, key=key)
    text = _download(rpc, key, links["csvUrl"]).decode()
    rows = _company_rows(text)
    assert rows["Bolt Legal"]["Endpoint usage"] == "2" and rows["Northwind MSP"]["Endpoint usage"] == "3"
    assert network.hosts[network.acme.pk][0] in text  # the hostname of the company with assist on
    assert not [host for host in network.hosts[network.bolt.pk] if host in text]
    pdf = _pdf_text(_download(rpc, key, links["pdfUrl"]), tmp_path)
    assert network.hosts[network.acme.pk][0] in pdf  # the hostname of the company with assist on
    assert not [host for host in network.hosts[network.bolt.pk] if host in pdf]


def test_C3_report_with_endpoint_rows_closes_when_assist_goes_off(rpc, network, files):
    key = network.keys[network.north.pk]
    report_id = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [network.acme.pk]}, key=key)
    links = rpc.result("reports", "getDownloadLinks", {"reportId": report_id}, key=key)
    assert network.hosts[network.acme.pk][0] in _download(rpc, key, links["csvUrl"]).decode()
    company_set_assist(actor=network.admins[network.acme.pk], company=network.acme, on=False)
    missing = rpc.call("reports", "getDownloadLinks", {"reportId": 10**9}, key=key)
    assert rpc.call("reports", "getDownloadLinks", {"reportId": report_id}, key=key) == missing
    for url in (links["csvUrl"], links["pdfUrl"]):
        assert rpc.client.get(_path(url), **_basic(key)).status_code == 404
    # a new report of Acme keeps its figures and leaves its endpoints out
    again = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [network.acme.pk]}, key=key)
    text = _download(rpc, key, rpc.result("reports", "getDownloadLinks", {"reportId": again}, key=key)["csvUrl"])
    assert _company_rows(text.decode())["Acme Dental"]["Endpoint usage"] == "1"
    assert not [host for host in network.hosts[network.acme.pk] if host in text.decode()]


def test_C3_R5_users_of_a_company_without_assist_do_not_receive_its_report_from_the_partner(rpc, network, files):
    key, bolt_admin = network.keys[network.north.pk], network.admins[network.bolt.pk]
    error = rpc.error("reports", "createReport", {**PARAMS, "targetIds": [network.bolt.pk],
                                                  "emailList": [bolt_admin.email]}, key=key)
    assert error["code"] == -32602 and "'emailList'" in error["data"]["details"]
    error = rpc.error("reports", "createReport", {**MONTHLY, "targetIds": [network.bolt.pk],
                                                  "emailList": [bolt_admin.email]}, key=key)
    assert error["code"] == -32602 and "'emailList'" in error["data"]["details"]
    assert not ReportFile.objects.exists() and not ReportSchedule.objects.exists()


def test_C3_scheduled_report_of_a_company_without_assist_sends_no_endpoint_rows(rpc, network, files,
                                                                               smtp):  # noqa: F811
    from reports.delivery import report_run_deliver, schedule_run_due

    key = network.keys[network.north.pk]
    report_id = rpc.result("reports", "createReport", {
        **MONTHLY, "options": {}, "targetIds": [network.bolt.pk],
        "emailList": [network.admins[network.north.pk].email]}, key=key)
    schedule = ReportSchedule.objects.get(pk=int(report_id.removeprefix("schedule-")))
    run = schedule_run_due(schedule_id=schedule.pk, fired_at=dt.datetime(2026, 12, 3, 7, tzinfo=dt.UTC))
    assert run.month == NOV  # the previous month's report
    report_run_deliver(run_id=run.pk)
    assert ReportFile.objects.get().network_detail is False
    links = rpc.result("reports", "getDownloadLinks", {"reportId": report_id}, key=key)
    text = _download(rpc, key, links["csvUrl"]).decode()
    attachment = next(part for part in smtp.messages[0][1].iter_attachments()
                      if part.get_filename().endswith(".csv")).get_content()
    for sent in (text, attachment):
        assert _company_rows(sent)["Bolt Legal"]["Endpoint usage"] == "2"
        assert not [host for host in network.hosts[network.bolt.pk] if host in sent]


def test_C3_partner_report_listing_a_customers_endpoints_closes_when_that_customer_turns_assist_off(
        rpc, network, files):
    """Northwind's own report lists Acme's endpoint while Acme lets it assist; once Acme turns assist
    off, that file is gone from Northwind's history and its links answer like missing ones (the
    file's target, Northwind itself, is still visible: the listed companies decide). A report made
    afterwards leaves Acme's endpoints out and opens."""
    key = network.keys[network.north.pk]
    report_id = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [network.north.pk]}, key=key)
    links = rpc.result("reports", "getDownloadLinks", {"reportId": report_id}, key=key)
    assert network.hosts[network.acme.pk][0] in _download(rpc, key, links["csvUrl"]).decode()
    assert ReportFile.objects.get(pk=report_id).endpoint_company_ids == [network.acme.pk]  # Bolt: no assist

    company_set_assist(actor=network.admins[network.acme.pk], company=network.acme, on=False)
    missing = rpc.call("reports", "getDownloadLinks", {"reportId": 10**9}, key=key)
    assert rpc.call("reports", "getDownloadLinks", {"reportId": report_id}, key=key) == missing
    for url in (links["csvUrl"], links["pdfUrl"]):
        assert rpc.client.get(_path(url), **_basic(key)).status_code == 404
    listed = rpc.result("reports", "getReportsList", {}, key=key)
    assert str(report_id) not in [item["id"] for item in listed["items"]]

    again = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [network.north.pk]}, key=key)
    text = _download(rpc, key, rpc.result("reports", "getDownloadLinks", {"reportId": again}, key=key)["csvUrl"])
    assert not [host for host in network.hosts[network.acme.pk] if host in text.decode()]
    assert str(again) in [item["id"] for item in rpc.result("reports", "getReportsList", {}, key=key)["items"]]
    # the history page and its download links, the same way
    from django.urls import reverse

    rpc.client.force_login(network.admins[network.north.pk])
    page = rpc.client.get(reverse("reports:history")).content.decode()
    assert reverse("reports:history-download", args=[again, "csv"]) in page
    assert reverse("reports:history-download", args=[report_id, "csv"]) not in page
    assert rpc.client.get(reverse("reports:history-download", args=[report_id, "csv"])).status_code == 404
    # what may no longer be opened may still be deleted (its files leave the disk)
    assert rpc.result("reports", "deleteReport", {"reportId": report_id}, key=key) is True
    assert not ReportFile.objects.filter(pk=report_id).exists()


def test_C3_C6_files_from_before_their_companies_were_recorded_get_every_company_below_their_target(
        rpc, network, files):
    """Migration 0005 gives the files made before 0004 every company then in their target's subtree
    with a usage row for their month: Northwind's old report closes while Bolt (no assist) is below
    it, Acme's stays open, and a company that moves away later closes a file that lists it (C6)."""
    import importlib

    from django.db import connection

    from companies.services import company_move

    fill = importlib.import_module("reports.migrations.0005_report_file_endpoint_companies_fill").FILL
    key = network.keys[network.north.pk]
    old = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [network.north.pk]}, key=key)
    acme = rpc.result("reports", "createReport", {**PARAMS, "targetIds": [network.acme.pk]}, key=key)
    ReportFile.objects.filter(pk__in=[old, acme]).update(endpoint_company_ids=None)
    with connection.cursor() as cursor:
        cursor.execute(fill)
    assert ReportFile.objects.get(pk=old).endpoint_company_ids == sorted([network.acme.pk, network.bolt.pk])
    missing = rpc.call("reports", "getDownloadLinks", {"reportId": 10**9}, key=key)
    assert rpc.call("reports", "getDownloadLinks", {"reportId": old}, key=key) == missing
    assert rpc.result("reports", "getDownloadLinks", {"reportId": acme}, key=key)["csvUrl"]
    entitlements_set(actor=None, company=network.south, purpose="resell", keys={"endpoint_security", "a_la_carte"})
    company_move(actor=None, company=network.acme, new_parent=network.south)
    assert rpc.call("reports", "getDownloadLinks", {"reportId": acme}, key=key) == missing
    # a company moved away before the migration ran is listed too, from the move's audit record
    ReportFile.objects.filter(pk=old).update(endpoint_company_ids=None)
    with connection.cursor() as cursor:
        cursor.execute(fill)
    assert network.acme.pk in ReportFile.objects.get(pk=old).endpoint_company_ids

