"""R5: sending the Monthly License Usage report by email, and the report history it leaves.

A run (`ReportRun`) is one sending of a report to a list of recipients, each a `ReportDelivery`.
Every recipient gets the report built as they may see it (C2, C3: built with the recipient as the
actor), with the CSV and the PDF attached and the company's logo inline (H2). The CSV and PDF are
kept as a `ReportFile` (the report history) and reused when a failed send is retried.

Exactly once: a delivery is sent while its row is locked (SELECT ... FOR UPDATE SKIP LOCKED) and
marked sent in the same transaction, so two workers running the same run never both send it; with
the run's own key (one run per schedule and month) a recipient gets one email per schedule and month.
"""

import datetime as dt
import logging
import tempfile
from dataclasses import dataclass
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Now
from django.http import Http404
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from companies.access import in_subtree
from companies.models import Company, CompanyStatus, Role, User
from companies.selectors import companies_with_accounts_managed_by, company_logo
from usage.rollups import month_previous
from usage.selectors import month_closed_at

from .models import (
    DeliveryStatus,
    ReportDelivery,
    ReportFile,
    ReportRun,
    ReportSchedule,
    ReportSource,
    RunStatus,
)

logger = logging.getLogger(__name__)

LOGO_CID = "company-logo@gz-console"
MAX_RECIPIENTS = 50


# --- Who may receive a report (R5, C3, C5, C6) ---------------------------------------------------------

def _path_ids(*, owner: Company, company: Company) -> list[int]:
    """Ids of the companies from `owner` down to `company`, both included (owner is an ancestor)."""
    ids = [int(part) for part in company.lineage.strip("/").split("/") if part]
    return ids[ids.index(owner.pk):] if owner.pk in ids else []


def report_recipients_eligible(*, owner: Company, company: Company) -> QuerySet[User]:
    """R5: the users who may receive `company`'s report from `owner`: active users of the companies
    from the owner down to the report's company. Anyone further down would see their ancestors'
    figures, anyone further up lies outside the owner's view (C6), and users of a company whose
    partner may not assist stay invisible to the partner (C3, C5)."""
    path = _path_ids(owner=owner, company=company)
    visible = companies_with_accounts_managed_by(viewer=owner).filter(pk__in=path)
    return (User.objects.filter(company__in=visible, is_active=True, company__status=CompanyStatus.ACTIVE)
            .select_related("company").order_by("company__depth", "full_name", "email"))


def recipients_check(*, owner: Company, company: Company, recipient_ids) -> list[User]:
    """The chosen recipients, each one a user who may receive the report, or a ValidationError
    naming the `recipients` field."""
    try:
        ids = sorted({int(i) for i in recipient_ids})
    except (TypeError, ValueError):
        raise ValidationError({"recipients": "Choose recipients from the list."}) from None
    if not ids:
        raise ValidationError({"recipients": "Choose at least one recipient."})
    if len(ids) > MAX_RECIPIENTS:
        raise ValidationError({"recipients": f"Choose at most {MAX_RECIPIENTS} recipients."})
    users = list(report_recipients_eligible(owner=owner, company=company).filter(pk__in=ids))
    if len(users) != len(ids):
        # the same words for a missing id and a user who may not see it (C6)
        raise ValidationError({"recipients": f"Only users who may see the report of {company.name} can receive it."})
    return users


def recipient_may_receive(*, user: User, owner: Company, company: Company) -> bool:
    """Checked again at sending time: accounts are deactivated and companies move (H4, H5)."""
    return (user.is_active and in_subtree(owner, company)
            and report_recipients_eligible(owner=owner, company=company).filter(pk=user.pk).exists())


# --- Report history: generated files ------------------------------------------------------------------

def report_options_dict(options) -> dict:
    return {"product_type": options.product_type or "", "only_endpoint_details": options.only_endpoint_details,
            "only_direct": options.only_direct}


def report_options_from(data: dict):
    from .builder import ReportOptions

    return ReportOptions(product_type=data.get("product_type") or None,
                         only_endpoint_details=bool(data.get("only_endpoint_details")),
                         only_direct=bool(data.get("only_direct")))


def report_file_generate(*, report, source: str) -> ReportFile:
    """Render the report's CSV (streamed to disk, never whole in memory) and PDF, and keep both in
    the report history of the company of the user it was built for."""
    from .render import report_csv_iter, report_filename, report_pdf

    actor = report.actor
    item = ReportFile(
        owner=actor.company, company=report.company, built_for=actor, kind=report.kind,
        month=report.month, options=report_options_dict(report.options),
        network_detail=bool(report.can_drill_down and report.kind == "endpoint"), source=source,
        endpoint_company_ids=report.endpoint_company_ids(),
        title=f"{report.title}: {report.company.name}, {report.month_label}",
        csv_name=report_filename(report, "csv"), pdf_name=report_filename(report, "pdf"),
    )
    with tempfile.TemporaryFile(mode="w+b") as spool:
        for chunk in report_csv_iter(report):
            spool.write(chunk.encode("utf-8"))
        spool.seek(0)
        item.csv_file.save(item.csv_name, File(spool), save=False)
        item.csv_size = item.csv_file.size
    pdf = report_pdf(report)
    item.pdf_file.save(item.pdf_name, ContentFile(pdf), save=False)
    item.pdf_size = len(pdf)
    try:
        item.save()
    except Exception:
        item.csv_file.delete(save=False)
        item.pdf_file.delete(save=False)
        raise
    return item


def report_history(*, actor: User) -> QuerySet[ReportFile]:
    """The history the actor may see: files of its own company about companies still in its
    subtree (C6); a file with endpoint rows only while the actor's company may still see the
    network of its target and of every company whose endpoints it lists (C2, C3): assist turned
    off, or a company moved away, closes it."""
    from .selectors import report_files_closed_sql

    closed = RawSQL(*report_files_closed_sql(actor.company))  # noqa: S611 - our SQL, parameters
    return _history_kept(actor).exclude(pk__in=closed).select_related("company").order_by("-created_at", "-id")


def _history_kept(actor: User) -> QuerySet[ReportFile]:
    """Files of the actor's company about companies still in its subtree (C6), closed or not."""
    return ReportFile.objects.filter(owner=actor.company, company__lineage__startswith=actor.company.lineage)


def access_report_file(actor: User, file_id) -> ReportFile:
    """One history item, or the same 404 for missing, not-yours and closed (C2, C3, C6)."""
    try:
        return report_history(actor=actor).get(pk=file_id)
    except (ReportFile.DoesNotExist, ValueError, TypeError):
        raise Http404("No such report") from None


def report_file_may_delete(*, actor: User, item: ReportFile) -> bool:
    """The history is the company's: its administrators delete any item, other users the items
    built for them."""
    from companies.models import Role

    return actor.role == Role.COMPANY_ADMIN or item.built_for_id == actor.pk


@transaction.atomic
def report_file_delete(*, actor: User, file_id) -> None:
    """Delete a report from the history, with its CSV and PDF. The same 404 for a missing and a
    foreign id (C6); audited (X1). Runs that sent it keep their deliveries (the link is cleared);
    the files leave the disk once the deletion is committed."""
    from companies.audit import audit_record, snapshot

    # a closed file (C3: its endpoint rows are hidden from the actor now) may still be deleted
    try:
        item = _history_kept(actor).select_for_update().select_related("company").get(pk=file_id)
    except (ReportFile.DoesNotExist, ValueError, TypeError):
        raise Http404("No such report") from None
    if not report_file_may_delete(actor=actor, item=item):
        raise PermissionDenied("Only administrators delete reports built for someone else.")
    before = snapshot(item, fields=["company", "kind", "month", "source", "title", "csv_name", "pdf_name"])
    audit_record(actor=actor, company=actor.company, action="report_file.delete", obj=item, before=before,
                 after={})
    storage, names = item.csv_file.storage, [item.csv_file.name, item.pdf_file.name]
    item.delete()

    def remove_files() -> None:
        for name in names:
            if name:
                storage.delete(name)

    transaction.on_commit(remove_files)


# --- The email -----------------------------------------------------------------------------------------

class ReportEmail(EmailMultiAlternatives):
    """mixed[ related[ alternative[text, html], logo ], CSV, PDF ]: the logo shows inline in the
    HTML body (cid:) and the two reports are ordinary attachments."""

    def __init__(self, *args, inline_images=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.inline_images = list(inline_images)

    def _create_message(self, msg):
        return self._create_attachments(self._create_related(self._create_alternatives(msg)))

    def _create_related(self, msg):
        if not self.inline_images:
            return msg
        related = MIMEMultipart(_subtype="related")
        related.attach(msg)
        for image in self.inline_images:
            related.attach(image)
        return related


def company_logo_part(company: Company) -> MIMEImage:
    """H2: the logo the PDF carries, as the email's inline image."""
    logo = company_logo(company=company)
    image = MIMEImage(logo.content, _subtype=logo.mimetype.split("/", 1)[1])
    image.add_header("Content-ID", f"<{LOGO_CID}>")
    image.add_header("Content-Disposition", "inline", filename=logo.name)
    return image


def report_email_build(*, item: ReportFile, recipient: User, sender: str) -> ReportEmail:
    context = {
        "item": item, "recipient": recipient, "sender": sender, "logo_cid": LOGO_CID,
        "options": report_options_from(item.options).describe(),
        "history_url": settings.CONSOLE_URL + reverse("reports:history"),
    }
    subject = " ".join(item.title.split())  # a name stored before names were checked may hold a line break
    message = ReportEmail(
        subject=subject,
        body=render_to_string("reports/email.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[recipient.email],
        inline_images=[company_logo_part(item.company)],
    )
    message.attach_alternative(render_to_string("reports/email.html", context), "text/html")
    with item.csv_file.open("rb") as csv_file:
        message.attach(item.csv_name, csv_file.read(), "text/csv")
    with item.pdf_file.open("rb") as pdf_file:
        message.attach(item.pdf_name, pdf_file.read(), "application/pdf")
    return message


# --- Runs ------------------------------------------------------------------------------------------------

def report_parameters_check(*, kind: str, month, options) -> dt.date:
    """Bad input is refused before anything is queued, with the field it concerns."""
    from .builder import KINDS, PRODUCT_TYPES, month_parse

    if kind not in KINDS:
        raise ValidationError({"kind": f"Choose one of: {', '.join(KINDS)}."})
    if options.product_type and options.product_type not in PRODUCT_TYPES:
        raise ValidationError({"product_type": f"Choose one of: {', '.join(PRODUCT_TYPES)}."})
    month = month_parse(month)
    if month > timezone.now().date().replace(day=1):
        raise ValidationError({"month": "The month cannot be in the future."})
    return month


@transaction.atomic
def report_send_now(*, actor: User, company_id, month, kind: str = "endpoint", options=None,
                    recipient_ids, built: ReportFile | None = None) -> ReportRun:
    """R5 "Send by email now": queue a run that sends the report to the chosen users. `built`: this
    report already generated for `actor` (the JSON-RPC createReport), sent as it is to the
    recipients who see what the actor sees, instead of a second copy in the history."""
    from .builder import ReportOptions, report_access

    company = report_access(actor, company_id)
    options = options or ReportOptions()
    month = report_parameters_check(kind=kind, month=month, options=options)
    recipients = recipients_check(owner=actor.company, company=company, recipient_ids=recipient_ids)
    run = ReportRun.objects.create(owner=actor.company, company=company, requested_by=actor, kind=kind,
                                   month=month, options=report_options_dict(options))
    ReportDelivery.objects.bulk_create(
        ReportDelivery(run=run, recipient=user, email=user.email,
                       report_file=built if built and _build_key(user) == _build_key(actor) else None)
        for user in recipients)
    run_id = run.pk
    transaction.on_commit(lambda: _queue_deliver(run_id))
    return run


def _queue_deliver(run_id: int) -> None:
    from .tasks import run_deliver

    run_deliver.delay(run_id)


def schedule_run_due(*, schedule_id: int, fired_at: dt.datetime) -> ReportRun | None:
    """Beat fired a schedule: the run of the previous month, created once however many times the
    due task arrives (the unique (schedule, month) key). None for a deleted or paused schedule."""
    schedule = (ReportSchedule.objects.select_related("owner", "company")
                .filter(pk=schedule_id, paused=False).first())
    if schedule is None:
        return None
    month = month_previous(fired_at.astimezone(dt.UTC).date())
    existing = ReportRun.objects.filter(schedule=schedule, month=month).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            run = ReportRun.objects.create(
                schedule=schedule, owner=schedule.owner, company=schedule.company, kind=schedule.kind,
                month=month, fired_at=fired_at,
                options={"product_type": schedule.product_type,
                         "only_endpoint_details": schedule.only_endpoint_details,
                         "only_direct": schedule.only_direct})
            ReportDelivery.objects.bulk_create(
                ReportDelivery(run=run, recipient=user, email=user.email)
                for user in schedule.recipients.filter(is_active=True))
    except IntegrityError:
        # another beat (or a restart) fired the same schedule at the same time and won the key
        return ReportRun.objects.get(schedule=schedule, month=month)
    logger.info("report schedule fired", extra={"schedule_id": schedule.pk, "month": month.isoformat(),
                                                "run_id": run.pk})
    return run


@dataclass(frozen=True)
class DeliverOutcome:
    sent: int
    failed: int
    skipped: int
    pending: int  # held by another worker right now

    @property
    def should_retry(self) -> bool:
        return self.failed > 0


def _build_key(user: User) -> int:
    """Recipients of the same company see the same report: report_build decides what a viewer may
    see from its company (C2, C3), so one file serves them all."""
    return user.company_id


def _report_for(run: ReportRun, recipient: User):
    from .builder import report_build

    return report_build(actor=recipient, company=run.company, month=run.month, kind=run.kind,
                        options=report_options_from(run.options))


def report_run_waits_for_close(*, run_id: int, countdown: int) -> bool:
    """R5/U12: a scheduled run sends its month once the month is closed for the report's company and
    its subtree, so the emailed figures are the frozen ones and whatever arrives later shows as a
    late adjustment in the next report. Until then it waits; its page shows when it looks again.
    True when it has to wait."""
    run = ReportRun.objects.filter(pk=run_id).values("schedule_id", "month", "status", "company_id").first()
    if run is None or run["schedule_id"] is None or run["status"] in (RunStatus.SENT, RunStatus.CANCELLED):
        return False
    if month_closed_at(company_ids=[run["company_id"]], month=run["month"])[run["company_id"]] is not None:
        return False
    ReportRun.objects.filter(pk=run_id).update(next_retry_at=timezone.now() + dt.timedelta(seconds=countdown))
    return True


def report_run_deliver(*, run_id: int, final_attempt: bool = False) -> DeliverOutcome:
    """Send every delivery of the run that is not sent yet; record each outcome; set the run's status."""
    run = ReportRun.objects.select_related("owner", "company", "requested_by").get(pk=run_id)
    if run.status in (RunStatus.SENT, RunStatus.CANCELLED):
        return _outcome(run)  # a duplicate task, or its schedule was deleted: nothing (more) to send
    ReportRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, started_at=Coalesce("started_at", Now()), next_retry_at=None,
        attempts=F("attempts") + 1)

    # files already generated for this run: a retry reuses them while their recipients may still open
    # them (C3: a customer's assist turned off since closes a file listing its endpoints)
    built: dict[int, ReportDelivery] = {}
    for done in (run.deliveries.filter(report_file__isnull=False).select_related("recipient", "report_file")
                 .order_by("-report_file_id")):  # the newest file of each recipient company
        built.setdefault(_build_key(done.recipient), done)
    files: dict[int, ReportFile] = {key: done.report_file for key, done in built.items()
                                    if report_history(actor=done.recipient).filter(pk=done.report_file_id).exists()}

    source = ReportSource.SCHEDULE if run.schedule_id else ReportSource.EMAIL
    sender = run.requested_by.full_name if run.requested_by_id else run.owner.name
    todo = list(run.deliveries.exclude(status__in=[DeliveryStatus.SENT, DeliveryStatus.SKIPPED])
                .values_list("pk", flat=True))
    connection = get_connection(fail_silently=False)
    errors = []
    try:
        for delivery_id in todo:
            error = _deliver_one(run=run, delivery_id=delivery_id, files=files, source=source, sender=sender,
                                 connection=connection)
            if error:
                errors.append(error)
    finally:
        connection.close()
    return _run_finish(run=run, final_attempt=final_attempt, errors=errors)


def _deliver_one(*, run: ReportRun, delivery_id: int, files: dict, source: str, sender: str,
                 connection) -> str:
    """Send one delivery under its row lock; returns the error text, or "" when sent or not ours."""
    with transaction.atomic():
        delivery = (ReportDelivery.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("recipient", "recipient__company")
                    .filter(pk=delivery_id).exclude(status__in=[DeliveryStatus.SENT, DeliveryStatus.SKIPPED])
                    .first())
        if delivery is None:
            return ""  # sent already, or another worker is sending it now
        recipient = delivery.recipient
        if not recipient_may_receive(user=recipient, owner=run.owner, company=run.company):
            delivery.status = DeliveryStatus.SKIPPED
            delivery.error = "The recipient may no longer see this report."
            delivery.save(update_fields=["status", "error"])
            return ""
        delivery.attempts += 1
        try:
            key = _build_key(recipient)
            if key not in files:
                files[key] = report_file_generate(report=_report_for(run, recipient), source=source)
            delivery.report_file = files[key]
            message = report_email_build(item=files[key], recipient=recipient, sender=sender)
            message.connection = connection
            message.send()
        except Exception as error:  # SMTP (an OSError) or rendering: recorded, retried, shown on the page
            delivery.status = DeliveryStatus.FAILED
            delivery.error = f"{type(error).__name__}: {error}"[:2000]
            delivery.save(update_fields=["status", "error", "attempts", "report_file"])
            logger.warning("report email failed", extra={"run_id": run.pk, "delivery_id": delivery.pk,
                                                          "error": delivery.error})
            _reset_connection(connection)
            return f"{delivery.email}: {delivery.error}"
        delivery.status = DeliveryStatus.SENT
        delivery.error = ""
        delivery.sent_at = timezone.now()
        delivery.save(update_fields=["status", "error", "attempts", "report_file", "sent_at"])
        return ""


def _reset_connection(connection) -> None:
    """After an SMTP error the session may be unusable; the next message opens a fresh one."""
    try:
        connection.close()
    except Exception:  # noqa: S110 - closing a broken session: nothing more to do
        pass


def _outcome(run: ReportRun) -> DeliverOutcome:
    counts = run.deliveries.aggregate(
        sent=Count("pk", filter=Q(status=DeliveryStatus.SENT)),
        failed=Count("pk", filter=Q(status=DeliveryStatus.FAILED)),
        skipped=Count("pk", filter=Q(status=DeliveryStatus.SKIPPED)),
        pending=Count("pk", filter=Q(status=DeliveryStatus.PENDING)),
    )
    return DeliverOutcome(**counts)


def _run_finish(*, run: ReportRun, final_attempt: bool, errors: list[str]) -> DeliverOutcome:
    outcome = _outcome(run)
    if outcome.pending:
        return outcome  # another worker holds a delivery; it finishes the run
    fields = {"last_error": "\n".join(errors)[:4000]}
    if outcome.failed:
        fields["status"] = RunStatus.FAILED if final_attempt else RunStatus.RETRYING
    else:
        fields["status"] = RunStatus.SENT
    if fields["status"] != RunStatus.RETRYING:
        fields["finished_at"] = timezone.now()
    ReportRun.objects.filter(pk=run.pk).update(**fields)
    return outcome


def report_run_retry_planned(*, run_id: int, countdown: int) -> None:
    ReportRun.objects.filter(pk=run_id, status=RunStatus.RETRYING).update(
        next_retry_at=timezone.now() + dt.timedelta(seconds=countdown))


@transaction.atomic
def report_run_retry_now(*, actor: User, run: ReportRun) -> ReportRun:
    """A failed run sent again from its page: failed deliveries go back to pending."""
    if run.status != RunStatus.FAILED:
        raise ValidationError({"status": "Only a failed run can be sent again."})
    run.deliveries.filter(status=DeliveryStatus.FAILED).update(status=DeliveryStatus.PENDING)
    ReportRun.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED, finished_at=None)
    run_id = run.pk
    transaction.on_commit(lambda: _queue_deliver(run_id))
    run.refresh_from_db()
    return run


# --- Reads for the pages ---------------------------------------------------------------------------------

def report_runs_visible(*, actor: User) -> QuerySet[ReportRun]:
    """Runs of the actor's company about companies still in its subtree (C6). Schedules and their
    runs are for administrators (A2); anyone else sees the runs they sent themselves."""
    runs = ReportRun.objects.filter(owner=actor.company, company__lineage__startswith=actor.company.lineage)
    if actor.role != Role.COMPANY_ADMIN:
        runs = runs.filter(requested_by=actor, schedule__isnull=True)
    return (runs
            .select_related("company", "schedule", "requested_by")
            .annotate(recipients_count=Count("deliveries"),
                      sent_count=Count("deliveries", filter=Q(deliveries__status=DeliveryStatus.SENT)))
            .order_by("-created_at", "-id"))


def access_report_run(actor: User, run_id) -> ReportRun:
    try:
        return report_runs_visible(actor=actor).get(pk=run_id)
    except (ReportRun.DoesNotExist, ValueError, TypeError):
        raise Http404("No such run") from None
