"""X2: a string parameter holding NUL (which PostgreSQL text cannot store) answers -32602 naming the
parameter, never an HTML 500."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("method,params,name", [
    ("findCompaniesByName", {"nameFilter": "abc\u0000"}, "nameFilter"),
    ("findCompaniesByName", {"nameFilter": "abc\ud800"}, "nameFilter"),  # a lone surrogate: not text
    ("createCompany", {"type": 1, "name": "Nul Address", "address": "a\u0000b"}, "address"),
    ("createCompany", {"type": 1, "name": "Nul\u0000Name"}, "name"),
    ("createCompany", {"type": 1, "name": "Nul Account", "accountEmail": "nul@example.test",
                       "accountFullName": "N\u0000"}, "accountFullName"),
])
def test_X2_nul_in_a_string_param_is_32602_naming_it(rpc, tree, method, params, name):
    error = rpc.error("companies", method, params, key=tree.keys[tree.north.pk])
    assert error["code"] == -32602, error
    assert error["data"]["details"].startswith(f"Invalid parameter '{name}': "), error
    assert not tree.north.children.filter(name__startswith="Nul").exists()
