"""reports.*: instant Monthly License Usage reports through the report services (R1, R4, R5),
history and downloads under C6, acting for the administrator who created the key."""

import base64

import pytest

from reports.models import ReportDelivery, ReportFile, ReportRun

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
    ({"type": 13, "targetIds": ["{acme}"], "scheduledInfo": {"occurrence": 5}}, "scheduledInfo.occurrence"),
    ({"type": 13, "targetIds": ["{acme}"], "options": {"targetMonth": "2026-11"}}, "options.targetMonth"),
    ({"type": 13, "targetIds": ["{acme}"], "options": {"targetMonth": "01/2099"}}, "options.targetMonth"),
    ({"type": 13, "targetIds": ["{acme}"], "options": {"productType": 7}}, "options.productType"),
    ({"type": 13, "targetIds": ["{acme}"], "colour": 1}, "colour"),
])
def test_X2_create_report_bad_input_is_32602(rpc, tree, params, named):
    params = {k: ([str(tree.acme.pk) if v == "{acme}" else v for v in value] if k == "targetIds" else value)
              for k, value in params.items()}
    error = rpc.error("reports", "createReport", params, key=tree.keys[tree.north.pk])
    assert error["code"] == -32602 and f"'{named}'" in error["data"]["details"], error
    assert not ReportFile.objects.exists()


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
