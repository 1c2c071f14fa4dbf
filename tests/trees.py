"""The company tree the API suites (REST companies and licensing, JSON-RPC) probe for C2, C3 and C6."""

from collections.abc import Callable
from types import SimpleNamespace

from companies.models import Company
from companies.services import api_key_create, company_set_assist
from tests.factories import make_company, make_partner, make_user

ALL_SCOPES = ["companies", "licensing", "usage", "reports"]


def api_tree(platform: Company, *, on_partner: Callable[[Company], None] | None = None) -> SimpleNamespace:
    """platform
       ├─ Northwind MSP ─┬─ Acme Dental (customer)
       │                 ├─ Bolt Legal (customer, assist off)
       │                 └─ Kite Sub (partner) ── Kite Bakery (customer)
       ├─ Rivet Resellers (reseller-only partner) ── Oak Clinic (customer)
       └─ Southgate MSP ── Pine Dairy (customer)
    Every company has an administrator (`admins`) and an API key with every scope (`keys`: the
    (ApiKey, secret) pairs). `on_partner` runs for each partner as it is made, before its children."""
    on_partner = on_partner or (lambda company: None)

    def partner(**details) -> Company:
        company = make_partner(**details)
        on_partner(company)
        return company

    north = partner(parent=platform, name="Northwind MSP")
    acme = make_company(parent=north, name="Acme Dental")
    bolt = make_company(parent=north, name="Bolt Legal")
    kite_sub = partner(parent=north, name="Kite Sub")
    kite_bakery = make_company(parent=kite_sub, name="Kite Bakery")
    rivet = partner(parent=platform, name="Rivet Resellers", manages_security=False)
    oak = make_company(parent=rivet, name="Oak Clinic")
    south = partner(parent=platform, name="Southgate MSP")
    pine = make_company(parent=south, name="Pine Dairy")
    companies = [platform, north, acme, bolt, kite_sub, kite_bakery, rivet, oak, south, pine]
    admins, keys = {}, {}
    for company in companies:
        slug = company.name.lower().replace(" ", "-")
        admins[company.pk] = make_user(company=company, email=f"admin@{slug}.test")
        keys[company.pk] = api_key_create(actor=admins[company.pk], company=company, name=f"{slug} key",
                                          scopes=ALL_SCOPES)
    company_set_assist(actor=admins[bolt.pk], company=bolt, on=False)
    bolt.refresh_from_db()
    return SimpleNamespace(platform=platform, north=north, acme=acme, bolt=bolt, kite_sub=kite_sub,
                           kite_bakery=kite_bakery, rivet=rivet, oak=oak, south=south, pine=pine,
                           companies=companies, admins=admins, keys=keys)
