"""The envelope, authentication (A4), scopes and the JSON-RPC error codes with their HTTP statuses."""

import base64

import pytest

from companies.models import ApiKey
from companies.services import api_key_revoke, company_set_status

pytestmark = pytest.mark.django_db


def test_A4_basic_auth_with_key_as_user_name_answers_the_envelope(rpc, tree):
    status, body = rpc.call("general", "getApiKeyDetails", {}, key=tree.keys[tree.north.pk], request_id="abc-1")
    assert status == 200
    assert body["id"] == "abc-1" and body["jsonrpc"] == "2.0"
    assert body["result"]["companyId"] == str(tree.north.pk)
    assert body["result"]["enabledApis"] == ["general", "companies", "network", "packages", "licensing", "reports"]


def test_A4_key_details_follow_the_scopes(rpc, tree):
    key = tree.scoped(tree.north, ["licensing"])
    result = rpc.result("general", "getApiKeyDetails", key=key)
    assert result["enabledApis"] == ["general", "licensing"]
    assert result["scopes"] == ["licensing"]
    assert result["prefix"] == key.split("_")[1]
    assert key not in str(result)  # never the secret


@pytest.mark.parametrize("key", ["", "gzk_nothing_here", "not-even-ours"])
def test_A4_invalid_key_is_401_server_error(rpc, tree, key):
    error = rpc.error("general", "getApiKeyDetails", key=key, status=401)
    assert error["code"] == -32000
    assert error["data"]["details"].startswith("Invalid API key")


def test_A4_missing_or_malformed_authorization_is_401(rpc, tree):
    body = {"id": "1", "jsonrpc": "2.0", "method": "getApiKeyDetails", "params": {}}
    response = rpc.raw("general", body, key=None)
    assert response.status_code == 401 and response.json()["error"]["code"] == -32000
    response = rpc.client.post("/api/v1.0/jsonrpc/general", data=body, content_type="application/json",
                               HTTP_AUTHORIZATION="Basic !!!not-base64")
    assert response.status_code == 401 and response.json()["error"]["code"] == -32000
    # the REST API's header is not this API's scheme
    response = rpc.client.post("/api/v1.0/jsonrpc/general", data=body, content_type="application/json",
                               HTTP_AUTHORIZATION=f"Api-Key {tree.keys[tree.north.pk]}")
    assert response.status_code == 401


def test_A4_revoked_key_and_suspended_company_are_refused(rpc, tree):
    key = tree.keys[tree.acme.pk]
    assert rpc.call("general", "getApiKeyDetails", key=key)[0] == 200
    company_set_status(actor=None, company=tree.acme, status="suspended")
    assert rpc.error("general", "getApiKeyDetails", key=key, status=401)["code"] == -32000
    north_key = tree.keys[tree.north.pk]
    api_key_revoke(actor=tree.admins[tree.north.pk], key=ApiKey.objects.get(company=tree.north))
    assert rpc.error("general", "getApiKeyDetails", key=north_key, status=401)["code"] == -32000


def test_A4_key_without_the_api_scope_is_403(rpc, tree):
    key = tree.scoped(tree.north, ["usage"])
    for api, method in (("companies", "getCompanyDetails"), ("network", "getCompaniesList"),
                        ("packages", "getInstallationLinks"), ("licensing", "getLicenseInfo")):
        error = rpc.error(api, method, {}, key=key, status=403)
        assert error["code"] == -32000 and "does not have access" in error["data"]["details"], api


def test_parse_error_is_32700(rpc, tree):
    response = rpc.raw("general", "{not json", key=tree.keys[tree.north.pk])
    assert response.status_code == 200
    body = response.json()
    assert body["error"]["code"] == -32700 and body["id"] is None


@pytest.mark.parametrize("body,needle", [
    ({"id": "1", "method": "getApiKeyDetails"}, "jsonrpc"),
    ({"id": "1", "jsonrpc": "1.0", "method": "getApiKeyDetails"}, "jsonrpc"),
    ({"id": "1", "jsonrpc": "2.0"}, "method"),
    ({"id": "1", "jsonrpc": "2.0", "method": 7}, "method"),
    ({"id": "1", "jsonrpc": "2.0", "method": "getApiKeyDetails", "params": [1, 2]}, "params"),
    ({"id": {"x": 1}, "jsonrpc": "2.0", "method": "getApiKeyDetails"}, "id"),
    ([{"id": "1", "jsonrpc": "2.0", "method": "getApiKeyDetails"}], "Batch"),
    ("42", "object"),
])
def test_invalid_request_is_32600(rpc, tree, body, needle):
    response = rpc.raw("general", body, key=tree.keys[tree.north.pk])
    assert response.status_code == 200
    error = response.json()["error"]
    assert error["code"] == -32600 and needle in error["data"]["details"]


def test_unknown_method_is_32601(rpc, tree):
    error = rpc.error("companies", "getCompanyDetailz", {}, key=tree.keys[tree.north.pk])
    assert error["code"] == -32601 and "getCompanyDetailz" in error["data"]["details"]
    # a method of another API is not found here either
    assert rpc.error("general", "getCompanyDetails", {}, key=tree.keys[tree.north.pk])["code"] == -32601
    # getEndpointsList lives in v1.1
    assert rpc.error("network", "getEndpointsList", {}, key=tree.keys[tree.north.pk])["code"] == -32601


def test_unknown_api_is_404_and_get_is_405(rpc, tree):
    key = tree.keys[tree.north.pk]
    response = rpc.raw("nothing", {"id": "1", "jsonrpc": "2.0", "method": "x"}, key=key)
    assert response.status_code == 404 and response.json()["error"]["code"] == -32601
    headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    response = rpc.client.get("/api/v1.0/jsonrpc/general", **headers)
    assert response.status_code == 405 and response["Allow"] == "POST"


def test_X2_unknown_parameter_is_32602_naming_it(rpc, tree):
    error = rpc.error("general", "getApiKeyDetails", {"verbose": True}, key=tree.keys[tree.north.pk])
    assert error["code"] == -32602 and "'verbose'" in error["data"]["details"]
