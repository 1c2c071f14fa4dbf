"""A partner works with the Monthly License Usage report in a real browser (R1, R2, R4)."""

import pytest

from tests.e2e.conftest import sign_in
from tests.factories import PASSWORD, make_user
from tests.reports.fleet_setup import build_tree

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_R1_R2_R4_partner_report_options_columns_drill_down_and_exports(live_server, page, platform):
    tree = build_tree(platform)
    user = make_user(company=tree.p, email="reports.e2e@example.test")
    sign_in(page, live_server, user.email, PASSWORD)
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/reports/?company={tree.p.pk}&month=2026-11")
    assert page.locator("svg.report-chart polyline").count() >= 3
    assert page.locator("#report-table tbody tr").count() == 5

    # R1 options: only direct companies, product type EDR
    page.check("#id_only_direct")
    page.select_option("#id_product_type", "edr_standalone")
    page.click("#show-report")
    page.wait_for_url("**only_direct=on**")
    names = page.locator("#report-table tbody td[data-column=company_name]").all_inner_texts()
    assert names == ["Partner P", "Customer A", "Partner Q", "Customer E"]
    row_e = page.locator(f"#report-table tr[data-company='{tree.e.pk}'] td[data-column=endpoint_usage]")
    assert row_e.inner_text().strip() == "2"
    row_a = page.locator(f"#report-table tr[data-company='{tree.a.pk}'] td[data-column=endpoint_usage]")
    assert row_a.inner_text().strip() == "0"

    # R2: hide two columns; after a reload they are still hidden
    page.goto(f"{live_server.url}/reports/?company={tree.p.pk}&month=2026-11")
    page.click("#columns-menu summary")
    for column in ("license_key", "sve_vdi_hours"):
        page.uncheck(f"#columns-form input[data-column={column}]")
        page.wait_for_function("document.getElementById('columns-form').dataset.saved === 'yes'")
    assert not page.locator("#report-table th[data-column=license_key]").is_visible()
    page.reload()
    for column in ("license_key", "sve_vdi_hours"):
        assert not page.locator(f"#report-table th[data-column={column}]").is_visible()
        assert not page.locator(f"#report-table td[data-column={column}]").first.is_visible()
    assert page.locator("#report-table th[data-column=sve_vs]").is_visible()

    # R2: each number opens the endpoints behind it
    page.click(f"#report-table tr[data-company='{tree.a.pk}'] td[data-column=ats] a.drill")
    page.wait_for_selector("#drill-table")
    assert page.locator("#drill-count").inner_text() == "2"
    assert page.locator("#drill-table tbody tr").count() == 2
    page.click("#back-to-report")
    page.wait_for_selector("#report-table")

    # R4: the exports download
    with page.expect_download() as csv_download:
        page.click("#export-csv")
    assert csv_download.value.suggested_filename == "monthly-license-usage-partner-p-2026-11.csv"
    with open(csv_download.value.path(), encoding="utf-8") as handle:
        assert handle.readline().startswith("Path,Company name,Company type,License key")
    with page.expect_download() as pdf_download:
        page.click("#export-pdf")
    with open(pdf_download.value.path(), "rb") as handle:
        assert handle.read(5) == b"%PDF-"
