"""The report page, exports and drill-down over HTTP: options, columns remembered per user (R2),
CSV/PDF responses (R4), and the same 404 for another company's ids (C6), C2/C3 respected."""

import csv
import io

import pytest
from django.urls import reverse

from companies.services import company_set_assist
from reports.models import ReportPreference
from tests.factories import make_user
from tests.reports.fleet_setup import build_tree

pytestmark = pytest.mark.django_db


@pytest.fixture
def tree(platform):
    return build_tree(platform)


@pytest.fixture
def partner_client(client, tree):
    user = make_user(company=tree.p)
    client.force_login(user)
    client.user = user
    return client


def url(name, **params):
    from django.utils.http import urlencode

    return f"{reverse(name)}?{urlencode({'month': '2026-11', **params})}"


def test_R2_page_shows_chart_table_and_drill_links(partner_client, tree):
    response = partner_client.get(url("reports:index", company=tree.p.pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<svg" in html and 'data-series="patch_management"' in html
    assert "Patch Management usage" in html and "Customer C" in html
    assert f"row={tree.a.pk}&amp;column=patch_management" in html
    assert "Customer Z" not in html


def test_R2_hidden_columns_are_remembered_per_user(partner_client, tree, client):
    response = partner_client.post(reverse("reports:columns"), {"kind": "endpoint",
                                                                "hidden": ["license_key", "sve_vdi_hours"]})
    assert response.status_code == 200
    assert ReportPreference.objects.get(user=partner_client.user, kind="endpoint").hidden_columns == [
        "license_key", "sve_vdi_hours"]
    html = partner_client.get(url("reports:index", company=tree.p.pk)).content.decode()
    assert '<th data-column="license_key" hidden>' in html and '<th data-column="sve_vs" >' in html
    bad = partner_client.post(reverse("reports:columns"), {"kind": "endpoint", "hidden": ["password"]})
    assert bad.status_code == 400 and "hidden" in bad.json()["error"]
    other = make_user(company=tree.p)
    client.force_login(other)
    assert '<th data-column="license_key" >' in client.get(url("reports:index", company=tree.p.pk)).content.decode()


def test_R2_drill_down_lists_the_endpoints_behind_a_number(partner_client, tree):
    response = partner_client.get(url("reports:drill", company=tree.p.pk, row=tree.a.pk, column="ats"))
    assert response.status_code == 200
    assert response.context["endpoints"].__len__() == 2
    response = partner_client.get(url("reports:drill", company=tree.p.pk, row=tree.p.pk,
                                      column="patch_management"))
    assert len(response.context["endpoints"]) == 3


def test_R1_bad_options_answer_400_naming_the_field(partner_client, tree):
    response = partner_client.get(url("reports:index", company=tree.p.pk, month="2026-13"))
    assert response.status_code == 400 and "month" in response.content.decode()
    response = partner_client.get(url("reports:csv", company=tree.p.pk, product_type="antivirus"))
    assert response.status_code == 400 and "product_type" in response.content.decode()


def test_R4_csv_and_pdf_downloads(partner_client, tree):
    response = partner_client.get(url("reports:csv", company=tree.p.pk))
    assert response.status_code == 200 and response.streaming
    assert 'filename="monthly-license-usage-partner-p-2026-11.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][0] == "Path" and rows[1][1] == "Partner P" and rows[1][7] == "16"
    response = partner_client.get(url("reports:pdf", company=tree.p.pk, kind="exchange"))
    assert response.status_code == 200 and response.content.startswith(b"%PDF")


@pytest.mark.parametrize("name", ["reports:index", "reports:csv", "reports:pdf", "reports:drill"])
def test_C6_another_companys_report_is_404(partner_client, tree, name):
    for foreign in (tree.z.pk, tree.s.pk, tree.platform.pk, 987_654):
        response = partner_client.get(url(name, company=foreign, row=foreign, column="licensed_endpoints"))
        assert response.status_code == 404, (name, foreign)


def test_C6_drill_into_a_row_outside_the_report_is_404(partner_client, tree):
    for row in (tree.z.pk, tree.platform.pk):
        response = partner_client.get(url("reports:drill", company=tree.p.pk, row=row, column="licensed_endpoints"))
        assert response.status_code == 404
    response = partner_client.get(url("reports:drill", company=tree.a.pk, row=tree.q.pk, column="licensed_endpoints"))
    assert response.status_code == 404  # Partner Q is not below Customer A


def test_C3_no_drill_down_into_a_company_without_assist(partner_client, tree):
    company_set_assist(actor=make_user(company=tree.a), company=tree.a, on=False)
    response = partner_client.get(url("reports:drill", company=tree.p.pk, row=tree.a.pk, column="licensed_endpoints"))
    assert response.status_code == 404
    html = partner_client.get(url("reports:index", company=tree.p.pk)).content.decode()
    assert f"row={tree.a.pk}&amp;" not in html and f"row={tree.c.pk}&amp;" in html
    csv_text = b"".join(partner_client.get(url("reports:csv", company=tree.a.pk)).streaming_content).decode()
    assert "Customer A" in csv_text and "host-" not in csv_text  # figures, no endpoint rows


def test_C2_reseller_only_partner_gets_no_drill_down(client, platform):
    from tests.factories import make_company, make_partner

    reseller = make_partner(parent=platform, manages_security=False)
    customer = make_company(parent=reseller)
    client.force_login(make_user(company=reseller))
    assert client.get(url("reports:index", company=customer.pk)).status_code == 200
    response = client.get(url("reports:drill", company=customer.pk, row=customer.pk, column="licensed_endpoints"))
    assert response.status_code == 404


def test_R5_report_page_offers_email_history_and_schedules_for_administrators(partner_client, tree, client):
    from companies.models import Role

    html = partner_client.get(url("reports:index", company=tree.p.pk)).content.decode()
    send = f'{reverse("reports:send")}?company={tree.p.pk}&amp;month=2026-11&amp;kind=endpoint'
    assert send in html
    assert f'href="{reverse("reports:history")}"' in html and f'href="{reverse("reports:schedules")}"' in html
    assert partner_client.get(send.replace("&amp;", "&")).status_code == 200
    # a reporter may send and see the history, but schedules are for administrators
    client.force_login(make_user(company=tree.p, role=Role.REPORTER))
    html = client.get(url("reports:index", company=tree.p.pk)).content.decode()
    assert send in html and f'href="{reverse("reports:schedules")}"' not in html


def test_R1_U11_a_report_adding_product_types_together_says_so(partner_client, tree):
    """Partner P has Endpoint Security and EDR (standalone) customers: the report for all product
    types warns that it adds them; a report for one product type does not."""
    html = partner_client.get(url("reports:index", company=tree.p.pk)).content.decode()
    assert 'data-testid="mixed-products"' in html
    assert "adds EDR (standalone) and Endpoint Security figures together" in html
    one = partner_client.get(url("reports:index", company=tree.p.pk, product_type="endpoint_security"))
    assert 'data-testid="mixed-products"' not in one.content.decode()
    # a company of one product type has nothing to warn about
    alone = partner_client.get(url("reports:index", company=tree.a.pk)).content.decode()
    assert 'data-testid="mixed-products"' not in alone


def test_R2_C6_chart_counts_the_subtree_only_where_each_item_is_enabled(tree):
    """The daily chart reads the company-scoped endpoint-day rows in one statement: each series counts the
    subtree's companies with its item enabled, and another partner's company never reaches it."""
    import datetime as dt

    from licensing.entitlements import entitlements_set
    from reports.builder import report_build
    from tests.reports.fleet_setup import DAY, NOV, admin_of
    from tests.usage.fleet import Machine
    from usage.rollups import usage_company_rollup

    def day_counts(company, key):
        report = report_build(actor=admin_of(company), company=company, month=NOV)
        return {day.day: n for day, n in next(c for c in report.chart if c.key == key).points if n}

    # A's 1 patched endpoint and C's 2; EDR: A's 2 (E's EDR endpoints run the EDR product type, not the add-on)
    assert day_counts(tree.p, "patch_management") == {DAY.day: 3}
    assert day_counts(tree.p, "edr") == {DAY.day: 2}
    entitlements_set(actor=None, company=tree.s, purpose="resell", keys={"endpoint_security", "a_la_carte",
                                                                          "patch_management"})
    entitlements_set(actor=None, company=tree.z, purpose="own", keys={"endpoint_security", "a_la_carte",
                                                                        "patch_management"})
    for _ in range(4):
        Machine(tree.z).beat(DAY + dt.timedelta(days=1), modules=["antimalware", "patch_management"])
    usage_company_rollup(company_id=tree.z.pk, months=[NOV])
    assert day_counts(tree.s, "patch_management") == {DAY.day + 1: 4}
    assert day_counts(tree.p, "patch_management") == {DAY.day: 3}
