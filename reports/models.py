from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models


class ReportPreference(models.Model):
    """R3: the columns a user chose to show, remembered per user and report kind."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="report_preferences")
    kind = models.CharField(max_length=32)
    hidden_columns = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "kind"], name="report_preference_unique")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.kind}"


# --- Issue 6 part 2: email delivery, schedules, run history, report history --------------------------

def report_file_path(instance: "ReportFile", filename: str) -> str:
    """Generated reports live under MEDIA_ROOT/reports/<company schema>/, with a random name: the
    /media/ route never serves them, downloads go through the history page's access check."""
    import secrets

    extension = filename.rsplit(".", 1)[-1].lower()
    return f"reports/{instance.company.schema_name}/{secrets.token_hex(12)}.{extension}"


class ReportSource(models.TextChoices):
    DOWNLOAD = "download", "Downloaded"
    EMAIL = "email", "Sent by email"
    SCHEDULE = "schedule", "Schedule"


class ReportFile(models.Model):
    """Report history: one generated report (CSV and PDF kept on disk), downloadable again.

    `owner` is the company of the user it was built for; only that company's users see it, and
    a file with endpoint rows (`network_detail`) only while they may still see the network of the
    target and of every company whose endpoints it lists (`endpoint_company_ids`; C2, C3, C6)."""

    owner = models.ForeignKey("companies.Company", on_delete=models.CASCADE, related_name="report_files_owned")
    company = models.ForeignKey("companies.Company", on_delete=models.CASCADE, related_name="report_files")
    built_for = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    kind = models.CharField(max_length=32)
    month = models.DateField()
    options = models.JSONField(default=dict, blank=True)
    network_detail = models.BooleanField(default=False)
    # companies whose endpoint rows the file lists (for files made before they were recorded, every
    # company then in the target's subtree with a row for the month: migration 0005)
    endpoint_company_ids = ArrayField(models.BigIntegerField(), null=True, blank=True)
    source = models.CharField(max_length=16, choices=ReportSource.choices)
    title = models.CharField(max_length=300)
    csv_file = models.FileField(upload_to=report_file_path, max_length=300)
    pdf_file = models.FileField(upload_to=report_file_path, max_length=300)
    csv_name = models.CharField(max_length=255)
    pdf_name = models.CharField(max_length=255)
    csv_size = models.PositiveBigIntegerField(default=0)
    pdf_size = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-created_at"], name="report_file_owner_created")]

    def __str__(self) -> str:
        return self.title


class ReportSchedule(models.Model):
    """R5: a report sent by email on a schedule. `owner` is the company whose administrators manage
    it; `company` is the report's target (the owner itself or a company below it). The timing lives
    in django-celery-beat's PeriodicTask/CrontabSchedule, which beat reads from the database."""

    owner = models.ForeignKey("companies.Company", on_delete=models.CASCADE, related_name="report_schedules")
    company = models.ForeignKey("companies.Company", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, default="endpoint")
    product_type = models.CharField(max_length=64, blank=True, default="")
    only_endpoint_details = models.BooleanField(default=False)
    only_direct = models.BooleanField(default=False)
    day_of_month = models.PositiveSmallIntegerField(default=1)  # 1-28: every month has it
    hour = models.PositiveSmallIntegerField(default=6)  # UTC, after the month close at 00:30
    recipients = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="report_schedules")
    paused = models.BooleanField(default=False)
    periodic_task = models.OneToOneField("django_celery_beat.PeriodicTask", null=True, blank=True,
                                         on_delete=models.SET_NULL, related_name="report_schedule")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="report_schedule_name_unique")]

    def __str__(self) -> str:
        return self.name

    @property
    def kind_title(self) -> str:
        from .builder import KIND_TITLES

        return KIND_TITLES.get(self.kind, self.kind)


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Generating and sending"
    RETRYING = "retrying", "Waiting to retry"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled (schedule deleted)"


class ReportRun(models.Model):
    """One sending of a report: by a schedule (one run per schedule and month: the idempotency key
    that makes a due task fired twice send once) or by "Send by email now"."""

    schedule = models.ForeignKey(ReportSchedule, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="runs")
    owner = models.ForeignKey("companies.Company", on_delete=models.CASCADE, related_name="report_runs")
    company = models.ForeignKey("companies.Company", on_delete=models.CASCADE, related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    kind = models.CharField(max_length=32)
    month = models.DateField()
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    next_retry_at = models.DateTimeField(null=True, blank=True)
    fired_at = models.DateTimeField(null=True, blank=True)  # when beat fired the schedule
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["schedule", "month"], condition=models.Q(schedule__isnull=False),
                                    name="report_run_once_per_schedule_month"),
        ]
        indexes = [models.Index(fields=["owner", "-created_at"], name="report_run_owner_created")]

    def __str__(self) -> str:
        return f"{self.kind} {self.month:%Y-%m} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in (RunStatus.SENT, RunStatus.FAILED, RunStatus.CANCELLED)


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Not sent: may no longer see the report"


class ReportDelivery(models.Model):
    """One email of a run to one recipient; unique per run and recipient, so with the run's own key
    a recipient gets at most one email per schedule and month."""

    run = models.ForeignKey(ReportRun, on_delete=models.CASCADE, related_name="deliveries")
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    email = models.EmailField()
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    report_file = models.ForeignKey(ReportFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "recipient"], name="report_delivery_once")]

    def __str__(self) -> str:
        return f"{self.email} ({self.status})"
