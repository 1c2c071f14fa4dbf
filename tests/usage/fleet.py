"""Building telemetry for rollup tests straight in a company's schema (the HTTP path has its own
tests). Seats are taken through the licensing service, as registration does."""

import datetime as dt
import uuid

from django.utils import timezone
from django_tenants.utils import tenant_context

from licensing.seats import seat_assign
from usage.modules import MODULE_BITS, SCAN_MODES, XDR_SENSOR_BITS, mask_of
from usage.telemetry.models import Endpoint, Heartbeat, MailboxMonth


class Machine:
    def __init__(self, company, *, os_family="windows", os_type="workstation", machine_type="physical",
                 container_host=False, seat=True, now=None):
        self.company = company
        self.id = uuid.uuid4()
        self.os = (os_family, os_type, machine_type)
        self.container_host = container_host
        with tenant_context(company):
            Endpoint.objects.create(id=self.id, hardware_id=str(self.id), hostname=f"host-{self.id.hex[:6]}",
                                    os_family=os_family, os_type=os_type, machine_type=machine_type)
        if seat:
            seat_assign(company=company, endpoint_id=self.id, now=now)

    def beat(self, when: dt.datetime, modules=("antimalware",), scan="local", uptime=600, sensors=(),
             heartbeat_id=None):
        with tenant_context(self.company):
            Heartbeat.objects.create(
                id=heartbeat_id or uuid.uuid4(), endpoint_id=self.id, observed_at=when, received_at=timezone.now(),
                os_family=self.os[0], os_type=self.os[1], machine_type=self.os[2],
                container_host=self.container_host, modules=mask_of(list(modules), MODULE_BITS),
                scan_mode=SCAN_MODES[scan], uptime_seconds=uptime,
                xdr_sensors=mask_of(list(sensors), XDR_SENSOR_BITS))
        return self


def mailbox(company, month, mailbox_id, *, product="email", primary=True, object_class="user",
            environment="cloud", sent=0, received=0):
    with tenant_context(company):
        MailboxMonth.objects.create(mailbox_id=mailbox_id, product=product, environment=environment, month=month,
                                    primary=primary, object_class=object_class, emails_sent=sent,
                                    emails_received=received, last_observed_at=timezone.now())
