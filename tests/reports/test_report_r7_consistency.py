"""R7 with U13: for a generated fleet (tests/usage/fleet.py, rolled up by usage/rollups.py), the figures
of getMonthlyUsage over the REST API (usage/api.py), the CSV export's company rows (the /reports/
export.csv route, rendered by reports/render.report_csv_iter) and JSON-RPC licensing.getMonthlyUsage
(publicapi/methods/licensing.py) are the same numbers for the same company and month.

The fleet is a partner with a sub-partner (itself with customers), direct customers, endpoints on the
partners themselves, one EDR (standalone) customer, a random add-on selection per company and random
machines. Every company of the subtree is compared, on every figure the CSV carries; partners sum
their subtree (U13), "Not enabled" is "Not enabled" on every side (JSON-RPC: 0 and named in notEnabled).
"""

import csv
import datetime as dt
import io
import random
from types import SimpleNamespace

import pytest
from django.test import Client
from django.urls import reverse

from companies.models import CompanyType
from companies.services import api_key_create
from licensing.entitlements import entitlements_set
from tests.factories import make_company, make_partner, make_user
from tests.publicapi.conftest import Rpc
from tests.usage.fleet import Machine
from usage.models import CompanyMonthUsage
from usage.rollups import month_start, usage_company_rollup
from usage.selectors import NOT_ENABLED

pytestmark = pytest.mark.django_db

# a la carte add-ons (MDR Foundations comes only with the Secure Plus / Extra bundles, E5: its column is
# compared as "Not enabled" on every side)
ADDONS = ["patch_management", "full_disk_encryption", "advanced_threat_security", "edr", "sve",
          "container_protection", "integrity_monitoring"]
RESELL = {"endpoint_security", "a_la_carte", "edr_standalone", *ADDONS}
MODULES = ["patch_management", "full_disk_encryption", "hyperdetect", "sandbox_analyzer", "edr",
           "container_protection", "integrity_monitoring"]
# R3 CSV header -> (REST figure, JSON-RPC field)
COLUMNS = {
    "Licensed endpoints": ("licensed_endpoints", "licensedEndpoints"),
    "Endpoint usage": ("endpoint_usage", "endpointMonthlyUsage"),
    "Patch Management usage": ("patch_management", "patchManagementMonthlyUsage"),
    "SVE: VS": ("sve_vs", "sveVsMonthlyUsage"),
    "SVE: VDI": ("sve_vdi_hours", "sveVdiMonthlyUsage"),
    "Container Protection Usage": ("container_protection", "containerProtectionMonthlyUsage"),
    "ATS usage": ("ats", "atsMonthlyUsage"),
    "EDR usage": ("edr", "edrMonthlyUsage"),
    "MDR Foundations": ("mdr_foundations", "mdrFoundationsMonthlyUsage"),
}


def _machines(company, rng: random.Random, count: int, when: dt.datetime) -> None:
    for _ in range(count):
        os_type = rng.choice(["workstation", "server"])
        machine = Machine(company, os_family=rng.choice(["windows", "linux"]), os_type=os_type,
                          machine_type=rng.choice(["physical", "virtual"]),
                          container_host=os_type == "server" and rng.random() < 0.3, seat=rng.random() < 0.9,
                          now=when)
        modules = ["antimalware"] + [m for m in MODULES if rng.random() < 0.4]
        for beat in range(rng.randint(1, 2)):
            machine.beat(when + dt.timedelta(seconds=beat), modules=modules if beat == 0 else ["antimalware"],
                         scan=rng.choice(["local", "central"]), uptime=rng.randint(0, 86_400))


def generated_fleet(platform, seed: int) -> SimpleNamespace:
    """top ─┬─ reseller (partner, own endpoints) ─┬─ 2 customers
            │                                     └─ sub-reseller (partner) ── 1 customer
            ├─ 3 customers (one EDR standalone)
            └─ own endpoints
       elsewhere ── a foreign customer (never in top's figures)."""
    rng = random.Random(seed)  # noqa: S311 - test data
    top = make_partner(parent=platform, name=f"R7 fleet {seed}")
    entitlements_set(actor=None, company=top, purpose="resell", keys=RESELL)
    entitlements_set(actor=None, company=top, purpose="own", keys={"endpoint_security", "a_la_carte", "edr"})
    reseller = make_partner(parent=top, name=f"R7 fleet {seed} reseller")
    entitlements_set(actor=None, company=reseller, purpose="resell", keys=RESELL)
    entitlements_set(actor=None, company=reseller, purpose="own", keys={"endpoint_security", "a_la_carte",
                                                                        "patch_management"})
    sub = make_partner(parent=reseller, name=f"R7 fleet {seed} sub-reseller")
    entitlements_set(actor=None, company=sub, purpose="resell", keys=RESELL)
    customers = []
    for i, parent in enumerate([top, top, top, reseller, reseller, sub]):
        company = make_company(parent=parent, name=f"R7 fleet {seed} customer {i}")
        if i == 2:
            entitlements_set(actor=None, company=company, purpose="own", keys={"edr_standalone"})
        else:
            chosen = {a for a in ADDONS if rng.random() < 0.5}
            entitlements_set(actor=None, company=company, purpose="own",
                             keys={"endpoint_security", "a_la_carte", *chosen})
        customers.append(company)
    elsewhere = make_partner(parent=platform, name=f"R7 elsewhere {seed}")
    entitlements_set(actor=None, company=elsewhere, purpose="resell", keys=RESELL)
    foreign = make_company(parent=elsewhere, name=f"R7 elsewhere {seed} customer")
    entitlements_set(actor=None, company=foreign, purpose="own", keys={"endpoint_security", "a_la_carte", *ADDONS})

    when = dt.datetime.now(dt.UTC)  # after the entitlements: add-ons count from when they are enabled
    for company in (top, reseller, *customers, foreign):
        _machines(company, rng, rng.randint(3, 8), when)
    month = month_start(when)
    for company in (top, reseller, sub, *customers, elsewhere, foreign):
        usage_company_rollup(company_id=company.pk, months=[month])
    admin = make_user(company=top)
    key = api_key_create(actor=admin, company=top, name="R7 key", scopes=["usage"])[1]
    return SimpleNamespace(top=top, reseller=reseller, sub=sub, customers=customers, foreign=foreign,
                           subtree=[top, reseller, sub, *customers], admin=admin, key=key, month=month)


def csv_company_rows(client: Client, company, month: dt.date, **options) -> dict[int, dict]:
    """The export route's company rows (before the blank line that opens the endpoint details), by
    company name."""
    query = {"company": company.pk, "month": f"{month:%Y-%m}", **options}
    response = client.get(reverse("reports:csv"), query)
    assert response.status_code == 200, response
    text = b"".join(response.streaming_content).decode()
    company_part = text.partition("\r\n\r\n")[0]
    return {row["Company name"]: row for row in csv.DictReader(io.StringIO(company_part))}


def rest_figures(client: Client, company, month: dt.date) -> dict:
    response = client.get(reverse("usage-api:month", args=[company.pk, f"{month:%Y-%m}"]))
    assert response.status_code == 200, response.content
    return response.json()


def expected_from_usage_rows(company, month: dt.date) -> dict[str, object]:
    """The subtree's usage rows summed in Python, independently of every selector under test."""
    rows = list(CompanyMonthUsage.objects.filter(month=month, company__lineage__startswith=company.lineage))
    gate = {"patch_management": "patch_management", "sve_vs": "sve", "sve_vdi_hours": "sve",
            "container_protection": "container_protection", "ats": "advanced_threat_security", "edr": "edr",
            "mdr_foundations": "mdr_foundations"}
    expected = {}
    for figure, _ in COLUMNS.values():
        item = gate.get(figure)
        if item and not any(item in row.enabled for row in rows):
            expected[figure] = NOT_ENABLED
        else:
            expected[figure] = sum(getattr(row, figure) for row in rows)
    return expected


@pytest.mark.parametrize("seed", [3, 11])
def test_R7_U13_rest_csv_and_jsonrpc_agree_for_every_company_of_a_subtree(platform, seed):
    fleet = generated_fleet(platform, seed)
    client = Client()
    client.force_login(fleet.admin)
    rpc = Rpc(Client())
    top_rows = csv_company_rows(client, fleet.top, fleet.month)
    assert set(top_rows) == {c.name for c in fleet.subtree}  # U13: the subtree, never the foreign customer

    numbers = not_enabled = 0
    for company in fleet.subtree:
        rest = rest_figures(client, company, fleet.month)
        assert rest["scope"] == ("subtree" if company.type == CompanyType.PARTNER else "company")
        rpc_usage = rpc.result("licensing", "getMonthlyUsage",
                               {"companyId": str(company.pk), "targetMonth": f"{fleet.month:%m/%Y}"}, key=fleet.key)
        own_rows = csv_company_rows(client, company, fleet.month)  # the company's own report: first row
        expected = expected_from_usage_rows(company, fleet.month)
        for header, (figure, rpc_field) in COLUMNS.items():
            where = (company.name, header)
            csv_cell = top_rows[company.name][header]
            assert own_rows[company.name][header] == csv_cell, where
            rest_value = rest["figures"][figure]
            if expected[figure] == NOT_ENABLED:
                assert (csv_cell, rest_value) == (NOT_ENABLED, NOT_ENABLED), where
                assert rpc_usage[rpc_field] == 0 and rpc_field in rpc_usage["notEnabled"], where
                not_enabled += 1
            else:
                assert (int(csv_cell), rest_value, rpc_usage[rpc_field]) == (expected[figure],) * 3, where
                assert rpc_field not in rpc_usage["notEnabled"], where
                numbers += 1
    # the fleet is varied enough that both kinds of cell are compared, and real counts among them
    assert numbers >= 30 and not_enabled >= 5, (numbers, not_enabled)
    assert int(top_rows[fleet.top.name]["Licensed endpoints"]) > int(top_rows[fleet.reseller.name]
                                                                    ["Licensed endpoints"]) > 0


def test_R7_U13_only_direct_companies_rows_equal_the_api_figures(platform):
    """'Only direct companies' lists the target and its first-level children, each still summing
    its subtree: the same numbers as getMonthlyUsage for each of them."""
    fleet = generated_fleet(platform, seed=5)
    client = Client()
    client.force_login(fleet.admin)
    rpc = Rpc(Client())
    rows = csv_company_rows(client, fleet.top, fleet.month, only_direct="on")
    direct = [fleet.top, fleet.reseller, *(c for c in fleet.customers if c.parent_id == fleet.top.pk)]
    assert set(rows) == {c.name for c in direct}
    for company in direct:
        rest = rest_figures(client, company, fleet.month)["figures"]
        rpc_usage = rpc.result("licensing", "getMonthlyUsage",
                               {"companyId": company.pk, "targetMonth": f"{fleet.month:%m/%Y}"}, key=fleet.key)
        for header, (figure, rpc_field) in COLUMNS.items():
            cell = rows[company.name][header]
            expected = rest[figure]
            assert cell == str(expected), (company.name, header)
            assert rpc_usage[rpc_field] == (0 if expected == NOT_ENABLED else expected), (company.name, header)


def test_R7_C6_foreign_company_is_404_on_every_side(platform):
    fleet = generated_fleet(platform, seed=1)
    client = Client()
    client.force_login(fleet.admin)
    month = f"{fleet.month:%Y-%m}"
    assert client.get(reverse("usage-api:month", args=[fleet.foreign.pk, month])).status_code == 404
    assert client.get(reverse("reports:csv"), {"company": fleet.foreign.pk, "month": month}).status_code == 404
    rpc_month = f"{fleet.month:%m/%Y}"  # the JSON-RPC API takes the original's mm/yyyy (docs/jsonrpc.md)
    error = Rpc(Client()).error("licensing", "getMonthlyUsage", {"companyId": fleet.foreign.pk,
                                                                 "targetMonth": rpc_month}, key=fleet.key)
    missing = Rpc(Client()).error("licensing", "getMonthlyUsage", {"companyId": 987_654_321,
                                                                   "targetMonth": rpc_month}, key=fleet.key)
    assert error == missing  # the same answer for missing and forbidden
