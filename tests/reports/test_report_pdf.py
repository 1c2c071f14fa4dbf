"""The PDF export, checked the way a reader sees it: pages rendered to PNG with pdftoppm, text
read back with pdftotext (R4: logo, title, month, options, chart, table, page numbers)."""

import csv
import datetime as dt
import io
import re
import shutil
import subprocess

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from licensing.entitlements import entitlements_set
from reports.builder import ReportOptions, report_build
from reports.render import report_csv_iter, report_pdf
from tests.factories import make_company, make_partner
from tests.reports.fleet_setup import NOV, admin_of, build_tree
from tests.reports.test_report_builder import R3_HEADERS
from tests.usage.fleet import Machine
from usage.rollups import usage_company_rollup

pytestmark = [pytest.mark.django_db,
              pytest.mark.skipif(not shutil.which("pdftoppm"), reason="poppler-utils is not installed")]
LOGO_RGB = (230, 20, 120)  # a colour nothing else in the report uses


def logo_upload() -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 60), LOGO_RGB).save(buffer, format="PNG")
    return SimpleUploadedFile("logo.png", buffer.getvalue(), content_type="image/png")


def pdf_text(path, *pages) -> str:
    args = ["pdftotext", "-raw"]
    if pages:
        args += ["-f", str(pages[0]), "-l", str(pages[-1])]
    text = subprocess.run([*args, str(path), "-"], check=True, capture_output=True, text=True).stdout
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"-\s(?=[a-z])", "-", text)  # a header broken after its hyphen reads as one word


def has_header(text: str, header: str) -> bool:
    """A table header as read back from the PDF. A header cell wraps over lines, and text extraction
    reads a table row by row, so a neighbouring header's next line can stand between its words
    ("Subscription auto- Minimum renewal usage"): its words must appear in order, at most three
    other words apart."""
    words = [re.escape(word) for word in header.split()]
    return re.search(r"\s(?:\S+\s){0,3}?".join(words), text) is not None


def page_pngs(path, tmp_path) -> list[Image.Image]:
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(path), str(tmp_path / "page")], check=True)
    return [Image.open(p).convert("RGB") for p in sorted(tmp_path.glob("page*.png"))]


def logo_pixels(image: Image.Image) -> int:
    data = image.tobytes()
    return sum(1 for pixel in zip(data[0::3], data[1::3], data[2::3], strict=True)
               if all(abs(a - b) < 30 for a, b in zip(pixel, LOGO_RGB, strict=True)))


@pytest.fixture
def logo_partner(platform):
    partner = make_partner(parent=platform, name="Logo Partner", logo=logo_upload())
    entitlements_set(actor=None, company=partner, purpose="resell",
                     keys={"endpoint_security", "a_la_carte", "patch_management"})
    customer = make_company(parent=partner, name="Big Customer")
    entitlements_set(actor=None, company=customer, purpose="own",
                     keys={"endpoint_security", "a_la_carte", "patch_management"})
    for i in range(120):  # enough endpoint rows to run over several pages
        Machine(customer).beat(dt.datetime(2026, 11, 2 + i % 20, tzinfo=dt.UTC),
                               modules=["antimalware", "patch_management"] if i % 3 else ["antimalware"])
    usage_company_rollup(company_id=customer.pk, months=[NOV])
    return partner


def test_R4_pdf_has_logo_headers_page_numbers_and_the_csv_totals(logo_partner, tmp_path):
    report = report_build(actor=admin_of(logo_partner), company=logo_partner, month=NOV)
    path = tmp_path / "report.pdf"
    path.write_bytes(report_pdf(report))
    pages = page_pngs(path, tmp_path)
    assert len(pages) >= 3
    assert logo_pixels(pages[0]) > 50  # the company's logo is drawn on the first page
    assert pages[0].width > pages[0].height  # landscape: the R3 table is wide

    text = pdf_text(path)
    assert "Monthly License Usage" in text and "November 2026" in text and "Product type: All" in text
    for header in R3_HEADERS:
        assert has_header(text, header), header
    assert f"Page 1 of {len(pages)}" in text and f"Page {len(pages)} of {len(pages)}" in text
    # the endpoint table's header is repeated on every page it runs over
    for number in range(2, len(pages) + 1):
        assert "Uptime (seconds)" in pdf_text(path, number), number

    first = next(csv.DictReader(io.StringIO("".join(report_csv_iter(report)).partition("\r\n\r\n")[0])))
    totals = dict(re.findall(r"([A-Za-z:. ]+?): (\d+|Not enabled)[;.]?", text.split("Totals for")[1].split(
        R3_HEADERS[0])[0]))
    totals = {k.strip().removeprefix(logo_partner.name + ":").strip(): v for k, v in totals.items()}
    for header in ("Licensed endpoints", "Endpoint usage", "Patch Management usage", "SVE: VS", "ATS usage"):
        assert totals[header] == first[header], header
    assert first["Licensed endpoints"] == "120" and first["Patch Management usage"] == "80"


def test_R4_pdf_without_a_logo_carries_the_default_one_and_options(platform, tmp_path):
    tree = build_tree(platform)
    report = report_build(actor=admin_of(tree.p), company=tree.p, month=NOV,
                          options=ReportOptions(product_type="edr_standalone", only_direct=True))
    path = tmp_path / "report.pdf"
    path.write_bytes(report_pdf(report))
    text = pdf_text(path)
    assert "GZ Console" in text  # the default logo's wordmark
    assert "Product type: EDR (standalone)" in text and "Only direct companies" in text
    # only direct: C is below Partner Q ("Customer C8M9Q-..." is a customer's type and license key)
    assert not re.search(r"\bCustomer C\b", text.split("Endpoint details")[0])


def test_H2_pdf_of_a_company_without_a_logo_carries_the_platforms(platform, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    tree = build_tree(platform)
    report = report_build(actor=admin_of(tree.p), company=tree.p, month=NOV)
    before = tmp_path / "before.pdf"
    before.write_bytes(report_pdf(report))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    assert logo_pixels(page_pngs(before, tmp_path / "a")[0]) == 0  # nobody has a logo yet: the default
    upload = logo_upload()
    platform.logo.save(upload.name, upload, save=True)
    path = tmp_path / "report.pdf"
    path.write_bytes(report_pdf(report))
    assert logo_pixels(page_pngs(path, tmp_path / "b")[0]) > 50
    assert "GZ Console" not in pdf_text(path, 1)  # the default logo's wordmark is gone


def test_R6_pdf_for_email_security_report(platform, tmp_path):
    tree = build_tree(platform)
    report = report_build(actor=admin_of(tree.p), company=tree.p, month=NOV, kind="email_security")
    path = tmp_path / "report.pdf"
    path.write_bytes(report_pdf(report))
    text = pdf_text(path)
    assert "Email Security Monthly License Usage" in text
    for header in ("Path", "Company name", "License key", "Month", "Protected mailboxes"):
        assert has_header(text, header), header
    assert page_pngs(path, tmp_path)[0].height > page_pngs(path, tmp_path)[0].width  # narrow: portrait


def test_R4_U12_late_adjustments_show_in_the_next_report_page_and_pdf(client, platform, tmp_path):
    """Data for November that arrives after the close is not in November's frozen figures; the
    December report (page and PDF) shows it as a late adjustment to November."""
    from django.urls import reverse

    from companies.models import User
    from usage.rollups import usage_month_close

    partner = make_partner(parent=platform, name="Late Partner")
    entitlements_set(actor=None, company=partner, purpose="resell",
                     keys={"endpoint_security", "a_la_carte", "patch_management"})
    customer = make_company(parent=partner, name="Late Customer")
    entitlements_set(actor=None, company=customer, purpose="own",
                     keys={"endpoint_security", "a_la_carte", "patch_management"})
    Machine(customer).beat(dt.datetime(2026, 11, 10, tzinfo=dt.UTC))
    usage_month_close(month=NOV)
    Machine(customer).beat(dt.datetime(2026, 11, 30, 23, 50, tzinfo=dt.UTC),
                           modules=["antimalware", "patch_management"])
    usage_company_rollup(company_id=customer.pk)
    december = dt.date(2026, 12, 1)
    admin = admin_of(partner)

    from freezegun import freeze_time

    with freeze_time("2026-12-02 08:00:00"):  # December's report exists once December has begun
        report = report_build(actor=admin, company=partner, month=december)
        path = tmp_path / "december.pdf"
        path.write_bytes(report_pdf(report))
    text = pdf_text(path)
    assert "Late adjustments to November 2026" in text
    assert "Licensed endpoints: +1" in text and "Patch Management usage: +1" in text

    with freeze_time("2026-12-02 08:00:00"):
        client.force_login(User.objects.get(pk=admin.pk))
        page = client.get(f"{reverse('reports:index')}?company={partner.pk}&month=2026-12").content.decode()
    assert 'data-testid="late-adjustments"' in page and "Late adjustments to November 2026" in page
    # November's own report is the frozen one, without the late endpoint
    client.force_login(User.objects.get(pk=admin.pk))
    november = client.get(f"{reverse('reports:index')}?company={partner.pk}&month=2026-11").content.decode()
    assert 'data-testid="late-adjustments"' not in november
