import base64
from types import SimpleNamespace

import pytest
from django.test import Client

from companies.services import api_key_create, company_set_assist
from tests.factories import make_company, make_partner, make_user

ALL_SCOPES = ["companies", "licensing", "usage", "reports"]


class Rpc:
    """Calls the JSON-RPC API as a partner script would: POST, HTTP Basic with the key as the user
    name and an empty password."""

    def __init__(self, client: Client):
        self.client = client

    def raw(self, api: str, body, *, key: str | None, version: str = "v1.0", method: str = "post"):
        headers = {}
        if key is not None:
            headers["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        data = body if isinstance(body, str | bytes) else __import__("json").dumps(body)
        return getattr(self.client, method)(f"/api/{version}/jsonrpc/{api}", data=data,
                                            content_type="application/json", **headers)

    def call(self, api: str, method: str, params=None, *, key: str, version: str = "v1.0", request_id="1"):
        body = {"id": request_id, "jsonrpc": "2.0", "method": method}
        if params is not None:
            body["params"] = params
        response = self.raw(api, body, key=key, version=version)
        return response.status_code, response.json()

    def result(self, api: str, method: str, params=None, *, key: str, version: str = "v1.0"):
        status, body = self.call(api, method, params, key=key, version=version)
        assert status == 200 and "error" not in body, body
        return body["result"]

    def error(self, api: str, method: str, params=None, *, key: str, version: str = "v1.0", status: int = 200):
        got_status, body = self.call(api, method, params, key=key, version=version)
        assert got_status == status and "error" in body, (got_status, body)
        assert body["jsonrpc"] == "2.0"
        return body["error"]


@pytest.fixture
def rpc(client):
    return Rpc(client)


@pytest.fixture
def tree(platform):
    """platform
       ├─ Northwind MSP ─┬─ Acme Dental (customer)
       │                 ├─ Bolt Legal (customer, assist off)
       │                 └─ Kite Sub (partner) ── Kite Bakery (customer)
       ├─ Rivet Resellers (reseller-only partner) ── Oak Clinic (customer)
       └─ Southgate MSP ── Pine Dairy (customer)
    Every company has an administrator and a key with every scope; `scoped` makes others."""
    north = make_partner(parent=platform, name="Northwind MSP")
    acme = make_company(parent=north, name="Acme Dental")
    bolt = make_company(parent=north, name="Bolt Legal")
    kite_sub = make_partner(parent=north, name="Kite Sub")
    kite_bakery = make_company(parent=kite_sub, name="Kite Bakery")
    rivet = make_partner(parent=platform, name="Rivet Resellers", manages_security=False)
    oak = make_company(parent=rivet, name="Oak Clinic")
    south = make_partner(parent=platform, name="Southgate MSP")
    pine = make_company(parent=south, name="Pine Dairy")
    companies = [platform, north, acme, bolt, kite_sub, kite_bakery, rivet, oak, south, pine]
    admins, keys = {}, {}
    for company in companies:
        slug = company.name.lower().replace(" ", "-")
        admins[company.pk] = make_user(company=company, email=f"admin@{slug}.test")
        keys[company.pk] = api_key_create(actor=admins[company.pk], company=company, name=f"{slug} key",
                                          scopes=ALL_SCOPES)[1]
    company_set_assist(actor=admins[bolt.pk], company=bolt, on=False)
    bolt.refresh_from_db()

    def scoped(company, scopes):
        return api_key_create(actor=admins[company.pk], company=company, name=f"scoped {scopes}",
                              scopes=scopes)[1]

    return SimpleNamespace(platform=platform, north=north, acme=acme, bolt=bolt, kite_sub=kite_sub,
                           kite_bakery=kite_bakery, rivet=rivet, oak=oak, south=south, pine=pine,
                           companies=companies, admins=admins, keys=keys, scoped=scoped)
