"""Thin Celery tasks for usage: JSON arguments, explicit names, services imported in the body."""

import datetime as dt

from celery import shared_task
from django.db import OperationalError

from usage.rollups import MonthCloseIncomplete


@shared_task(name="usage.rollup_fanout", acks_late=True)
def rollup_fanout() -> int:
    """Beat, every minute: one rollup task per batch of companies with telemetry waiting."""
    from usage.rollups import batches, usage_rollup_pending

    company_ids = usage_rollup_pending()
    for batch in batches(company_ids):
        rollup_companies.delay(batch)
    return len(company_ids)


@shared_task(name="usage.rollup_companies", bind=True, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def rollup_companies(self, company_ids: list[int], months: list[str] | None = None) -> int:
    """A batch of companies rolled up in one transaction (usage.rollups.BATCH_SIZE at most); if the
    batch fails, its companies one by one, and the task fails naming those that failed alone (their
    pending marks stay, so the next fan-out tries them again)."""
    from usage.rollups import usage_rollup_batch

    done, failed = usage_rollup_batch(company_ids=company_ids,
                                      months=[dt.date.fromisoformat(m) for m in months or []])
    if failed:
        raise RollupFailed(f"rollup failed for companies {failed}; the others ({len(done)}) are done")
    return len(done)


class RollupFailed(Exception):
    pass


@shared_task(name="usage.refresh_open_month", acks_late=True)
def refresh_open_month() -> int:
    """Beat, hourly: seats and entitlements change figures without new heartbeats."""
    from companies.models import Company
    from usage.rollups import batches, month_start

    month = month_start(dt.datetime.now(dt.UTC)).isoformat()
    ids = list(Company.objects.order_by("pk").values_list("pk", flat=True))
    for batch in batches(ids):
        rollup_companies.delay(batch, [month])
    return len(ids)


@shared_task(name="usage.month_close", bind=True, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(OperationalError, MonthCloseIncomplete), retry_backoff=True, max_retries=5,
             soft_time_limit=3300, time_limit=3600)
def month_close(self, month: str | None = None) -> int:
    """Beat, hourly: finalize the previous month (U12), and any earlier ended month a failing company
    left unclosed, oldest first. Idempotent: a closed month is skipped at once."""
    from usage.rollups import month_previous, months_to_close, usage_month_close

    if month is not None:
        return usage_month_close(month=dt.date.fromisoformat(month))
    done, incomplete = 0, []
    for pending in months_to_close(previous=month_previous(dt.datetime.now(dt.UTC))):
        try:
            done += usage_month_close(month=pending)
        except MonthCloseIncomplete as error:  # the later months still close; this one is retried
            incomplete.append(str(error))
    if incomplete:
        raise MonthCloseIncomplete("; ".join(incomplete))
    return done


@shared_task(name="usage.purge_heartbeats", acks_late=True)
def purge_heartbeats() -> int:
    from usage.rollups import heartbeats_purge

    return heartbeats_purge(now=dt.datetime.now(dt.UTC))
