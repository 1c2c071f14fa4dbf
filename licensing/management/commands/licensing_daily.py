"""`manage.py licensing_daily [--date YYYY-MM-DD]`: the daily licensing run by hand (after an
outage, or to replay a missed day). The same service as the `licensing.daily` task."""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from licensing.subscriptions import licensing_daily


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--date: {value!r} is not a date in the form YYYY-MM-DD.") from None


class Command(BaseCommand):
    help = "Renew and suspend subscriptions (S3, S4), expire and promote trials (L4); prints the counts."

    def add_arguments(self, parser):
        parser.add_argument("--date", help="the day to run for, YYYY-MM-DD (default: today in UTC)")

    def handle(self, *args, **options):
        today = _date(options["date"]) if options["date"] else None
        counts = licensing_daily(today=today)
        self.stdout.write(" ".join(f"{name}={count}" for name, count in counts.items()))
