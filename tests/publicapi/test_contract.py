"""Contract: replay the original API's documented requests (contract_examples.json, each with its
source) and check the answers carry the documented field names with the documented types."""

import json
from pathlib import Path

import pytest

from tests.usage.fleet import Machine

pytestmark = pytest.mark.django_db
EXAMPLES = json.loads((Path(__file__).parent / "contract_examples.json").read_text())
TYPES = {"string": str, "integer": int, "boolean": bool, "object": dict, "array": list, "null": type(None)}


def _is(value, expected: str) -> bool:
    for name in expected.split("|"):
        if name == "integer" and isinstance(value, bool):
            continue
        if isinstance(value, TYPES[name]):
            return True
    return False


def _fill(value, ids: dict):
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, str) and value in ids:
        return ids[value]
    return value


def _check_fields(obj: dict, fields: dict, where: str) -> None:
    for name, expected in fields.items():
        assert name in obj, f"{where}: missing {name}"
        assert _is(obj[name], expected), f"{where}: {name} is {obj[name]!r}, documented as {expected}"


@pytest.mark.parametrize("example", EXAMPLES["examples"], ids=[e["method"] for e in EXAMPLES["examples"]])
def test_contract_replays_documented_requests(rpc, tree, example):
    machine = Machine(tree.acme)
    ids = {"{acme}": str(tree.acme.pk), "{north}": str(tree.north.pk), "{endpoint}": str(machine.id)}
    request = _fill(example["request"], ids)
    response = rpc.raw(example["api"], request, key=tree.keys[tree.north.pk], version=example["version"])
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"id", "jsonrpc", "result"}, body
    assert body["id"] == request["id"] and body["jsonrpc"] == "2.0"
    result = body["result"]
    assert _is(result, example["result"]), (example["method"], result)
    _check_fields(result if isinstance(result, dict) else {}, example.get("fields", {}), example["method"])
    if "item_fields" in example:
        items = result if isinstance(result, list) else result.get("items", result.get("usages"))
        assert items, f"{example['method']}: the replay should return at least one item"
        for item in items:
            _check_fields(item, example["item_fields"], example["method"])


def test_contract_error_object_shape(rpc, tree):
    documented = EXAMPLES["errors"][0]
    for api, method, params in (("companies", "getCompanyDetails", {"companyId": "0"}),
                                ("companies", "createCompany", {"name": "x"}),
                                ("companies", "noSuchMethod", {})):
        status, body = rpc.call(api, method, params, key=tree.keys[tree.north.pk])
        assert set(body) == {"id", "jsonrpc", "error"}
        _check_fields(body["error"], documented["error_fields"], method)
        _check_fields(body["error"]["data"], documented["data_fields"], method)
