"""ConnectWise PSA billing sync (SPEC B1-B4), in the public schema.

A partner has one connection; each company it bills (its direct companies) has a mapping to an
agreement type and a product in the PSA; each company-month has one remembered addition; every
attempt to talk to the PSA about a company is logged.
"""

from django.db import models

from companies.models import Company


class PsaConnection(models.Model):
    """A partner's ConnectWise connection. The keys are Fernet tokens (integrations.crypto): they
    are decrypted only to sign requests and never shown again."""

    company = models.OneToOneField(Company, related_name="psa_connection", on_delete=models.CASCADE)
    site = models.URLField(max_length=300)
    psa_company_id = models.CharField(max_length=100)  # the ConnectWise login company id
    public_key_encrypted = models.TextField()
    private_key_encrypted = models.TextField()
    client_id = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    last_test_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_answer = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"ConnectWise connection of {self.company}"


class MappingState(models.TextChoices):
    UNCHECKED = "unchecked", "Not checked yet"
    OK = "ok", "Ready to sync"
    COMPANY_NOT_FOUND = "company_not_found", "Company not found"
    AGREEMENT_NOT_FOUND = "agreement_not_found", "Agreement not found"
    MULTIPLE_AGREEMENTS = "multiple_agreements", "More than one active agreement"
    PRODUCT_NOT_FOUND = "product_not_found", "Product not found"
    UNREACHABLE = "unreachable", "ConnectWise did not answer"


class CompanyMapping(models.Model):
    """B1: where a company's usage goes in the PSA. Names are matched case-sensitively against
    what the PSA returns; the ids found are kept for the sync."""

    connection = models.ForeignKey(PsaConnection, related_name="mappings", on_delete=models.CASCADE)
    company = models.OneToOneField(Company, related_name="psa_mapping", on_delete=models.CASCADE)
    psa_company = models.CharField(max_length=100)  # the company's identifier in ConnectWise
    agreement_type = models.CharField(max_length=100)
    product_identifier = models.CharField(max_length=100)
    state = models.CharField(max_length=32, choices=MappingState.choices, default=MappingState.UNCHECKED)
    state_detail = models.TextField(blank=True, default="")
    checked_at = models.DateTimeField(null=True, blank=True)
    psa_company_ref = models.IntegerField(null=True, blank=True)
    agreement_ref = models.IntegerField(null=True, blank=True)
    product_ref = models.IntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.company} -> {self.agreement_type} / {self.product_identifier}"


class PsaAddition(models.Model):
    """B3/B4: the one addition per company and month. Its PSA id is remembered as soon as it is
    known, so retries and re-runs update it instead of creating a second one. Its ids mean something
    only in the PSA of `connection`, the one that made it: no other connection ever touches it (H5)."""

    company = models.ForeignKey(Company, related_name="psa_additions", on_delete=models.CASCADE)
    month = models.DateField()  # first day of the month
    connection = models.ForeignKey(PsaConnection, related_name="additions", null=True, blank=True,
                                   on_delete=models.SET_NULL)
    agreement_ref = models.IntegerField(null=True, blank=True)
    addition_ref = models.IntegerField(null=True, blank=True)
    quantity = models.IntegerField(null=True, blank=True)  # last quantity the PSA acknowledged
    synced_at = models.DateTimeField(null=True, blank=True)  # last successful push

    class Meta:
        constraints = [models.UniqueConstraint(fields=["company", "month"], name="psa_addition_company_month")]

    def __str__(self) -> str:
        return f"Addition {self.addition_ref} for {self.company_id} {self.month:%Y-%m}"


class SyncOutcome(models.TextChoices):
    OK = "ok", "Synced"
    FAILED = "failed", "Failed"
    NOT_SYNCED = "not_synced", "Not synced"


class SyncTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Sync now"
    RETRY = "retry", "Retry"


class SyncAttempt(models.Model):
    """B4: every attempt, with what was sent and what the PSA answered; shown to the partner."""

    connection = models.ForeignKey(PsaConnection, related_name="attempts", on_delete=models.CASCADE)
    company = models.ForeignKey(Company, related_name="+", on_delete=models.CASCADE)
    month = models.DateField()
    quantity = models.IntegerField(null=True, blank=True)
    operation = models.CharField(max_length=16, blank=True, default="")  # create, update, unchanged
    outcome = models.CharField(max_length=16, choices=SyncOutcome.choices)
    http_status = models.IntegerField(null=True, blank=True)
    answer = models.TextField(blank=True, default="")
    trigger = models.CharField(max_length=16, choices=SyncTrigger.choices, default=SyncTrigger.SCHEDULE)
    retryable = models.BooleanField(default=False)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["connection", "-at"], name="psa_attempt_connection_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.company_id} {self.month:%Y-%m} {self.outcome}"


class PsaZeroing(models.Model):
    """H5, B4: the addition a company's former partner's PSA has for an open month the company's new
    partner bills, to be set to 0 through the connection that made it (nobody else may touch it). A
    failed try is kept and tried again every hour (integrations.zero_left_behind) until it succeeds,
    the addition is gone, or ZEROING_TRIES tries have failed (the former partner's log then says to set
    it by hand): an addition left standing would bill the month twice. It is not tried when the
    connection cannot be used for it as it stands (turned off, Basic plan, edited to another PSA): the
    partner's log then says to set it by hand."""

    connection = models.ForeignKey(PsaConnection, related_name="zeroings", on_delete=models.CASCADE)
    company = models.ForeignKey(Company, related_name="+", on_delete=models.CASCADE)
    month = models.DateField()
    agreement_ref = models.IntegerField()
    addition_ref = models.IntegerField()
    # the PSA the ids belong to: a connection edited to another site or PSA company since is not asked
    site = models.CharField(max_length=255)
    psa_company_id = models.CharField(max_length=64)
    tries = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)  # set to 0, or found gone

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "addition_ref"], name="psa_zeroing_addition")]
        indexes = [models.Index(fields=["done_at", "tries"], name="psa_zeroing_pending")]

    def __str__(self) -> str:
        return f"Addition {self.addition_ref} to 0 ({self.company_id} {self.month:%Y-%m})"
