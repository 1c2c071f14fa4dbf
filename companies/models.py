"""The company tree (the tenant model) and the accounts that belong to companies."""

import secrets

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import connection, models
from django_tenants.models import DomainMixin, TenantMixin
from django_tenants.utils import get_creation_fakes_migrations, schema_exists


def new_schema_name() -> str:
    return f"co_{secrets.token_hex(6)}"


class CompanyType(models.TextChoices):
    PARTNER = "partner", "Partner"
    CUSTOMER = "customer", "Customer"


class CompanyStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


class FieldOfActivity(models.TextChoices):
    """The fixed list of fields of activity (SPEC H2)."""

    AGRICULTURE = "agriculture", "Agriculture"
    AUTOMOTIVE = "automotive", "Automotive"
    CONSTRUCTION = "construction", "Construction"
    EDUCATION = "education", "Education"
    ENERGY = "energy", "Energy and utilities"
    FINANCE = "finance", "Financial services"
    GOVERNMENT = "government", "Government"
    HEALTHCARE = "healthcare", "Healthcare"
    HOSPITALITY = "hospitality", "Hospitality"
    IT = "it", "Information technology"
    LEGAL = "legal", "Legal"
    MANUFACTURING = "manufacturing", "Manufacturing"
    MEDIA = "media", "Media and entertainment"
    NON_PROFIT = "non_profit", "Non-profit"
    REAL_ESTATE = "real_estate", "Real estate"
    RETAIL = "retail", "Retail"
    TELECOM = "telecom", "Telecommunications"
    TRANSPORT = "transport", "Transportation and logistics"
    OTHER = "other", "Other"


def new_license_key() -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(20))
    return "-".join(raw[i:i + 5] for i in range(0, 20, 5))


def logo_path(company: "Company", filename: str) -> str:
    extension = filename.rsplit(".", 1)[-1].lower()
    return f"logos/{company.schema_name}-{secrets.token_hex(4)}.{extension}"


class PartnerPlan(models.TextChoices):
    """The partner's plan; the ConnectWise billing integration is not available on Basic (SPEC B2)."""

    STANDARD = "standard", "Standard"
    BASIC = "basic", "Basic"


class Company(TenantMixin):
    """A node of the company tree; every company has a PostgreSQL schema for its network data.

    `lineage` is the materialized path of ids, root first, framed by slashes ("/1/4/9/"), so a
    subtree is one indexed prefix match and a move is one UPDATE of the moved subtree.
    """

    name = models.CharField(max_length=200)
    type = models.CharField(max_length=16, choices=CompanyType.choices)
    parent = models.ForeignKey(
        "self", null=True, blank=True, related_name="children", on_delete=models.PROTECT
    )
    lineage = models.CharField(max_length=2000, db_index=True, editable=False, default="")
    depth = models.PositiveSmallIntegerField(default=0, editable=False)
    status = models.CharField(max_length=16, choices=CompanyStatus.choices, default=CompanyStatus.ACTIVE)
    # C1: customers always manage their own security; MSP partners do; reseller-only partners do not.
    manages_security = models.BooleanField(default=True)
    # C3: "Partner can assist with security management".
    partner_can_assist = models.BooleanField(default=True)
    country = models.CharField(max_length=2, blank=True, default="")
    field_of_activity = models.CharField(max_length=32, choices=FieldOfActivity.choices, blank=True,
                                         default="")
    address = models.CharField(max_length=500, blank=True, default="")
    phone = models.CharField(max_length=40, blank=True, default="")
    logo = models.ImageField(upload_to=logo_path, blank=True, default="")
    license_key = models.CharField(max_length=32, unique=True, default=new_license_key, editable=False)
    # A3: two-factor authentication enforced for all of the company's users
    enforce_two_factor = models.BooleanField(default=False)
    # B2: a partner's plan, set by its parent (integrations.services.partner_plan_set)
    plan = models.CharField(max_length=16, choices=PartnerPlan.choices, default=PartnerPlan.STANDARD)
    created_at = models.DateTimeField(auto_now_add=True)
    suspended_at = models.DateTimeField(null=True, blank=True)

    auto_create_schema = True
    auto_drop_schema = False

    class Meta:
        verbose_name_plural = "companies"
        constraints = [
            models.UniqueConstraint(fields=["parent", "name"], name="company_name_unique_among_siblings"),
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(parent__isnull=True), name="company_single_root_name"
            ),
        ]
        indexes = [
            models.Index(fields=["lineage"], name="company_lineage_prefix",
                         opclasses=["varchar_pattern_ops"]),
        ]

    def __str__(self) -> str:
        return self.name

    def create_schema(self, check_if_exists=False, sync_schema=True, verbosity=1):
        """Clone the template schema; its django_migrations rows come along, so the new schema is
        already at the template's migration state and needs no (slow) fake migrate afterwards."""
        base = self.get_base_schema() if get_creation_fakes_migrations() else False
        if not (sync_schema and base and schema_exists(base)):
            return super().create_schema(check_if_exists, sync_schema, verbosity)
        if check_if_exists and schema_exists(self.schema_name):
            return False
        from .schemas import schema_clone

        schema_clone(source=base, target=self.schema_name)
        connection.set_schema_to_public()
        return True

    @property
    def is_platform(self) -> bool:
        return self.parent_id is None

    @property
    def is_partner(self) -> bool:
        return self.type == CompanyType.PARTNER

    @property
    def ancestor_ids(self) -> list[int]:
        """Ids of the ancestors, root first, excluding the company itself."""
        return [int(part) for part in self.lineage.strip("/").split("/") if part][:-1]


class Domain(DomainMixin):
    """Optional vanity domains; the console itself is served on one address."""


class Role(models.TextChoices):
    COMPANY_ADMIN = "company_admin", "Company administrator"
    NETWORK_ADMIN = "network_admin", "Network administrator"
    SECURITY_ANALYST = "security_analyst", "Security analyst"
    REPORTER = "reporter", "Reporter"


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email, password=None, **extra):
        if not email:
            raise ValueError("email is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, **extra):
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        extra.setdefault("role", Role.COMPANY_ADMIN)
        if "company" not in extra and "company_id" not in extra:
            extra["company"] = Company.objects.get(parent__isnull=True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """An account of one company. Lives in the public schema with sessions and auth."""

    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=200)
    company = models.ForeignKey(Company, related_name="users", on_delete=models.PROTECT)
    role = models.CharField(max_length=32, choices=Role.choices, default=Role.REPORTER)
    timezone = models.CharField(max_length=64, default="UTC")
    language = models.CharField(max_length=8, default="en")
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(auto_now_add=True)
    # A3: TOTP; the secret is kept until enrolment is confirmed with a first valid code
    totp_secret = models.CharField(max_length=64, blank=True, default="")
    totp_confirmed_at = models.DateTimeField(null=True, blank=True)
    totp_last_step = models.BigIntegerField(default=0)  # a code is accepted once

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["full_name"]

    def __str__(self) -> str:
        return self.email


class ApiKeyScope(models.TextChoices):
    COMPANIES = "companies", "Companies"
    LICENSING = "licensing", "Licensing"
    USAGE = "usage", "Usage"
    REPORTS = "reports", "Reports"


class ApiKey(models.Model):
    """A4: belongs to a company, shown once, stored as a SHA-256 hash, revocable, scoped."""

    company = models.ForeignKey(Company, related_name="api_keys", on_delete=models.CASCADE)
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}...)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditEvent(models.Model):
    """X1: who, when, what, before and after. `company` is the company the change concerns; the
    event is visible to that company and its partner chain (every ancestor) as it was when the event
    was recorded: `lineage` is the company's lineage then, so a partner a company moves under later
    does not read what happened before it arrived (C6)."""

    company = models.ForeignKey(Company, related_name="audit_events", on_delete=models.CASCADE)
    lineage = models.CharField(max_length=2000, blank=True, default="", editable=False)
    actor = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=254)  # kept when the user is gone: "system" for tasks
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    object_label = models.CharField(max_length=255, blank=True, default="")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["company", "-at"], name="audit_company_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.object_type}"


class ImportStatus(models.TextChoices):
    PENDING = "pending", "Waiting to be checked"
    VALIDATING = "validating", "Checking the file"
    READY = "ready", "Ready to import"
    IMPORTING = "importing", "Importing"
    DONE = "done", "Imported"
    FAILED = "failed", "Not imported"


class ImportJob(models.Model):
    """H6: one CSV file a partner imports (docs/import.md). The file is checked first (a dry run
    whose bad rows are kept in `errors`), then applied in one transaction, or not at all."""

    company = models.ForeignKey(Company, related_name="import_jobs", on_delete=models.CASCADE)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    # who pressed Import: the actor of the audit events the import writes (X1)
    applied_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    file_name = models.CharField(max_length=255)
    csv_text = models.TextField()
    status = models.CharField(max_length=16, choices=ImportStatus.choices, default=ImportStatus.PENDING)
    # the dry run: every bad row as {"line": int, "field": str, "message": str}
    errors = models.JSONField(default=list, blank=True)
    # what a valid file will do: counts and the companies it creates
    preview = models.JSONField(default=dict, blank=True)
    failure = models.TextField(blank=True, default="")  # why a valid file still failed to import
    companies_created = models.PositiveIntegerField(default=0)
    companies_existing = models.PositiveIntegerField(default=0)
    endpoints_created = models.PositiveIntegerField(default=0)
    endpoints_existing = models.PositiveIntegerField(default=0)
    # rows done / rows in the file; while importing, the live figure is in the cache
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    validated_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["company", "-created_at"], name="import_job_company_created")]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.get_status_display()})"
