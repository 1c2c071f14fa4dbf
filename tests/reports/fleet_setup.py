"""A small company tree with telemetry for the report tests, built through the services.

platform
  partner P (MSP)          own: endpoint security
    customer A             own: patch management, ATS, EDR, SVE, container protection
    partner Q              own: endpoint security; resells patch management
      customer C           own: patch management
    customer E             own: EDR (standalone)
  partner S (elsewhere)
    customer Z
"""

import datetime as dt
from dataclasses import dataclass

from companies.models import Company
from licensing.entitlements import entitlements_set
from tests.factories import make_company, make_partner, make_user
from tests.usage.fleet import Machine
from usage.rollups import usage_company_rollup

NOV = dt.date(2026, 11, 1)
DAY = dt.datetime(2026, 11, 10, 9, tzinfo=dt.UTC)
ALL_RESELL = {"endpoint_security", "a_la_carte", "patch_management", "full_disk_encryption",
              "advanced_threat_security", "edr", "sve", "container_protection", "edr_standalone"}


@dataclass
class Tree:
    platform: Company
    p: Company
    a: Company
    q: Company
    c: Company
    e: Company
    s: Company
    z: Company


def build_tree(platform) -> Tree:
    p = make_partner(parent=platform, name="Partner P")
    entitlements_set(actor=None, company=p, purpose="resell", keys=ALL_RESELL)
    entitlements_set(actor=None, company=p, purpose="own", keys={"endpoint_security", "a_la_carte"})
    a = make_company(parent=p, name="Customer A")
    entitlements_set(actor=None, company=a, purpose="own",
                     keys={"endpoint_security", "a_la_carte", "patch_management", "advanced_threat_security", "edr",
                           "sve", "container_protection"})
    q = make_partner(parent=p, name="Partner Q")
    entitlements_set(actor=None, company=q, purpose="resell", keys={"endpoint_security", "a_la_carte",
                                                                    "patch_management"})
    entitlements_set(actor=None, company=q, purpose="own", keys={"endpoint_security", "a_la_carte"})
    c = make_company(parent=q, name="Customer C")
    entitlements_set(actor=None, company=c, purpose="own", keys={"endpoint_security", "a_la_carte",
                                                                 "patch_management"})
    e = make_company(parent=p, name="Customer E")
    entitlements_set(actor=None, company=e, purpose="own", keys={"edr_standalone"})
    s = make_partner(parent=platform, name="Partner S")
    entitlements_set(actor=None, company=s, purpose="resell", keys={"endpoint_security", "a_la_carte"})
    z = make_company(parent=s, name="Customer Z")
    entitlements_set(actor=None, company=z, purpose="own", keys={"endpoint_security", "a_la_carte"})

    am = ["antimalware"]
    # Customer A: 3 plain, 1 patched, 2 with HyperDetect (one also Sandbox Analyzer), 1 VS central scan,
    # 2 VDI central scan (3,600 s + 300 s: 2 hours), 1 container host on a physical server, 2 with EDR
    for _ in range(3):
        Machine(a).beat(DAY, modules=am)
    Machine(a).beat(DAY, modules=am + ["patch_management"])
    Machine(a).beat(DAY, modules=am + ["hyperdetect"])
    Machine(a).beat(DAY, modules=am + ["hyperdetect", "sandbox_analyzer", "edr"])
    Machine(a, os_type="server", machine_type="virtual").beat(DAY, modules=am, scan="central")
    Machine(a, machine_type="virtual").beat(DAY, modules=am, scan="central", uptime=3600)
    Machine(a, machine_type="virtual").beat(DAY + dt.timedelta(days=3), modules=am, scan="central", uptime=300)
    Machine(a, os_type="server", container_host=True).beat(DAY, modules=am + ["container_protection"])
    Machine(a).beat(DAY, modules=am + ["edr"])
    # Customer C: 2 patched; Partner P itself: 1; Customer E: 2 EDR endpoints; Customer Z: 1
    for _ in range(2):
        Machine(c).beat(DAY, modules=am + ["patch_management"])
    Machine(p).beat(DAY, modules=am)
    for _ in range(2):
        Machine(e).beat(DAY, modules=["edr", "advanced_threat_control"])
    Machine(z).beat(DAY, modules=am)
    for company in (p, a, q, c, e, s, z):
        usage_company_rollup(company_id=company.pk, months=[NOV])
    return Tree(platform=platform, p=p, a=a, q=q, c=c, e=e, s=s, z=z)


def admin_of(company):
    return make_user(company=company)
