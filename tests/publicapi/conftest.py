import base64

import pytest
from django.test import Client

from companies.services import api_key_create
from tests.trees import api_tree


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
    """The API tree of tests/trees.py; `keys` are the secrets, `scoped` makes keys with other scopes."""
    tree = api_tree(platform)
    tree.keys = {pk: secret for pk, (_, secret) in tree.keys.items()}

    def scoped(company, scopes):
        return api_key_create(actor=tree.admins[company.pk], company=company, name=f"scoped {scopes}",
                              scopes=scopes)[1]

    tree.scoped = scoped
    return tree
