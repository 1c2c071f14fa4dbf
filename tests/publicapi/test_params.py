"""The parameter readers every method shares (X2): ids and months that are not plain ASCII numbers, or
months outside the range the REST API accepts, answer -32602 naming the parameter, never a 500 (R7);
a missing or foreign company still answers the same "Company not found." (C6)."""

import pytest
from django.core.exceptions import ValidationError

from usage.month_selectors import usage_month_parse

pytestmark = pytest.mark.django_db

# year 0 (dt.date refuses it), Unicode digits that pass str.isdigit() (superscripts: int() refuses them;
# Arabic-Indic: int() reads them), years before the REST API's first (usage_month_parse), stray whitespace
BAD_MONTHS = ["01/0000", "0²/2026", "01/²026", "0١/2026", "01/١٩٩٩", "01/1900", "12/1999", "01/2026\n",
              " 01/2026", "01/+2026", "-1/2026"]
MONTH_CALLS = [
    ("licensing", "getMonthlyUsage", "targetMonth", lambda tree, m: {"targetMonth": m}),
    ("licensing", "getMonthlyUsagePerProductType", "targetMonth", lambda tree, m: {"targetMonth": m}),
    ("reports", "createReport", "options.targetMonth",
     lambda tree, m: {"type": 13, "targetIds": [str(tree.acme.pk)], "options": {"targetMonth": m}}),
]


@pytest.mark.parametrize("month", BAD_MONTHS)
@pytest.mark.parametrize("api,method,name,params", MONTH_CALLS, ids=[c[1] for c in MONTH_CALLS])
def test_X2_R7_bad_target_month_is_32602_naming_it_not_500(rpc, tree, api, method, name, params, month):
    error = rpc.error(api, method, params(tree, month), key=tree.keys[tree.north.pk])
    assert error["code"] == -32602, error
    assert error["data"]["details"].startswith(f"Invalid parameter '{name}': "), error


@pytest.mark.parametrize("month", ["12/1999", "01/2000", "11/2026"])
def test_R7_X2_target_month_range_is_the_rest_apis(rpc, tree, month):
    """The JSON-RPC month accepts exactly what usage_month_parse (the REST API's) accepts."""
    mm, yyyy = month.split("/")
    try:
        usage_month_parse(f"{yyyy}-{mm}")
        rest_accepts = True
    except ValidationError:
        rest_accepts = False
    status, body = rpc.call("licensing", "getMonthlyUsage", {"targetMonth": month}, key=tree.keys[tree.north.pk])
    assert status == 200
    assert ("result" in body) == rest_accepts, body
    if not rest_accepts:
        assert body["error"]["code"] == -32602 and "'targetMonth'" in body["error"]["data"]["details"]


# every parameter read as a company (or report) id, with the value put where the method takes it
ID_CALLS = [
    ("companies", "getCompanyDetails", "companyId", lambda v: {"companyId": v}),
    ("companies", "updateCompanyDetails", "companyId", lambda v: {"companyId": v, "name": "Probe"}),
    ("companies", "suspendCompany", "companyId", lambda v: {"companyId": v}),
    ("companies", "deleteCompany", "companyId", lambda v: {"companyId": v}),
    ("companies", "createCompany", "parentId", lambda v: {"type": 1, "name": "Probe", "parentId": v}),
    ("network", "getCompaniesList", "parentId", lambda v: {"parentId": v}),
    ("packages", "getInstallationLinks", "companyId", lambda v: {"companyId": v}),
    ("licensing", "getLicenseInfo", "companyId", lambda v: {"companyId": v}),
    ("licensing", "setMonthlySubscription", "companyId", lambda v: {"companyId": v, "reservedSlots": 1}),
    ("licensing", "getMonthlyUsage", "companyId", lambda v: {"companyId": v}),
    ("licensing", "getMonthlyUsagePerProductType", "companyId", lambda v: {"companyId": v}),
    ("reports", "createReport", "targetIds", lambda v: {"type": 13, "targetIds": [v]}),
    ("reports", "getDownloadLinks", "reportId", lambda v: {"reportId": v}),
    ("reports", "deleteReport", "reportId", lambda v: {"reportId": v}),
]
# 5,000 ASCII digits: more than int() reads (sys.get_int_max_str_digits), a ValueError before this fix
BAD_IDS = ["²", "1²", "١", "٤٢", "12\u00a0", "+1", "-1", "1_000", "0x1", "9" * 5000]


def short(value: str) -> str:
    return value if len(value) < 30 else f"{value[:12]}...({len(value)} chars)"


@pytest.mark.parametrize("value", BAD_IDS, ids=short)
@pytest.mark.parametrize("api,method,name,params", ID_CALLS, ids=[c[1] for c in ID_CALLS])
def test_X2_id_that_is_not_an_ascii_number_is_32602_naming_it_not_500(rpc, tree, api, method, name, params,
                                                                       value):
    error = rpc.error(api, method, params(value), key=tree.keys[tree.north.pk])
    assert error["code"] == -32602, error
    assert f"'{name}'" in error["data"]["details"], error


@pytest.mark.parametrize("value", ["schedule-²", "schedule-١", "schedule-", "schedule-" + "9" * 5000], ids=short)
@pytest.mark.parametrize("method", ["getDownloadLinks", "deleteReport"])
def test_X2_schedule_report_id_that_is_not_an_ascii_number_is_32602(rpc, tree, method, value):
    error = rpc.error("reports", method, {"reportId": value}, key=tree.keys[tree.north.pk])
    assert error["code"] == -32602 and "'reportId'" in error["data"]["details"], error


@pytest.mark.parametrize("value", ["²", "١"])
def test_X2_industry_code_in_unicode_digits_is_32602_not_500(rpc, tree, value):
    error = rpc.error("companies", "updateCompanyDetails", {"companyId": tree.acme.pk, "industry": value},
                      key=tree.keys[tree.north.pk])
    assert error["code"] == -32602 and "'industry'" in error["data"]["details"], error
    tree.acme.refresh_from_db()
    assert tree.acme.name == "Acme Dental"


@pytest.mark.parametrize("api,method,name,params", [c for c in ID_CALLS if c[2] != "reportId"],
                         ids=[c[1] for c in ID_CALLS if c[2] != "reportId"])
def test_C6_X2_well_formed_ids_still_answer_company_not_found(rpc, tree, api, method, name, params):
    """Missing (even beyond bigint), foreign and padded ids: one answer, "Company not found." (C6)."""
    key = tree.keys[tree.north.pk]
    missing = rpc.call(api, method, params(str(10**9)), key=key)
    assert missing[1]["error"] == {"code": -32000, "message": "Server error",
                                   "data": {"details": "Company not found."}}, missing
    for value in (str(10**30), 10**30, str(tree.pine.pk), tree.pine.pk, f" {tree.pine.pk} "):
        assert rpc.call(api, method, params(value), key=key) == missing, value
