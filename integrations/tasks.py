"""Thin Celery tasks for the billing sync: JSON arguments, explicit names, services in the body."""

import datetime as dt

from celery import shared_task
from django.db import OperationalError


class PsaRetry(Exception):
    """The PSA failed in a way that trying again may fix (network, 4xx, 5xx): retried with back-off."""


@shared_task(name="integrations.sync_company", bind=True, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(PsaRetry, OperationalError), retry_backoff=True, retry_backoff_max=600,
             retry_jitter=False, max_retries=8, soft_time_limit=240, time_limit=300)
def sync_company(self, company_id: int, month: str, trigger: str = "schedule", force: bool = False) -> str:
    """B3/B4: one company-month. A retried run updates the addition the first run created."""
    from integrations.models import SyncTrigger
    from integrations.services import addition_sync

    attempt = addition_sync(company_id=company_id, month=dt.date.fromisoformat(month),
                            trigger=SyncTrigger.RETRY if self.request.retries else trigger, force=force)
    if attempt is None:
        return "nothing to send"
    if attempt.retryable and attempt.outcome == "failed":
        raise PsaRetry(attempt.answer)
    return attempt.outcome


@shared_task(name="integrations.sync_due", acks_late=True)
def sync_due() -> int:
    """Beat, hourly: queue the company-months due (B3); the four-hour rule is applied per company."""
    from integrations.services import sync_due as due

    pairs = due()
    for company_id, month in pairs:
        sync_company.delay(company_id, month)
    return len(pairs)


@shared_task(name="integrations.sync_partner", acks_late=True)
def sync_partner(partner_id: int, month: str) -> int:
    """"Sync now" for every company a partner bills."""
    from integrations.services import sync_partner_company_ids

    ids = sync_partner_company_ids(partner_id=partner_id)
    for company_id in ids:
        sync_company.delay(company_id, month, "manual", True)
    return len(ids)


@shared_task(name="integrations.zero_left_behind", acks_late=True, soft_time_limit=1800, time_limit=1900)
def zero_left_behind() -> int:
    """Beat, hourly (H5, B4): additions a company's former partner's PSA still has for a month its new
    partner bills, set to 0 where the first try failed."""
    from integrations.services import zeroings_retry

    return zeroings_retry()
