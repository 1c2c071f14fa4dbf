"""Usage in the public schema: how agents authenticate, which companies have new telemetry, and the
company-month usage rows that reports, the API and billing read (U1-U15)."""

import datetime as dt

from django.contrib.postgres.fields import ArrayField
from django.db import models

from companies.models import Company

# A stored lineage ("/1/4/9/") as the array of its ids, root first; a GIN index on this expression
# (usage 0004) finds a month's rows below any company in one index probe (H5).
ANCESTORS_SQL = "string_to_array(btrim({}, '/'), '/')::bigint[]"


def month_rows_below(*ids: str) -> str:
    """SQL: the usage row `u` was below every one of `ids` (SQL expressions or placeholders) in its
    month, by its stored lineage: one probe of the index on ANCESTORS_SQL."""
    return f"{ANCESTORS_SQL.format('u.lineage')} @> ARRAY[{', '.join(ids)}]::bigint[]"


def month_rows_in_view(*, target: str, viewer: str, prefix: str) -> str:
    """SQL: usage row `u`, of the target's subtree in its month, may be read by the viewer (placeholders or
    SQL expressions; viewer NULL: no one's view). The target's own users, and a partner that was above the
    row in its month, read it as it was billed; a partner above the target now reads only the rows of
    companies below the target now (`prefix`: the target's lineage and '%'), so a company that has since
    left the subtree cannot be worked out from the target's figures (C6, H5). usage.selectors.rows_in_view
    is the same rule for querysets."""
    below_now = f"EXISTS (SELECT 1 FROM companies_company n WHERE n.id = u.company_id AND n.lineage LIKE {prefix})"  # noqa: S608
    above_then = month_rows_below(viewer)
    return f"({viewer}::bigint IS NULL OR {viewer}::bigint = {target}::bigint OR {above_then} OR {below_now})"


class LineageField(models.CharField):
    """A company's place in the tree for a usage row's month (H5): `lineage__names=<company id>`
    keeps the rows that were in that company's subtree."""


@LineageField.register_lookup
class LineageNames(models.Lookup):
    lookup_name = "names"

    def get_db_prep_lookup(self, value, connection):
        return "%s", [int(value)]

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{ANCESTORS_SQL.format(lhs)} @> ARRAY[{rhs}]::bigint[]", [*lhs_params, *rhs_params]


# ARCHITECTURE: raw heartbeats are kept for the open month plus this late window, then purged; the
# agent API refuses heartbeats observed before it, which the purged rows could no longer deduplicate
LATE_WINDOW = dt.timedelta(days=35)


def late_horizon(now: dt.datetime) -> dt.datetime:
    """T4, U12: the earliest observed_at the agent API accepts, and below which raw heartbeats are
    purged (one horizon for both, so a resend of a purged heartbeat is refused, never counted twice):
    the earlier of `now` minus the late window and the start of the previous month. The previous
    month's late data still reaches a report (the one made at the start of the next month), so all of
    it is accepted throughout the open month, however old; data older than both bounds is refused."""
    previous = (dt.date(now.year, now.month, 1) - dt.timedelta(days=1)).replace(day=1)
    return min(now - LATE_WINDOW, dt.datetime.combine(previous, dt.time(), tzinfo=dt.UTC))


class HeartbeatPurge(models.Model):
    """T4: the horizon below which raw heartbeats may have been purged, the highest any purge has used
    (one row). The agent API refuses what is older than it as well as what is older than the late
    horizon: a purge that once used a later horizon (an older rule, a clock) must not let a resend of what
    it removed be stored and counted again."""

    purged_below = models.DateTimeField()

    def __str__(self) -> str:
        return f"Heartbeats purged below {self.purged_below:%Y-%m-%d %H:%M}"


def heartbeats_earliest(now: dt.datetime) -> dt.datetime:
    """The earliest observed_at a heartbeat may have to be stored: the late horizon, or the highest purge
    horizon used so far when that is later. One primary-key read."""
    purged = HeartbeatPurge.objects.filter(pk=1).values_list("purged_below", flat=True).first()
    return max(late_horizon(now), purged) if purged else late_horizon(now)


class InstallToken(models.Model):
    """T1: the token an install package carries; it names the company the agent registers into."""

    company = models.ForeignKey(Company, related_name="install_tokens", on_delete=models.CASCADE)
    token = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Install token of {self.company}"


class AgentCredential(models.Model):
    """T1: the agent credential returned at registration, stored as a SHA-256 hash. It leads from
    a request straight to the company's schema and the endpoint, without scanning schemas."""

    token_hash = models.CharField(max_length=64, unique=True)
    company = models.ForeignKey(Company, related_name="agent_credentials", on_delete=models.CASCADE)
    endpoint_id = models.UUIDField()
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["company", "endpoint_id"], name="agent_credential_endpoint")]

    def __str__(self) -> str:
        return f"Agent {self.endpoint_id}"


class PendingRollup(models.Model):
    """A company with telemetry not rolled up yet; the fan-out task reads this instead of every
    schema. Written with INSERT ... ON CONFLICT DO NOTHING by ingestion."""

    company = models.OneToOneField(Company, on_delete=models.CASCADE, primary_key=True, related_name="+")
    since = models.DateTimeField(auto_now_add=True)
    # months to recompute besides those the new heartbeats touch: a mailbox report changes its
    # month's figures without any heartbeat (U14, U15), and after the close that is a late adjustment
    months = ArrayField(models.DateField(), default=list, blank=True)

    def __str__(self) -> str:
        return f"Pending rollup for {self.company_id}"


class CompanyMonthUsage(models.Model):
    """One company's own figures for one month (a partner's row is the sum of its subtree, summed
    when read). Recomputed by the rollup until the month is finalized (U12)."""

    company = models.ForeignKey(Company, related_name="month_usage", on_delete=models.CASCADE)
    month = models.DateField()  # first day of the month
    # H5: the company's place in the tree for this month (its lineage when the row was last computed,
    # kept with the month once finalized): partners' figures sum the rows whose lineage names them, so
    # a company that moves later leaves its old partner's finalized months as they were billed
    lineage = LineageField(max_length=2000, default="")
    product_type = models.CharField(max_length=32, blank=True, default="")  # catalogue key, U11
    active_endpoints = models.IntegerField(default=0)
    licensed_endpoints = models.IntegerField(default=0)  # U1
    endpoint_usage = models.IntegerField(default=0)  # U2 (U11 for EDR companies)
    patch_management = models.IntegerField(default=0)  # U3
    full_disk_encryption = models.IntegerField(default=0)
    edr = models.IntegerField(default=0)
    integrity_monitoring = models.IntegerField(default=0)
    ats = models.IntegerField(default=0)  # U4
    hyperdetect = models.IntegerField(default=0)
    sandbox_analyzer = models.IntegerField(default=0)
    xdr_identity = models.IntegerField(default=0)  # U5
    xdr_productivity = models.IntegerField(default=0)
    xdr_network = models.IntegerField(default=0)
    xdr_cloud = models.IntegerField(default=0)
    sve_vs = models.IntegerField(default=0)  # U6
    sve_vdi_hours = models.IntegerField(default=0)  # U7
    data_retention = models.JSONField(default=dict)  # U8: tier key -> endpoints charged at it
    container_protection = models.IntegerField(default=0)  # U9
    mdr_foundations = models.IntegerField(default=0)  # U10
    exchange_mailboxes = models.IntegerField(default=0)  # U14
    email_security_mailboxes = models.IntegerField(default=0)  # U15
    enabled = models.JSONField(default=list)  # own-use items enabled at any time in the month (U13)
    reserved_seats = models.IntegerField(null=True, blank=True)
    minimum_usage = models.IntegerField(null=True, blank=True)  # L6
    end_date = models.DateField(null=True, blank=True)
    auto_renew = models.BooleanField(default=False)
    computed_at = models.DateTimeField(auto_now=True)
    finalized_at = models.DateTimeField(null=True, blank=True)

    FIGURES = ["active_endpoints", "licensed_endpoints", "endpoint_usage", "patch_management",
               "full_disk_encryption", "edr", "integrity_monitoring", "ats", "hyperdetect", "sandbox_analyzer",
               "xdr_identity", "xdr_productivity", "xdr_network", "xdr_cloud", "sve_vs", "sve_vdi_hours",
               "container_protection", "mdr_foundations", "exchange_mailboxes", "email_security_mailboxes"]

    class Meta:
        constraints = [models.UniqueConstraint(fields=["company", "month"], name="company_month_unique")]
        indexes = [models.Index(fields=["month"], name="company_month_month")]

    def __str__(self) -> str:
        return f"{self.company_id} {self.month:%Y-%m}"

    @property
    def billed_endpoint_usage(self) -> int:
        """L6: billing for the month is max(minimum, actual usage)."""
        return max(self.minimum_usage or 0, self.endpoint_usage)


class Activity(models.Model):
    """What an endpoint ran over a period: the columns endpoint-day and endpoint-month share. Every
    one merges associatively (bit_or, sums, least/greatest, the latest shape: usage/rollups.py)."""

    # no database constraint: it would be checked for every row a rollup writes (tens of thousands per run, at
    # its commit); only the rollup writes these rows, for companies it has just read under their rollup lock,
    # and a company is deleted only without endpoints (companies.services.company_delete), its rows by the ORM
    company = models.ForeignKey(Company, related_name="+", on_delete=models.CASCADE, db_index=False,
                                db_constraint=False)
    endpoint_id = models.UUIDField()
    modules = models.IntegerField()
    xdr_sensors = models.SmallIntegerField()
    used_central_scan = models.BooleanField()
    uptime_seconds = models.BigIntegerField()
    os_family = models.CharField(max_length=16)
    os_type = models.CharField(max_length=16)
    machine_type = models.CharField(max_length=16)
    container_host = models.BooleanField()
    heartbeats = models.IntegerField()
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        abstract = True


# The lasting rows of the telemetry path are company-scoped rows in the public schema, not tables in
# each company's schema: one rollup statement writes a batch's rows into one table instead of two
# tables per company, whose per-table parse, plan and lock work kept the rollup above its target
# (ARCHITECTURE.md's fallback, decided from the figures in docs/decisions.md). Every reader names the
# company (C6). The primary key leads with the company, so a company's month or days are one range.

class EndpointDay(Activity):
    """What one endpoint of a company ran on one UTC day: the lasting record."""

    pk = models.CompositePrimaryKey("company_id", "day", "endpoint_id")
    day = models.DateField()

    class Meta:
        # one endpoint's days (the days a part-month seat was held, its last day): without it each lookup
        # would walk all of the company's days in the month, or its whole history
        indexes = [models.Index(fields=["company", "endpoint_id", "day"], name="endpoint_day_endpoint")]

    def __str__(self) -> str:
        return f"{self.endpoint_id} {self.day}"


class EndpointMonth(Activity):
    """An endpoint's month, merged from its days' heartbeats: modules at any time in the month (U rules)."""

    pk = models.CompositePrimaryKey("company_id", "month", "endpoint_id")
    month = models.DateField()  # first day of the month

    def __str__(self) -> str:
        return f"{self.endpoint_id} {self.month:%Y-%m}"


class RollupWatermark(models.Model):
    """The heartbeat number (`seq`) up to which the company's heartbeats are merged into its endpoint-day
    and endpoint-month rows (the newest number handed out when the rollup ran, which may belong to no
    stored heartbeat: a duplicate dropped on its id); moved in the statement that merges them
    (usage/rollups.py)."""

    company = models.OneToOneField(Company, on_delete=models.CASCADE, primary_key=True, related_name="+",
                                   db_constraint=False)  # as Activity.company
    seq = models.BigIntegerField()

    def __str__(self) -> str:
        return f"Rollup watermark of {self.company_id}: {self.seq}"


class LateAdjustment(models.Model):
    """U12/T4: figures that changed after their month was finalized, shown in the next report."""

    company = models.ForeignKey(Company, related_name="late_adjustments", on_delete=models.CASCADE)
    month = models.DateField()  # the finalized month the data belongs to
    # the month whose report carries it: the first whose report was not yet made when it was recorded
    reported_in = models.DateField()
    lineage = LineageField(max_length=2000, default="")  # H5: the adjusted month's row's lineage
    delta = models.JSONField()  # figure -> change against the frozen row
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["company", "month"], name="late_adjustment_company"),
                   models.Index(fields=["reported_in"], name="late_adjustment_reported")]

    def __str__(self) -> str:
        return f"Late adjustment {self.company_id} {self.month:%Y-%m}"


class MonthClose(models.Model):
    """U12: a month once finalized."""

    month = models.DateField(unique=True)
    finalized_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} finalized"
