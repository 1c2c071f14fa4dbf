"""Network data of one company, kept in that company's schema: its endpoints, the raw heartbeats
they send and its mailbox inventory.

Tenant schemas are kept small: every migration here runs once per company. Module sets are
bitmasks (usage/modules.py) so a month's union is one bit_or. The lasting rows the heartbeats are
rolled up into (endpoint-day, endpoint-month) and the rollup's watermark are company-scoped rows in
the public schema (usage.models; docs/decisions.md, "Lasting rows out of the company schemas").
"""

import uuid

from django.db import models


class OsFamily(models.TextChoices):
    WINDOWS = "windows", "Windows"
    LINUX = "linux", "Linux"
    MACOS = "macos", "macOS"


class OsType(models.TextChoices):
    WORKSTATION = "workstation", "Workstation"
    SERVER = "server", "Server"


class MachineType(models.TextChoices):
    PHYSICAL = "physical", "Physical"
    VIRTUAL = "virtual", "Virtual"


class Endpoint(models.Model):
    """A machine with the security agent. The hardware id identifies it across reinstalls (T7)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hardware_id = models.CharField(max_length=200, unique=True)
    hostname = models.CharField(max_length=255)
    os_family = models.CharField(max_length=16, choices=OsFamily.choices)
    os_type = models.CharField(max_length=16, choices=OsType.choices)
    machine_type = models.CharField(max_length=16, choices=MachineType.choices)
    registered_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.hostname


class Heartbeat(models.Model):
    """One agent report, as received (T2). Kept for the open month plus the late window; the
    endpoint-day rows are the lasting record.

    The table also has `seq`, an identity column this model does not declare (the database numbers
    each stored heartbeat; only the rollup's SQL reads it): the rollup merges the heartbeats above
    the company's watermark (usage_rollupwatermark) and moves the watermark in the same
    transaction, so each row is counted exactly once without rewriting it (see usage/rollups.py).
    The rollup reads its upper bound from the column's sequence, by name (telemetry_heartbeat_seq_seq):
    insert heartbeats through usage.agent (which holds the company's ingest lock) with `seq` left to the
    sequence, and keep the table, the column and the sequence named as they are."""

    id = models.UUIDField(primary_key=True)  # the agent's heartbeat id: duplicates vanish (T4)
    endpoint_id = models.UUIDField()
    observed_at = models.DateTimeField()
    received_at = models.DateTimeField()
    os_family = models.CharField(max_length=16)
    os_type = models.CharField(max_length=16)
    machine_type = models.CharField(max_length=16)
    container_host = models.BooleanField()
    modules = models.IntegerField()
    scan_mode = models.SmallIntegerField()
    uptime_seconds = models.IntegerField()
    xdr_sensors = models.SmallIntegerField()

    class Meta:
        indexes = [
            models.Index(fields=["observed_at"], name="heartbeat_observed"),
        ]

    def __str__(self) -> str:
        return str(self.id)


class MailboxMonth(models.Model):
    """A mailbox's month from the mailbox inventory (U14, U15): latest flags, summed traffic."""

    mailbox_id = models.CharField(max_length=200)
    product = models.CharField(max_length=16)  # exchange | email
    environment = models.CharField(max_length=16)  # on_premises | cloud
    month = models.DateField()
    primary = models.BooleanField()
    object_class = models.CharField(max_length=64, blank=True, default="")
    emails_sent = models.BigIntegerField(default=0)
    emails_received = models.BigIntegerField(default=0)
    last_observed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product", "mailbox_id", "month"],
                                               name="mailbox_month_unique")]

    def __str__(self) -> str:
        return f"{self.product}:{self.mailbox_id} {self.month:%Y-%m}"
