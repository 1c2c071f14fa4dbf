"""R5: report schedules that administrators create, edit, pause and delete in the browser.

The timing lives in django-celery-beat (a CrontabSchedule and a PeriodicTask per schedule), which
beat reads from the database; the task it fires, `reports.schedule_due`, sends the previous month's
report. The default is the start of each month (day 1, 06:00 UTC: after the month close at 00:30).
"""

import json

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Max, Q, QuerySet
from django.http import Http404
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from companies.audit import audit_record, snapshot
from companies.models import Role, User

from .delivery import recipients_check
from .models import ReportSchedule, RunStatus

DUE_TASK = "reports.schedule_due"
DEFAULT_DAY = 1
DEFAULT_HOUR = 6
AUDITED = ["name", "company", "kind", "product_type", "only_endpoint_details", "only_direct", "day_of_month",
           "hour", "paused", "recipients"]


def _may_manage(actor: User) -> bool:
    return actor.is_authenticated and actor.role == Role.COMPANY_ADMIN


def schedules_visible(*, actor: User) -> QuerySet[ReportSchedule]:
    """The schedules of the actor's company (administrators only), with their last run, in SQL."""
    if not _may_manage(actor):
        return ReportSchedule.objects.none()
    return (ReportSchedule.objects.filter(owner=actor.company, company__lineage__startswith=actor.company.lineage)
            .select_related("company")
            .annotate(recipients_count=Count("recipients", distinct=True),
                      last_run_at=Max("runs__created_at"),
                      failed_runs=Count("runs", filter=Q(runs__status=RunStatus.FAILED), distinct=True))
            .order_by("name"))


def access_report_schedule(actor: User, schedule_id) -> ReportSchedule:
    """One schedule of the actor's company, or the same 404 for missing and not-yours (C6)."""
    try:
        return schedules_visible(actor=actor).get(pk=schedule_id)
    except (ReportSchedule.DoesNotExist, ValueError, TypeError):
        raise Http404("No such schedule") from None


def _clean(*, actor: User, data: dict, schedule: ReportSchedule | None = None) -> dict:
    """Check every field; a ValidationError names each bad one."""
    from .builder import KINDS, PRODUCT_TYPES, report_access

    errors: dict[str, str] = {}
    name = (data.get("name") or "").strip()
    if not name:
        errors["name"] = "Enter a name."
    elif len(name) > 200:
        errors["name"] = "Use at most 200 characters."
    elif ReportSchedule.objects.filter(owner=actor.company, name=name).exclude(
            pk=getattr(schedule, "pk", None)).exists():
        errors["name"] = "Another schedule already has this name."
    try:
        company = report_access(actor, data.get("company"))
    except Http404:
        company = None
        errors["company"] = "Choose a company from the list."
    kind = data.get("kind") or "endpoint"
    if kind not in KINDS:
        errors["kind"] = f"Choose one of: {', '.join(KINDS)}."
    product_type = data.get("product_type") or ""
    if product_type and product_type not in PRODUCT_TYPES:
        errors["product_type"] = f"Choose one of: {', '.join(PRODUCT_TYPES)}."
    day = _int_in(data.get("day_of_month", DEFAULT_DAY), 1, 28)
    if day is None:
        errors["day_of_month"] = "Choose a day from 1 to 28 (every month has it)."
    hour = _int_in(data.get("hour", DEFAULT_HOUR), 0, 23)
    if hour is None:
        errors["hour"] = "Choose an hour from 0 to 23 (UTC)."
    recipients = []
    if company is not None:
        try:
            recipients = recipients_check(owner=actor.company, company=company,
                                          recipient_ids=data.get("recipients") or [])
        except ValidationError as error:
            errors.update({k: v[0] for k, v in error.message_dict.items()})
    if errors:
        raise ValidationError(errors)
    return {"name": name, "company": company, "kind": kind, "product_type": product_type,
            "only_endpoint_details": bool(data.get("only_endpoint_details")),
            "only_direct": bool(data.get("only_direct")), "day_of_month": day, "hour": hour,
            "recipients": recipients}


def _int_in(value, low: int, high: int) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


def _crontab(*, day: int, hour: int) -> CrontabSchedule:
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="0", hour=str(hour), day_of_month=str(day), month_of_year="*", day_of_week="*", timezone="UTC")
    return crontab


def _periodic_task_sync(schedule: ReportSchedule) -> None:
    """Point the schedule's PeriodicTask at its timing; .save() tells beat that schedules changed."""
    task = schedule.periodic_task or PeriodicTask(name=f"report-schedule-{schedule.pk}", task=DUE_TASK)
    task.crontab = _crontab(day=schedule.day_of_month, hour=schedule.hour)
    task.interval = None
    task.kwargs = json.dumps({"schedule_id": schedule.pk})
    task.enabled = not schedule.paused
    task.description = f"Report schedule {schedule.pk}: {schedule.name}"
    task.save()
    if schedule.periodic_task_id != task.pk:
        schedule.periodic_task = task
        schedule.save(update_fields=["periodic_task"])


def _audit_state(schedule: ReportSchedule) -> dict:
    state = snapshot(schedule, fields=[f for f in AUDITED if f != "recipients"])
    state["recipients"] = sorted(schedule.recipients.values_list("email", flat=True))
    return state


@transaction.atomic
def schedule_create(*, actor: User, data: dict) -> ReportSchedule:
    if not _may_manage(actor):
        raise ValidationError("Only company administrators manage report schedules.")
    clean = _clean(actor=actor, data=data)
    recipients = clean.pop("recipients")
    schedule = ReportSchedule.objects.create(owner=actor.company, created_by=actor, **clean)
    schedule.recipients.set(recipients)
    _periodic_task_sync(schedule)
    audit_record(actor=actor, company=actor.company, action="report_schedule.create", obj=schedule,
                 after=_audit_state(schedule))
    return schedule


@transaction.atomic
def schedule_update(*, actor: User, schedule: ReportSchedule, data: dict) -> ReportSchedule:
    schedule = ReportSchedule.objects.select_for_update().get(pk=access_report_schedule(actor, schedule.pk).pk)
    before = _audit_state(schedule)
    clean = _clean(actor=actor, data=data, schedule=schedule)
    recipients = clean.pop("recipients")
    for field, value in clean.items():
        setattr(schedule, field, value)
    schedule.save()
    schedule.recipients.set(recipients)
    _periodic_task_sync(schedule)
    audit_record(actor=actor, company=actor.company, action="report_schedule.update", obj=schedule,
                 before=before, after=_audit_state(schedule))
    return schedule


@transaction.atomic
def schedule_pause(*, actor: User, schedule: ReportSchedule, paused: bool) -> ReportSchedule:
    schedule = ReportSchedule.objects.select_for_update().get(pk=access_report_schedule(actor, schedule.pk).pk)
    if schedule.paused != paused:
        schedule.paused = paused
        schedule.save(update_fields=["paused", "updated_at"])
        _periodic_task_sync(schedule)
        audit_record(actor=actor, company=actor.company, action="report_schedule.update", obj=schedule,
                     before={"paused": not paused}, after={"paused": paused})
    return schedule


@transaction.atomic
def schedule_delete(*, actor: User, schedule: ReportSchedule) -> None:
    """The schedule and its beat entry go; its runs stay in the run history. A run not sent yet (one
    waiting for its month's close, or for a retry) is cancelled: deleting a schedule stops its emails."""
    schedule = ReportSchedule.objects.select_for_update().get(pk=access_report_schedule(actor, schedule.pk).pk)
    _schedule_remove(schedule, actor=actor, why="The schedule was deleted before this run was sent; nothing more "
                                               "is sent.")


def schedules_after_move(company, old_parent) -> None:
    """H5/C6: a company moved out from under a schedule's owner can no longer be reported on by it;
    such schedules are removed (audited, their waiting runs cancelled) instead of firing every month
    into "Not sent", unseen by the owner, and holding their name."""
    from companies.models import Company

    moved = Company.objects.filter(lineage__startswith=company.lineage)
    for schedule in (ReportSchedule.objects.select_for_update(of=("self",)).filter(company__in=moved)
                     .select_related("company", "owner")):
        if not schedule.company.lineage.startswith(schedule.owner.lineage):
            _schedule_remove(schedule, actor=None, why=f"{schedule.company.name} moved to another partner; the "
                                                        "schedule was removed and nothing more is sent.")


def _schedule_remove(schedule: ReportSchedule, *, actor: User | None, why: str) -> None:
    schedule.runs.exclude(status__in=[RunStatus.SENT, RunStatus.FAILED, RunStatus.CANCELLED]).update(
        status=RunStatus.CANCELLED, next_retry_at=None, finished_at=timezone.now(), last_error=why)
    before = _audit_state(schedule)
    audit_record(actor=actor, company=schedule.owner, action="report_schedule.delete", obj=schedule,
                 before=before, after={})
    task = schedule.periodic_task
    schedule.delete()
    if task is not None:
        task.delete()
