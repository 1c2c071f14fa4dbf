"""network.*: company lists, endpoint lists and details under C1-C3 and C6; flat query counts."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.usage.fleet import Machine

pytestmark = pytest.mark.django_db
DAY = dt.datetime(2026, 11, 10, tzinfo=dt.UTC)


@pytest.fixture
def fleet(tree):
    machines = {
        "acme": [Machine(tree.acme), Machine(tree.acme, machine_type="virtual", os_type="server")],
        "bolt": [Machine(tree.bolt)],
        "kite": [Machine(tree.kite_bakery)],
        "oak": [Machine(tree.oak)],
        "pine": [Machine(tree.pine)],
    }
    machines["acme"][0].beat(DAY, modules=["antimalware", "edr", "patch_management"])
    return machines


def test_get_companies_list_is_one_level(rpc, tree):
    key = tree.keys[tree.north.pk]
    listed = rpc.result("network", "getCompaniesList", {}, key=key)
    assert listed == [{"id": str(c.pk), "name": c.name} for c in (tree.acme, tree.bolt, tree.kite_sub)]
    assert rpc.result("network", "getCompaniesList", {"parentId": str(tree.kite_sub.pk)}, key=key) == [
        {"id": str(tree.kite_bakery.pk), "name": "Kite Bakery"}]
    # C2: a reseller-only partner still lists its companies (they are not network data)
    assert [c["name"] for c in rpc.result("network", "getCompaniesList", {}, key=tree.keys[tree.rivet.pk])] == [
        "Oak Clinic"]


def test_C6_companies_list_of_a_foreign_parent_is_not_found(rpc, tree):
    key = tree.keys[tree.north.pk]
    missing = rpc.call("network", "getCompaniesList", {"parentId": "999999999"}, key=key)
    assert missing[1]["error"]["code"] == -32000
    for foreign in (tree.south, tree.platform):
        assert rpc.call("network", "getCompaniesList", {"parentId": foreign.pk}, key=key) == missing
    error = rpc.error("network", "getCompaniesList", {"parentId": True}, key=key)
    assert error["code"] == -32602 and "'parentId'" in error["data"]["details"]


def test_endpoints_list_of_a_company(rpc, tree, fleet):
    result = rpc.result("network", "getEndpointsList", {"parentId": str(tree.acme.pk)},
                        key=tree.keys[tree.north.pk], version="v1.1")
    assert result["total"] == 2 and result["pagesCount"] == 1 and result["page"] == 1 and result["perPage"] == 30
    ids = {item["id"] for item in result["items"]}
    assert ids == {str(m.id) for m in fleet["acme"]}
    virtual = next(i for i in result["items"] if i["id"] == str(fleet["acme"][1].id))
    assert virtual["machineType"] == 2 and virtual["isManaged"] is True and virtual["groupId"] == str(tree.acme.pk)


def test_endpoints_list_filters_and_paging(rpc, tree, fleet):
    key = tree.keys[tree.north.pk]
    computers = rpc.result("network", "getEndpointsList", {
        "parentId": tree.acme.pk, "filters": {"type": {"computers": True}}}, key=key, version="v1.1")
    assert [i["id"] for i in computers["items"]] == [str(fleet["acme"][0].id)]
    everything = rpc.result("network", "getEndpointsList", {
        "filters": {"depth": {"allItemsRecursively": True}}, "perPage": 1, "page": 2}, key=key, version="v1.1")
    # C3: Bolt Legal (assist off) is left out of the partner's recursive list
    assert everything["total"] == 3 and everything["pagesCount"] == 3 and len(everything["items"]) == 1
    all_ids = set()
    for page in (1, 2, 3):
        all_ids |= {i["id"] for i in rpc.result("network", "getEndpointsList", {
            "filters": {"depth": {"allItemsRecursively": True}}, "perPage": 1, "page": page},
            key=key, version="v1.1")["items"]}
    assert all_ids == {str(m.id) for m in fleet["acme"] + fleet["kite"]}
    assert rpc.result("network", "getEndpointsList", {"isManaged": False}, key=key, version="v1.1")["total"] == 0


@pytest.mark.parametrize("params,named", [
    ({"perPage": 0}, "perPage"), ({"perPage": 1001}, "perPage"), ({"page": 0}, "page"),
    ({"page": "2"}, "page"), ({"filters": {"colour": {}}}, "filters.colour"),
    ({"filters": {"type": {"phones": True}}}, "filters.type"), ({"parentId": [1]}, "parentId"),
])
def test_X2_endpoints_list_bad_params_are_32602(rpc, tree, params, named):
    error = rpc.error("network", "getEndpointsList", params, key=tree.keys[tree.north.pk], version="v1.1")
    assert error["code"] == -32602 and f"'{named}'" in error["data"]["details"]


def test_C2_C3_C6_endpoints_list_hidden_like_missing(rpc, tree, fleet):
    north = tree.keys[tree.north.pk]
    missing = rpc.call("network", "getEndpointsList", {"parentId": 10**9}, key=north, version="v1.1")
    assert missing[1]["error"]["data"]["details"] == "Company not found."
    # C3: assist off; C6: another partner's customer, a sibling partner, the platform
    for hidden in (tree.bolt, tree.pine, tree.south, tree.platform):
        assert rpc.call("network", "getEndpointsList", {"parentId": hidden.pk}, key=north,
                        version="v1.1") == missing, hidden.name
    # C2: a reseller-only partner sees no network, not even its own customer's
    rivet = tree.keys[tree.rivet.pk]
    assert rpc.call("network", "getEndpointsList", {"parentId": tree.oak.pk}, key=rivet, version="v1.1")[1][
        "error"] == missing[1]["error"]
    # the company itself sees its own network (C1)
    assert rpc.result("network", "getEndpointsList", {}, key=tree.keys[tree.bolt.pk], version="v1.1")["total"] == 1


def test_endpoints_list_query_count_is_flat(rpc, tree):
    key = tree.keys[tree.north.pk]
    params = {"filters": {"depth": {"allItemsRecursively": True}}, "perPage": 1000}

    def count():
        with CaptureQueriesContext(connection) as queries:
            result = rpc.result("network", "getEndpointsList", params, key=key, version="v1.1")
        return len(queries), result["total"]

    Machine(tree.acme)
    small = count()
    for company in (tree.acme, tree.kite_bakery, tree.kite_sub):
        for _ in range(4):
            Machine(company)
    from tests.factories import make_company
    extra = make_company(parent=tree.north, name="Extra Co")
    Machine(extra)
    large = count()
    assert large[1] == small[1] + 13
    assert large[0] == small[0]


def test_managed_endpoint_details(rpc, tree, fleet):
    machine = fleet["acme"][0]
    details = rpc.result("network", "getManagedEndpointDetails", {"endpointId": str(machine.id)},
                         key=tree.keys[tree.north.pk], version="v1.1")
    assert details["id"] == str(machine.id) and details["companyId"] == str(tree.acme.pk)
    assert details["modules"]["antimalware"] is True and details["modules"]["edrSensor"] is True
    assert details["modules"]["patchManagement"] is True and details["modules"]["encryption"] is False
    assert details["agent"]["licensed"] == 1 and details["seat"]["state"] == "licensed"
    assert details["machineType"] == 1
    # the customer's own key sees it too, and v1.0 answers the same
    assert rpc.result("network", "getManagedEndpointDetails", {"endpointId": str(machine.id)},
                      key=tree.keys[tree.acme.pk])["id"] == str(machine.id)


def test_C2_C3_C6_foreign_endpoint_details_answer_like_missing(rpc, tree, fleet):
    north = tree.keys[tree.north.pk]
    missing = rpc.call("network", "getManagedEndpointDetails", {"endpointId": "00000000-0000-4000-8000-000000000000"},
                       key=north)
    assert missing[1]["error"] == {"code": -32000, "message": "Server error",
                                   "data": {"details": "Endpoint not found."}}
    for hidden in fleet["bolt"] + fleet["pine"] + fleet["oak"]:
        assert rpc.call("network", "getManagedEndpointDetails", {"endpointId": str(hidden.id)}, key=north) == missing
    # C2: the reseller-only partner cannot open its own customer's endpoint
    assert rpc.call("network", "getManagedEndpointDetails", {"endpointId": str(fleet["oak"][0].id)},
                    key=tree.keys[tree.rivet.pk])[1]["error"] == missing[1]["error"]
    # a sibling customer cannot either
    assert rpc.call("network", "getManagedEndpointDetails", {"endpointId": str(fleet["acme"][0].id)},
                    key=tree.keys[tree.bolt.pk])[1]["error"] == missing[1]["error"]
    error = rpc.error("network", "getManagedEndpointDetails", {"endpointId": "nope"}, key=north)
    assert error["code"] == -32602 and "'endpointId'" in error["data"]["details"]


def test_A4_network_needs_the_companies_scope(rpc, tree, fleet):
    key = tree.scoped(tree.north, ["licensing", "usage", "reports"])
    assert rpc.error("network", "getCompaniesList", {}, key=key, status=403)["code"] == -32000
    assert rpc.error("network", "getEndpointsList", {}, key=key, version="v1.1", status=403)["code"] == -32000
    assert rpc.error("network", "getManagedEndpointDetails", {"endpointId": str(fleet["acme"][0].id)}, key=key,
                     status=403)["code"] == -32000
