"""Report tasks: thin, JSON arguments, explicit names; the services do the work (reports/delivery.py)."""

import datetime as dt

from celery import Task, shared_task
from django.conf import settings
from django.db import OperationalError


class FiredAtTask(Task):
    """Stamps `fired_at` where the task is published (beat), so the month a schedule reports on is
    the one beat fired it for, however late a worker picks it up, and the same on every duplicate."""

    def apply_async(self, args=None, kwargs=None, **options):
        from django.utils import timezone

        kwargs = dict(kwargs or {})
        kwargs.setdefault("fired_at", timezone.now().isoformat())
        return super().apply_async(args, kwargs, **options)


@shared_task(name="reports.schedule_due", base=FiredAtTask, bind=True, acks_late=True,
             autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def schedule_due(self, schedule_id: int, fired_at: str | None = None) -> dict | None:
    from django.utils import timezone

    from .delivery import schedule_run_due

    when = dt.datetime.fromisoformat(fired_at) if fired_at else timezone.now()
    run = schedule_run_due(schedule_id=schedule_id, fired_at=when)
    if run is None:
        return None
    sending = run_deliver.delay(run.pk)
    return {"run": run.pk, "month": run.month.isoformat(), "deliver_task": sending.id}


@shared_task(name="reports.run_deliver", bind=True, acks_late=True, max_retries=None)
def run_deliver(self, run_id: int) -> dict:
    """Send a run; a failed send is retried with back-off (1, 2, 4, 8 ... times the base delay)."""
    from .delivery import report_run_deliver, report_run_retry_planned, report_run_waits_for_close
    from .models import ReportRun

    wait = settings.REPORT_MONTH_CLOSE_WAIT_SECONDS
    if report_run_waits_for_close(run_id=run_id, countdown=wait):
        # a new task, not a retry: waiting for the close spends none of the send attempts
        run_deliver.apply_async((run_id,), countdown=wait)
        return {"waiting_for_month_close": True}
    if not ReportRun.objects.filter(pk=run_id).exists():
        return {"gone": True}  # its schedule and runs were deleted meanwhile
    attempts = settings.REPORT_SEND_ATTEMPTS
    final = self.request.retries + 1 >= attempts
    try:
        outcome = report_run_deliver(run_id=run_id, final_attempt=final)
    except OperationalError as error:
        if final:
            raise
        raise self.retry(exc=error, countdown=settings.REPORT_SEND_RETRY_SECONDS) from error
    if outcome.should_retry and not final:
        countdown = settings.REPORT_SEND_RETRY_SECONDS * 2 ** self.request.retries
        report_run_retry_planned(run_id=run_id, countdown=countdown)
        raise self.retry(countdown=countdown)
    return {"sent": outcome.sent, "failed": outcome.failed, "skipped": outcome.skipped}
