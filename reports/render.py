"""Outputs of the Monthly License Usage report: CSV (streamed), PDF (WeasyPrint) and the SVG chart
that the web page and the PDF both show (R2, R3, R4, R6)."""

import base64
import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from html import escape

from django.conf import settings
from django.template.loader import render_to_string

from .builder import Report

PDF_ENDPOINT_LIMIT = 2000  # the PDF lists at most this many endpoints; the CSV lists them all
# the PDF keeps the endpoint's own columns and lists its modules and add-ons in one cell: thirty
# Yes/No columns do not fit a page; the CSV keeps one column per module and add-on (R3)
PDF_FIXED_COLUMNS = 6
PALETTE = ["#1f6feb", "#d97706", "#16a34a", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#4b5563"]


class _Line:
    """A file-like target for csv.writer that hands back what was written."""

    def __init__(self):
        self.value = ""

    def write(self, text: str) -> None:
        self.value += text


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    """A text cell a spreadsheet would run as a formula (a company name or hostname starting with =,
    +, -, @, tab or CR) is written with a leading apostrophe; numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_line(writer, buffer: _Line, values) -> str:
    buffer.value = ""
    writer.writerow([_cell(value) for value in values])
    return buffer.value


def _css_string(text: str) -> str:
    """`text` for a CSS string in double quotes: anything but plain letters, digits and a few signs is
    a CSS escape, so quotes, backslashes, newlines and markup in names print as themselves."""
    return "".join(c if c.isalnum() or c in " .,_()/:·" else f"\\{ord(c):x} " for c in text)


def report_csv_iter(report: Report) -> Iterator[str]:
    """The report as CSV lines: the R3 (or R6) headers and company rows, then the endpoint details
    with a Yes/No column per module and add-on. A generator: rows go out as SQL yields them."""
    buffer = _Line()
    writer = csv.writer(buffer)
    if report.show_company_rows:
        yield _csv_line(writer, buffer, [header for _, header in report.columns])
        for row in report.rows:
            yield _csv_line(writer, buffer, [row[key] for key, _ in report.columns])
    late_months, late = report_late_adjustments(report)
    if late:  # U12: what is billed with this month for months already finalized, as the page and PDF show
        months = ", ".join(f"{month:%B %Y}" for month in late_months)
        yield _csv_line(writer, buffer, [])
        yield _csv_line(writer, buffer, [f"Late adjustments to {months} (arrived after the month was finalized; "
                                         "bill these changes with this month)"])
        yield _csv_line(writer, buffer, [header for header, _ in late])
        yield _csv_line(writer, buffer, [delta for _, delta in late])
    if report.kind != "endpoint":
        return
    if report.show_company_rows:
        yield _csv_line(writer, buffer, [])
    if report.can_drill_down:
        yield _csv_line(writer, buffer, [header for _, header in report.endpoint_columns])
        for endpoint in report.endpoints():
            yield _csv_line(writer, buffer, [endpoint[key] for key, _ in report.endpoint_columns])


def report_filename(report: Report, ext: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", report.company.name.lower()).strip("-") or "company"
    kind = {"endpoint": "", "exchange": "exchange-", "email_security": "email-security-"}[report.kind]
    return f"{kind}monthly-license-usage-{slug}-{report.month:%Y-%m}.{ext.lstrip('.')}"


# --- chart --------------------------------------------------------------------------------------------

def report_chart_svg(report: Report) -> str:
    """The chart as inline SVG: per-day lines of add-on and service usage for the endpoint report;
    protected mailboxes per company for the Exchange and Email Security reports."""
    if report.kind == "endpoint":
        return _line_chart(report)
    return _bar_chart(report)


def _line_chart(report: Report, width: int = 760, height: int = 260) -> str:
    series = report.chart
    left, right, top, bottom = 44, 180, 16, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([v for s in series for _, v in s.points] + [1])
    days = len(series[0].points) if series else 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="report-chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="Add-on and service usage in '
             f'{escape(report.month_label)}">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    for i in range(5):  # horizontal grid with values
        y = top + plot_h - plot_h * i / 4
        value = round(peak * i / 4)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#4b5563" '
                     f'font-family="DejaVu Sans, sans-serif">{value}</text>')
    for day in range(1, days + 1, 5 if days > 10 else 1):
        x = left + plot_w * (day - 1) / max(days - 1, 1)
        parts.append(f'<text x="{x:.1f}" y="{height - 10}" font-size="10" text-anchor="middle" fill="#4b5563" '
                     f'font-family="DejaVu Sans, sans-serif">{day}</text>')
    if not series:
        parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" font-size="12" '
                     'fill="#4b5563" font-family="DejaVu Sans, sans-serif">No add-on or service is enabled</text>')
    for index, item in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        points = " ".join(f"{left + plot_w * i / max(days - 1, 1):.1f},{top + plot_h - plot_h * v / peak:.1f}"
                          for i, (_, v) in enumerate(item.points))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}" '
                     f'data-series="{item.key}"><title>{escape(item.label)}</title></polyline>')
        ly = top + 14 * index + 6
        parts.append(f'<rect x="{left + plot_w + 12}" y="{ly}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w + 26}" y="{ly + 9}" font-size="11" fill="#111827" '
                     f'font-family="DejaVu Sans, sans-serif">{escape(item.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bar_chart(report: Report, width: int = 760, bars: int = 15) -> str:
    rows = [r for r in report.rows if r["company_id"] != report.company.pk]
    rows = sorted(rows, key=lambda r: r["protected_mailboxes"] if isinstance(r["protected_mailboxes"], int)
                  else -1, reverse=True)[:bars]
    height = 30 + 20 * max(len(rows), 1)
    peak = max([r["protected_mailboxes"] for r in rows if isinstance(r["protected_mailboxes"], int)] + [1])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="report-chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="Protected mailboxes per company">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    if not rows:
        parts.append('<text x="10" y="20" font-size="12" fill="#4b5563" font-family="DejaVu Sans, sans-serif">'
                     'No company below this one</text>')
    for i, row in enumerate(rows):
        value = row["protected_mailboxes"]
        y = 10 + 20 * i
        bar = 0 if not isinstance(value, int) else (width - 320) * value / peak
        parts.append(f'<text x="200" y="{y + 12}" font-size="11" text-anchor="end" fill="#111827" '
                     f'font-family="DejaVu Sans, sans-serif">{escape(row["company_name"][:32])}</text>')
        parts.append(f'<rect x="208" y="{y + 2}" width="{bar:.1f}" height="14" fill="{PALETTE[0]}"/>')
        parts.append(f'<text x="{212 + bar:.1f}" y="{y + 12}" font-size="11" fill="#111827" '
                     f'font-family="DejaVu Sans, sans-serif">{escape(str(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --- PDF ----------------------------------------------------------------------------------------------

def report_logo_data_uri(company) -> str:
    """H2: the company's logo (or the platform's, or the default) for the PDF."""
    from companies.selectors import company_logo

    logo = company_logo(company=company)
    return f"data:{logo.mimetype};base64,{base64.b64encode(logo.content).decode()}"


def report_totals_list(report: Report) -> list[tuple[str, object]]:
    """(header, total) for each figure column: the target's figures as usage_totals gives them."""
    from .builder import FIGURE_OF, MAILBOX_FIGURE

    figures = report.totals["figures"]
    if report.kind != "endpoint":
        return [("Protected mailboxes", figures[MAILBOX_FIGURE[report.kind]])]
    return [(header, figures[FIGURE_OF[key]]) for key, header in report.columns if key in FIGURE_OF]


def report_late_adjustments(report: Report) -> tuple[list[dt.date], list[tuple[str, int]]]:
    """U12: what arrived for finalized months since the last report was made (the months, and
    (header, change) for the report's columns); shown in this report, the finalized months stay as
    they were billed."""
    from .builder import FIGURE_OF, MAILBOX_FIGURE

    late = report.totals.get("late_adjustments") or {}
    if report.kind != "endpoint":
        changes = [("Protected mailboxes", late.get(MAILBOX_FIGURE[report.kind], 0))]
    else:
        changes = [(header, late.get(FIGURE_OF[key], 0)) for key, header in report.columns if key in FIGURE_OF]
    return report.totals.get("late_adjustments_months", []), [(h, d) for h, d in changes if d]


def report_mixed_products(report: Report) -> list[str]:
    """R1/U11: the product types an unfiltered endpoint report adds together (more than one means
    Endpoint Security and EDR figures are summed: each is billed from its own report)."""
    from usage.models import CompanyMonthUsage

    from .builder import PRODUCT_TYPES

    if report.kind != "endpoint" or report.options.product_type:
        return []
    from usage.selectors import rows_in_view

    rows = rows_in_view(CompanyMonthUsage.objects.filter(month=report.month),  # H5: the month's place in the tree
                        company=report.company, subtree=True, viewer=report.actor.company)
    keys = set(rows.exclude(product_type="").values_list("product_type", flat=True).distinct())
    return [PRODUCT_TYPES.get(k, k) for k in sorted(keys)] if len(keys) > 1 else []


def report_pdf(report: Report) -> bytes:
    """R4: logo, title, month and options, the chart, the table across pages (headers repeated on
    each page), page numbers; landscape when the table is wide."""
    from weasyprint import HTML

    endpoints = []
    more_endpoints = False
    if report.kind == "endpoint" and report.can_drill_down:
        for endpoint in report.endpoints():
            if len(endpoints) == PDF_ENDPOINT_LIMIT:
                more_endpoints = True
                break
            endpoints.append([endpoint[key] for key, _ in report.endpoint_columns[:PDF_FIXED_COLUMNS]] + [
                ", ".join(header for key, header in report.endpoint_columns[PDF_FIXED_COLUMNS:]
                          if endpoint[key] == "Yes")])
    html = render_to_string("reports/pdf.html", {
        "report": report,
        "logo": report_logo_data_uri(report.company),
        "chart": "data:image/svg+xml;base64," + base64.b64encode(report_chart_svg(report).encode()).decode(),
        "rows": [[row[key] for key, _ in report.columns] for row in report.rows] if report.show_company_rows else [],
        "landscape": len(report.columns) > 8,
        "endpoint_headers": [h for _, h in report.endpoint_columns[:PDF_FIXED_COLUMNS]] + ["Modules and add-ons"],
        "endpoints": endpoints, "more_endpoints": more_endpoints, "endpoint_limit": PDF_ENDPOINT_LIMIT,
        "options": report.options.describe(),
        "totals": report_totals_list(report),
        **dict(zip(("late_months", "late"), report_late_adjustments(report), strict=True)),
        "mixed": report_mixed_products(report),
        "footer": _css_string(f"{report.title} · {report.company.name} · {report.month_label}"),
    })
    out = io.BytesIO()
    HTML(string=html, base_url=str(settings.BASE_DIR)).write_pdf(out)
    return out.getvalue()
