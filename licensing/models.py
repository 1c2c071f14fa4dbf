"""Licensing, in the public schema: the catalogue, what each company may use (entitlements), seat
pools and reservations, seat assignments with trials, subscriptions and MDR contact details."""

from django.db import models
from django.utils import timezone

from companies.models import Company


class TimeSpansField(models.Field):
    """A PostgreSQL tstzmultirange, kept opaque in Python (read and written in SQL)."""

    def db_type(self, connection):
        return "tstzmultirange"

# Seat numbers are stored in PostgreSQL integer columns: anything larger is a field error (X2), not a 500
MAX_SEATS = 2**31 - 1


class ItemKind(models.TextChoices):
    PRODUCT_TYPE = "product_type", "Product type"
    PROTECTION_MODEL = "protection_model", "Protection model"
    ADDON = "addon", "Add-on"
    SERVICE = "service", "Service"
    XDR_SENSOR = "xdr_sensor", "XDR sensor category"
    RETENTION_TIER = "retention_tier", "Data Retention tier"


class CatalogItem(models.Model):
    """One product type, protection model, add-on, service, XDR sensor category or Data Retention
    tier (E1, E2, E7). The catalogue is data (licensing/fixtures/catalogue.json), not code."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=24, choices=ItemKind.choices)
    # sensor categories belong to XDR, tiers to Data Retention, HyperDetect to ATS ...
    parent = models.ForeignKey("self", null=True, blank=True, related_name="children", on_delete=models.CASCADE)
    description = models.CharField(max_length=300, blank=True, default="")
    rank = models.PositiveSmallIntegerField(default=0)  # order on pages; tiers: higher is more
    # product types a protection model / add-on / service applies to (E1: only Endpoint Security
    # takes a model and add-ons)
    product_types = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="+")

    class Meta:
        ordering = ["kind", "rank", "name"]

    def __str__(self) -> str:
        return self.name


class ModelRule(models.Model):
    """Which add-ons and services a protection model includes or excludes (E2)."""

    class Relation(models.TextChoices):
        INCLUDES = "includes", "Includes"
        EXCLUDES = "excludes", "Excludes"

    protection_model = models.ForeignKey(CatalogItem, related_name="rules", on_delete=models.CASCADE)
    item = models.ForeignKey(CatalogItem, related_name="+", on_delete=models.CASCADE)
    relation = models.CharField(max_length=8, choices=Relation.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["protection_model", "item"], name="model_rule_unique")]

    def __str__(self) -> str:
        return f"{self.protection_model} {self.relation} {self.item}"


class Purpose(models.TextChoices):
    OWN_USE = "own", "Own use"
    RESELL = "resell", "Reselling"


class Entitlement(models.Model):
    """One catalogue item selected for a company, for own use or for reselling (E3, E4).

    Rows are never deleted: turning an item off sets `disabled_at`, so usage can tell what was
    enabled during any month (U5, U8, U10, U11, U13)."""

    company = models.ForeignKey(Company, related_name="entitlements", on_delete=models.CASCADE)
    purpose = models.CharField(max_length=8, choices=Purpose.choices)
    item = models.ForeignKey(CatalogItem, related_name="entitlements", on_delete=models.PROTECT)
    enabled_at = models.DateTimeField(default=timezone.now)
    disabled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["company", "purpose", "item"], condition=models.Q(disabled_at__isnull=True),
                                    name="entitlement_active_unique"),
        ]
        indexes = [models.Index(fields=["item", "purpose"], name="entitlement_item_purpose"),
                   models.Index(fields=["company", "purpose", "enabled_at"], name="entitlement_history")]

    def __str__(self) -> str:
        return f"{self.company} {self.purpose} {self.item}"


class License(models.Model):
    """A company's licensing settings (one row per company, created with the company)."""

    company = models.OneToOneField(Company, related_name="license", on_delete=models.CASCADE,
                                   primary_key=True)
    # L1: None = takes seats from the shared pool (L2)
    reserved_seats = models.PositiveIntegerField(null=True, blank=True)
    # L6: billing floor, only with a reservation, at most the reservation
    minimum_usage = models.PositiveIntegerField(null=True, blank=True)
    # S1-S3: None = inherits the parent's effective end date
    end_date = models.DateField(null=True, blank=True)
    auto_renew = models.BooleanField(default=False)
    renew_months = models.PositiveSmallIntegerField(default=12)
    # S5: every company under this model is billed monthly on usage
    license_type = models.CharField(max_length=16, default="monthly", editable=False)
    # the platform's own pool: None = unlimited seats
    platform_seats = models.PositiveIntegerField(null=True, blank=True)
    # E6: MDR enabled with onboarding started before 2024-04-01 (legacy partners)
    mdr_onboarding_started_on = models.DateField(null=True, blank=True)

    def __str__(self) -> str:
        return f"License of {self.company}"


class MdrContact(models.Model):
    """E5/E6: a partner's contact details for MDR. Complete when every field is filled in."""

    company = models.OneToOneField(Company, related_name="mdr_contact", on_delete=models.CASCADE,
                                   primary_key=True)
    primary_name = models.CharField(max_length=200, blank=True, default="")
    primary_email = models.EmailField(blank=True, default="")
    primary_phone = models.CharField(max_length=40, blank=True, default="")
    escalation_name = models.CharField(max_length=200, blank=True, default="")
    escalation_email = models.EmailField(blank=True, default="")
    escalation_phone = models.CharField(max_length=40, blank=True, default="")

    REQUIRED = ["primary_name", "primary_email", "primary_phone", "escalation_name", "escalation_email",
                "escalation_phone"]

    def __str__(self) -> str:
        return f"MDR contact of {self.company}"

    @property
    def missing(self) -> list[str]:
        return [f for f in self.REQUIRED if not getattr(self, f).strip()]

    @property
    def is_complete(self) -> bool:
        return not self.missing


class SeatPool(models.Model):
    """L1-L3, L5: seats of one pool owner (a company with a reservation, or the platform).

    `used` counts seats held by licensed endpoints of the pool's members; `carved` counts the
    reservations of companies below whose seats were carved out of this pool. Allocation is one
    conditional UPDATE on this row, so concurrent installs cannot take more than `capacity`.
    """

    owner = models.OneToOneField(Company, related_name="seat_pool", on_delete=models.CASCADE)
    capacity = models.PositiveIntegerField(null=True, blank=True)  # None: unlimited (platform)
    used = models.PositiveIntegerField(default=0)
    carved = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(capacity__isnull=True) | models.Q(used__lte=models.F("capacity")
                                                                    - models.F("carved")),
                name="seat_pool_within_capacity"),
        ]

    def __str__(self) -> str:
        return f"Pool of {self.owner}"

    @property
    def free(self) -> int | None:
        return None if self.capacity is None else self.capacity - self.used - self.carved


class SeatState(models.TextChoices):
    LICENSED = "licensed", "Licensed"
    TRIAL = "trial", "Trial"
    EXPIRED = "expired", "Expired"


class SeatAssignment(models.Model):
    """One endpoint's seat (T1, L4, T5, T7). Public schema, so pools can count across companies."""

    company = models.ForeignKey(Company, related_name="seat_assignments", on_delete=models.CASCADE)
    endpoint_id = models.UUIDField()
    pool = models.ForeignKey(SeatPool, related_name="assignments", on_delete=models.PROTECT)
    state = models.CharField(max_length=16, choices=SeatState.choices)
    trial_ends_on = models.DateField(null=True, blank=True)  # last day of the trial
    first_seen_at = models.DateTimeField()  # promotion order: oldest first
    licensed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    # U1 across a suspension: the seat the endpoint held before its company was suspended and
    # reactivated (several such spells are kept as one span from the first start to the last end;
    # counting reads `licensed_spells`, which keeps them apart)
    previously_licensed_from = models.DateTimeField(null=True, blank=True)
    previously_licensed_until = models.DateTimeField(null=True, blank=True)
    # T5, L4, U1: every seat the endpoint held before its current one, each [from, until], apart (a
    # suspension between two of them is not a seat). Written and read in SQL only (licensing.seats).
    licensed_spells = TimeSpansField(null=True, blank=True, editable=False)
    # H4: expired by its company's suspension (or registered during it); reactivation revives these
    # and no trial that had run out before. Kept on the seat row, which the suspension hooks lock
    # anyway, so they lock no licence row (a reservation takes licence, then company: L5)
    expired_by_suspension = models.BooleanField(default=False, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["company", "endpoint_id"], name="seat_assignment_unique"),
        ]
        indexes = [
            models.Index(fields=["pool", "state", "first_seen_at"], name="seat_pool_state_age"),
            models.Index(fields=["state", "trial_ends_on"], name="seat_trial_end"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint_id} {self.state}"
