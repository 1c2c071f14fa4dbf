"""Licensing's scheduled work. Tasks are thin: JSON arguments (ISO dates), an explicit name, the
service imported in the body; the rules live in licensing.subscriptions and licensing.seats."""

import datetime as dt

from celery import shared_task
from django.db import OperationalError


# Beat sends it once a day (CELERY_BEAT_SCHEDULE "licensing-daily"). acks_late and
# reject_on_worker_lost: a worker lost mid-run gives the run back to the queue, which is safe
# because every step is idempotent. Only a lost database connection is worth retrying. The time
# limits are wider than the defaults: the run walks every company with a lapsed subscription.
@shared_task(name="licensing.daily", bind=True, acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(OperationalError,), retry_backoff=True, retry_backoff_max=600, max_retries=5,
             soft_time_limit=1800, time_limit=1900)
def daily(self, today: str | None = None) -> dict[str, int]:
    from licensing.subscriptions import licensing_daily

    return licensing_daily(today=dt.date.fromisoformat(today) if today else None)
