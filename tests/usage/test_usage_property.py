"""Property test: random fleets and heartbeat histories, every company-month figure of the rollup
checked against a plain reference implementation of the U rules written here, independently of the
SQL (U1-U7, U9-U11, U13)."""

import datetime as dt
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from licensing.entitlements import entitlements_set
from licensing.seats import reservation_set
from tests.factories import make_company
from tests.usage.fleet import Machine
from usage.models import CompanyMonthUsage
from usage.rollups import usage_company_rollup

pytestmark = pytest.mark.django_db

NOV = dt.date(2026, 11, 1)
MODULES = ["antimalware", "firewall", "patch_management", "full_disk_encryption", "hyperdetect",
           "sandbox_analyzer", "edr", "integrity_monitoring", "container_protection"]
ADDONS = ["patch_management", "full_disk_encryption", "advanced_threat_security", "edr", "integrity_monitoring",
          "sve", "container_protection", "xdr", "xdr_network", "xdr_identity"]
SENSORS = ["network", "identity", "cloud"]

heartbeat = st.fixed_dictionaries({
    "day": st.integers(min_value=-3, max_value=29),  # some fall in October: not November's usage
    "modules": st.sets(st.sampled_from(MODULES), max_size=5),
    "scan": st.sampled_from(["local", "hybrid", "central"]),
    "uptime": st.integers(min_value=0, max_value=86_400),
    "sensors": st.sets(st.sampled_from(SENSORS), max_size=2),
})
endpoint = st.fixed_dictionaries({
    "os_family": st.sampled_from(["windows", "linux", "macos"]),
    "os_type": st.sampled_from(["workstation", "server"]),
    "machine_type": st.sampled_from(["physical", "virtual"]),
    "container_host": st.booleans(),
    "heartbeats": st.lists(heartbeat, min_size=1, max_size=4),
})
fleet = st.fixed_dictionaries({
    "product": st.sampled_from(["endpoint_security", "endpoint_security", "edr_standalone"]),
    "addons": st.sets(st.sampled_from(ADDONS)),
    "mdr": st.booleans(),
    "seats": st.one_of(st.none(), st.integers(min_value=0, max_value=6)),
    "endpoints": st.lists(endpoint, min_size=1, max_size=8),
})


def reference(spec, licensed_flags):
    """The U rules, plainly, over the generated data."""
    enabled = set()
    if spec["product"] == "endpoint_security":
        mdr = {"mdr_foundations", "edr", "advanced_threat_security"} if spec["mdr"] else set()
        enabled = set(spec["addons"]) | mdr
        if "xdr" not in enabled:
            enabled -= {"xdr_network", "xdr_identity"}
    months = []
    for ep, licensed in zip(spec["endpoints"], licensed_flags, strict=True):
        beats = [hb for hb in ep["heartbeats"] if hb["day"] >= 0]
        if not beats:
            continue
        months.append({
            "licensed": licensed, "modules": set().union(*(hb["modules"] for hb in beats)),
            "central": any(hb["scan"] == "central" for hb in beats), "uptime": sum(hb["uptime"] for hb in beats),
            "sensors": set().union(*(hb["sensors"] for hb in beats)),
            "server": ep["machine_type"] == "virtual" and (ep["os_type"] == "server" or ep["os_family"] == "linux"),
            "desktop": (ep["machine_type"] == "virtual"
                        and not (ep["os_type"] == "server" or ep["os_family"] == "linux")),
        })
    lic = [m for m in months if m["licensed"]]
    sve, cp = "sve" in enabled, "container_protection" in enabled

    def on_vs(m):
        return sve and m["server"] and m["central"]

    def on_vdi(m):
        return sve and m["desktop"] and m["central"]

    def is_cp(m):
        return cp and "container_protection" in m["modules"]

    def gated(item, value):
        return value if item in enabled else 0

    def count(module):
        return sum(1 for m in lic if module in m["modules"])

    figures = {
        "active_endpoints": len(months),
        "licensed_endpoints": len(lic),
        "endpoint_usage": sum(1 for m in lic if "antimalware" in m["modules"] and not on_vs(m) and not on_vdi(m)
                              and not is_cp(m)),
        "patch_management": gated("patch_management", count("patch_management")),
        "full_disk_encryption": gated("full_disk_encryption", count("full_disk_encryption")),
        "edr": gated("edr", count("edr")),
        "integrity_monitoring": gated("integrity_monitoring", count("integrity_monitoring")),
        "ats": gated("advanced_threat_security",
                     sum(1 for m in lic if {"hyperdetect", "sandbox_analyzer"} & m["modules"])),
        "sve_vs": gated("sve", sum(1 for m in lic if on_vs(m) and not is_cp(m))),
        "sve_vdi_hours": gated("sve", math.ceil(sum(m["uptime"] for m in lic if on_vdi(m)) / 3600)),
        "container_protection": gated("container_protection", sum(1 for m in lic if is_cp(m))),
        "mdr_foundations": count("edr") if "mdr_foundations" in enabled else 0,
    }
    for wire, item in (("network", "xdr_network"), ("identity", "xdr_identity"), ("cloud", "xdr_cloud")):
        deployed = any(wire in m["sensors"] for m in lic)
        figures[item] = len(lic) if item in enabled and deployed else 0
    if spec["product"] == "edr_standalone":
        figures["endpoint_usage"] = len(lic)
    return figures


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(spec=fleet)
def test_U_rules_match_reference_implementation(platform, spec):
    company = make_company(parent=platform)
    keys = {spec["product"]}
    if spec["product"] == "endpoint_security":
        keys |= {"secure" if spec["mdr"] else "a_la_carte"} | set(spec["addons"])
        if spec["mdr"]:
            keys |= {"mdr_foundations"}
            keys -= {"edr", "advanced_threat_security"}  # included in Secure
        if "xdr" not in keys:
            keys -= {"xdr_network", "xdr_identity"}
    entitlements_set(actor=None, company=company, purpose="own", keys=keys)
    if spec["seats"] is not None:
        reservation_set(actor=None, company=company, seats=spec["seats"])
    licensed_flags = []
    for ep in spec["endpoints"]:
        machine = Machine(company, os_family=ep["os_family"], os_type=ep["os_type"],
                          machine_type=ep["machine_type"], container_host=ep["container_host"])
        from licensing.models import SeatAssignment

        licensed_flags.append(SeatAssignment.objects.get(endpoint_id=machine.id).state == "licensed")
        for hb in ep["heartbeats"]:
            when = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC) + dt.timedelta(days=hb["day"])
            machine.beat(when, modules=sorted(hb["modules"]), scan=hb["scan"], uptime=hb["uptime"],
                         sensors=sorted(hb["sensors"]))
    usage_company_rollup(company_id=company.pk, months=[NOV])
    row = CompanyMonthUsage.objects.get(company=company, month=NOV)
    expected = reference(spec, licensed_flags)
    assert {key: getattr(row, key) for key in expected} == expected
