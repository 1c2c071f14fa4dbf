from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    """A company's own network data; lives in every company's schema (TENANT_APPS)."""

    name = "usage.telemetry"
    label = "telemetry"
    verbose_name = "Endpoint telemetry"
