"""R5: sending the report by email now, through a real SMTP server (aiosmtpd) read back here."""

import datetime as dt
import email
import email.policy
import socket
import threading
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from django.core.exceptions import ValidationError
from django.db import connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext

from companies.models import Role
from licensing.entitlements import entitlements_set
from reports.builder import ReportOptions, report_build
from reports.delivery import (
    LOGO_CID,
    report_recipients_eligible,
    report_run_deliver,
    report_send_now,
)
from reports.models import DeliveryStatus, ReportDelivery, ReportFile, ReportRun, RunStatus
from reports.render import report_csv_iter
from tests.factories import PASSWORD, make_company, make_partner, make_user
from tests.usage.fleet import Machine
from usage.rollups import usage_company_rollup

NOV = dt.date(2026, 11, 1)
DAY = dt.datetime(2026, 11, 10, 9, tzinfo=dt.UTC)
OWN = {"endpoint_security", "a_la_carte", "patch_management", "edr"}


# --- a real SMTP server ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class SmtpSink:
    """Keeps every message it accepts; `reject` holds addresses answered with 550 (a failed send)."""

    messages: list = field(default_factory=list)
    reject: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd hook
        if address in self.reject:
            return "550 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted"

    def to(self, address: str) -> list:
        return [message for rcpts, message in self.messages if address in rcpts]


def smtp_start(port: int | None = None) -> tuple[Controller, SmtpSink]:
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port or free_port())
    controller.start()
    return controller, sink


@pytest.fixture
def smtp(settings):
    controller, sink = smtp_start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    yield sink
    controller.stop()


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


# --- a small tree with telemetry ------------------------------------------------------------------------

@dataclass
class Tree:
    p: object
    a: object
    s: object
    z: object
    p_admin: object
    p_reporter: object
    a_admin: object
    s_admin: object


def build(platform) -> Tree:
    """platform > partner P > customer A (3 endpoints, one with Patch Management);
    platform > partner S > customer Z (elsewhere: never visible to P)."""
    p = make_partner(parent=platform, name="Partner P")
    entitlements_set(actor=None, company=p, purpose="resell", keys=OWN)
    entitlements_set(actor=None, company=p, purpose="own", keys={"endpoint_security", "a_la_carte"})
    a = make_company(parent=p, name="Customer A")
    entitlements_set(actor=None, company=a, purpose="own", keys=OWN)
    s = make_partner(parent=platform, name="Partner S")
    entitlements_set(actor=None, company=s, purpose="resell", keys={"endpoint_security", "a_la_carte"})
    z = make_company(parent=s, name="Customer Z")
    entitlements_set(actor=None, company=z, purpose="own", keys={"endpoint_security", "a_la_carte"})
    Machine(a).beat(DAY, modules=["antimalware"])
    Machine(a).beat(DAY, modules=["antimalware", "patch_management"])
    Machine(a).beat(DAY, modules=["antimalware", "edr"])
    Machine(z).beat(DAY, modules=["antimalware"])
    for company in (p, a, s, z):
        usage_company_rollup(company_id=company.pk, months=[NOV])
    return Tree(p=p, a=a, s=s, z=z,
                p_admin=make_user(company=p, email="admin@p.test"),
                p_reporter=make_user(company=p, role=Role.REPORTER, email="reporter@p.test"),
                a_admin=make_user(company=a, email="admin@a.test"),
                s_admin=make_user(company=s, email="admin@s.test"))


def _send(*, actor, company, recipients, options=ReportOptions(), kind="endpoint") -> ReportRun:  # noqa: B008
    run = report_send_now(actor=actor, company_id=company.pk, month="2026-11", kind=kind, options=options,
                          recipient_ids=[u.pk for u in recipients])
    report_run_deliver(run_id=run.pk)
    run.refresh_from_db()
    return run


def _attachments(message) -> dict:
    return {part.get_filename(): part for part in message.iter_attachments() if part.get_filename()}


pytestmark = pytest.mark.django_db


def test_R5_send_now_emails_csv_and_pdf_with_inline_logo(platform, smtp, media, django_capture_on_commit_callbacks):
    tree = build(platform)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        run = report_send_now(actor=tree.p_admin, company_id=tree.a.pk, month="2026-11",
                              recipient_ids=[tree.p_admin.pk, tree.a_admin.pk])
    assert len(queued) == 1  # the sending is queued for a worker once the run is committed
    report_run_deliver(run_id=run.pk)
    run.refresh_from_db()

    assert run.status == RunStatus.SENT
    assert sorted(rcpts[0] for rcpts, _ in smtp.messages) == ["admin@a.test", "admin@p.test"]
    assert all(len(rcpts) == 1 for rcpts, _ in smtp.messages)  # one email each: no one sees another's address
    message = smtp.to("admin@p.test")[0]
    assert message["Subject"] == "Monthly License Usage: Customer A, November 2026"
    assert message["To"] == "admin@p.test"

    files = _attachments(message)
    csv_name = "monthly-license-usage-customer-a-2026-11.csv"
    pdf_name = "monthly-license-usage-customer-a-2026-11.pdf"
    assert set(files) == {csv_name, pdf_name}
    # the attached CSV is the report exactly as the recipient may see it
    expected = "".join(report_csv_iter(report_build(actor=tree.p_admin, company=tree.a, month=NOV)))
    assert files[csv_name].get_content().replace("\r\n", "\n") == expected.replace("\r\n", "\n")
    assert "Patch Management usage" in expected and expected.count("\n") > 5
    pdf = files[pdf_name].get_content()
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000

    # H2: the logo travels inline and the HTML body points at it
    html = message.get_body(preferencelist=("html",)).get_content()
    assert f'src="cid:{LOGO_CID}"' in html
    logo = [part for part in message.walk() if part.get("Content-ID") == f"<{LOGO_CID}>"]
    assert len(logo) == 1 and logo[0].get_content_maintype() == "image"
    assert logo[0].get_content_disposition() == "inline"
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "Customer A" in text and "November 2026" in text

    # the report history keeps what was sent, once per company of recipients
    assert ReportFile.objects.filter(company=tree.a).count() == 2
    assert set(run.deliveries.values_list("status", flat=True)) == {DeliveryStatus.SENT}


def test_R5_recipients_must_be_users_who_may_see_the_report(platform, smtp, media):
    tree = build(platform)
    eligible_a = set(report_recipients_eligible(owner=tree.p, company=tree.a).values_list("email", flat=True))
    assert eligible_a == {"admin@p.test", "reporter@p.test", "admin@a.test"}
    # a customer's users do not see their partner's report (it carries the partner's other customers)
    eligible_p = set(report_recipients_eligible(owner=tree.p, company=tree.p).values_list("email", flat=True))
    assert eligible_p == {"admin@p.test", "reporter@p.test"}

    for outsider in (tree.s_admin, tree.a_admin):
        with pytest.raises(ValidationError) as error:
            report_send_now(actor=tree.p_admin, company_id=tree.p.pk, month="2026-11", recipient_ids=[outsider.pk])
        assert "recipients" in error.value.message_dict
    assert not ReportRun.objects.exists()  # nothing half-written
    assert not smtp.messages


def test_R5_C3_assist_off_hides_the_customer_users_and_endpoint_rows(platform, smtp, media):
    tree = build(platform)
    tree.a.partner_can_assist = False
    tree.a.save(update_fields=["partner_can_assist"])
    eligible = set(report_recipients_eligible(owner=tree.p, company=tree.a).values_list("email", flat=True))
    assert eligible == {"admin@p.test", "reporter@p.test"}  # C3/C5: the partner does not see A's accounts

    run = _send(actor=tree.p_admin, company=tree.a, recipients=[tree.p_admin])
    assert run.status == RunStatus.SENT
    csv_text = _attachments(smtp.to("admin@p.test")[0])["monthly-license-usage-customer-a-2026-11.csv"].get_content()
    assert "Customer A" in csv_text
    assert "Uptime" not in csv_text and "host-" not in csv_text  # company figures only, no endpoint rows
    assert ReportFile.objects.get().network_detail is False


def test_R5_endpoint_rows_go_to_who_may_see_the_network(platform, smtp, media):
    tree = build(platform)
    _send(actor=tree.p_admin, company=tree.a, recipients=[tree.p_admin])
    csv_text = _attachments(smtp.to("admin@p.test")[0])["monthly-license-usage-customer-a-2026-11.csv"].get_content()
    assert csv_text.count("host-") == 3  # the three endpoints of Customer A
    assert ReportFile.objects.get().network_detail is True


def test_C6_send_now_for_another_company_is_404(platform, smtp, media, client):
    tree = build(platform)
    with pytest.raises(Http404):
        report_send_now(actor=tree.p_admin, company_id=tree.z.pk, month="2026-11", recipient_ids=[tree.p_admin.pk])
    client.login(username=tree.p_admin.email, password=PASSWORD)
    assert client.get(f"/reports/send?company={tree.z.pk}&month=2026-11").status_code == 404
    response = client.post("/reports/send", {"company": tree.z.pk, "month": "2026-11", "kind": "endpoint",
                                             "recipients": [tree.p_admin.pk]})
    assert response.status_code == 404
    assert client.get("/reports/send?company=999999&month=2026-11").status_code == 404
    assert not ReportRun.objects.exists() and not smtp.messages


def test_R5_send_now_page_queues_a_run_and_names_bad_fields(platform, smtp, media, client,
                                                             django_capture_on_commit_callbacks):
    tree = build(platform)
    client.login(username=tree.p_admin.email, password=PASSWORD)
    page = client.get(f"/reports/send?company={tree.a.pk}&month=2026-11")
    assert page.status_code == 200
    body = page.content.decode()
    assert "admin@a.test" in body and "admin@s.test" not in body

    bad = client.post("/reports/send", {"company": tree.a.pk, "month": "2026-13", "kind": "endpoint",
                                        "recipients": [tree.p_admin.pk]})
    assert bad.status_code == 400 and "Give a month as YYYY-MM" in bad.content.decode()
    bad = client.post("/reports/send", {"company": tree.a.pk, "month": "2026-11", "kind": "endpoint",
                                        "recipients": [tree.s_admin.pk]})
    assert bad.status_code == 400 and 'data-field="recipients"' in bad.content.decode()
    assert not ReportRun.objects.exists()

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post("/reports/send", {"company": tree.a.pk, "month": "2026-11", "kind": "endpoint",
                                                 "recipients": [tree.p_admin.pk, tree.a_admin.pk]})
    run = ReportRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/reports/runs/{run.pk}"
    assert len(queued) == 1
    assert sorted(run.deliveries.values_list("email", flat=True)) == ["admin@a.test", "admin@p.test"]
    status = client.get(f"/reports/runs/{run.pk}")
    assert 'data-status="queued"' in status.content.decode() and 'hx-trigger="every 2s"' in status.content.decode()
    # C6: another partner's user cannot open the run
    client.logout()
    client.login(username=tree.s_admin.email, password=PASSWORD)
    assert client.get(f"/reports/runs/{run.pk}").status_code == 404


def test_R5_failed_send_is_recorded_retried_with_backoff_and_sent_once(platform, smtp, media, settings):
    """A recipient whose server refuses the message is retried by the task (back-off); those
    already sent are not sent again."""
    from reports.tasks import run_deliver

    tree = build(platform)
    settings.REPORT_SEND_ATTEMPTS = 3
    settings.REPORT_SEND_RETRY_SECONDS = 0
    smtp.reject.add("admin@a.test")
    run = report_send_now(actor=tree.p_admin, company_id=tree.a.pk, month="2026-11",
                          recipient_ids=[tree.p_admin.pk, tree.a_admin.pk])
    outcome = report_run_deliver(run_id=run.pk)
    run.refresh_from_db()
    assert (outcome.sent, outcome.failed) == (1, 1)
    assert run.status == RunStatus.RETRYING
    failed = ReportDelivery.objects.get(run=run, email="admin@a.test")
    assert failed.status == DeliveryStatus.FAILED and "550" in failed.error
    assert "admin@a.test" in run.last_error

    # every retry fails too: after the last attempt the run is failed, and says so
    run_deliver.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.attempts == 1 + 3
    assert ReportDelivery.objects.get(run=run, email="admin@a.test").attempts == 4

    # the server takes it again; "Send again" sends only to the failed recipient
    smtp.reject.clear()
    from reports.delivery import report_run_retry_now

    report_run_retry_now(actor=tree.p_admin, run=run)
    run_deliver.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == RunStatus.SENT
    assert len(smtp.to("admin@p.test")) == 1 and len(smtp.to("admin@a.test")) == 1


def test_R5_retry_backoff_doubles(platform, smtp, media, settings):
    from reports.tasks import run_deliver

    tree = build(platform)
    settings.REPORT_SEND_ATTEMPTS = 5
    settings.REPORT_SEND_RETRY_SECONDS = 30
    smtp.reject.add("admin@p.test")
    run = report_send_now(actor=tree.p_admin, company_id=tree.a.pk, month="2026-11", recipient_ids=[tree.p_admin.pk])
    countdowns = []
    original = run_deliver.retry

    def spy(*args, **kwargs):
        countdowns.append(kwargs.get("countdown"))
        run.refresh_from_db()
        assert run.status == RunStatus.RETRYING and run.next_retry_at is not None
        return original(*args, **kwargs)

    run_deliver.retry = spy
    try:
        run_deliver.apply(args=[run.pk])
    finally:
        run_deliver.retry = original
    assert countdowns == [30, 60, 120, 240]


def test_R5_recipient_who_may_no_longer_see_is_skipped(platform, smtp, media):
    tree = build(platform)
    run = report_send_now(actor=tree.p_admin, company_id=tree.a.pk, month="2026-11",
                          recipient_ids=[tree.p_admin.pk, tree.a_admin.pk])
    tree.a_admin.is_active = False
    tree.a_admin.save(update_fields=["is_active"])
    report_run_deliver(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SENT
    assert [rcpts for rcpts, _ in smtp.messages] == [["admin@p.test"]]
    assert ReportDelivery.objects.get(email="admin@a.test").status == DeliveryStatus.SKIPPED


def test_R5_queries_stay_flat_as_recipients_grow(platform, smtp, media):
    """Sending to more users of the same company builds the report once; queries per email stay flat."""
    tree = build(platform)
    few = [tree.p_admin]
    many = [tree.p_admin] + [make_user(company=tree.p, role=Role.REPORTER) for _ in range(4)]
    counts = []
    for users in (few, many):
        run = report_send_now(actor=tree.p_admin, company_id=tree.a.pk, month="2026-11",
                              recipient_ids=[u.pk for u in users])
        with CaptureQueriesContext(connection) as ctx:
            report_run_deliver(run_id=run.pk)
        counts.append(len(ctx.captured_queries))
    assert ReportFile.objects.count() == 2  # one file per run: all recipients are of one company
    per_extra_email = (counts[1] - counts[0]) / (len(many) - len(few))
    assert per_extra_email <= 6, counts


def test_R5_H2_email_carries_the_company_own_logo(platform, smtp, media):
    import io

    from django.core.files.base import ContentFile
    from PIL import Image

    tree = build(platform)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    tree.a.logo.save("a.png", ContentFile(buffer.getvalue()), save=True)
    _send(actor=tree.p_admin, company=tree.a, recipients=[tree.p_admin])
    message = smtp.to("admin@p.test")[0]
    logo = next(part for part in message.walk() if part.get("Content-ID") == f"<{LOGO_CID}>")
    assert logo.get_content_type() == "image/png"
    assert logo.get_content() == buffer.getvalue()


def test_H2_email_of_a_company_without_a_logo_carries_the_platforms_else_the_default(platform, smtp, media):
    import io

    from django.core.files.base import ContentFile
    from PIL import Image

    tree = build(platform)

    def sent_logo():
        smtp.messages.clear()
        _send(actor=tree.p_admin, company=tree.a, recipients=[tree.p_admin])
        message = smtp.to("admin@p.test")[0]
        return next(part for part in message.walk() if part.get("Content-ID") == f"<{LOGO_CID}>")

    default = sent_logo()
    assert default.get_content_type() == "image/svg+xml"
    assert default.get_filename() == "default-logo.svg"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 200, 30)).save(buffer, format="PNG")
    platform.logo.save("platform.png", ContentFile(buffer.getvalue()), save=True)
    platforms = sent_logo()  # neither the customer nor its partner has a logo: the platform's
    assert platforms.get_content_type() == "image/png"
    assert platforms.get_content() == buffer.getvalue()


def test_R5_C3_a_retry_does_not_resend_endpoint_rows_the_customer_has_closed_since(platform, smtp, media):
    """P's report on itself lists A's endpoints. The first attempt reaches the administrator, not
    the reporter; A turns assist off; the retry builds the reporter a new file without A's
    endpoints instead of resending the first one."""
    from companies.services import company_set_assist

    tree = build(platform)
    smtp.reject.add("reporter@p.test")
    run = report_send_now(actor=tree.p_admin, company_id=tree.p.pk, month="2026-11",
                          recipient_ids=[tree.p_admin.pk, tree.p_reporter.pk])
    report_run_deliver(run_id=run.pk)
    first = ReportFile.objects.get()
    csv_name = "monthly-license-usage-partner-p-2026-11.csv"
    assert _attachments(smtp.to("admin@p.test")[0])[csv_name].get_content().count("host-") == 3

    company_set_assist(actor=tree.a_admin, company=tree.a, on=False)
    smtp.reject.clear()
    report_run_deliver(run_id=run.pk)
    resent = _attachments(smtp.to("reporter@p.test")[0])[csv_name].get_content()
    assert "Customer A" in resent and "host-" not in resent
    assert ReportDelivery.objects.get(run=run, email="reporter@p.test").report_file_id != first.pk
