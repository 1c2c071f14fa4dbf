"""X2 for seat numbers over JSON-RPC: a number beyond what a seat column holds is an invalid parameter
naming the field, not an internal error (L1, L6)."""

import pytest

from companies.models import Company
from licensing.models import License

pytestmark = pytest.mark.django_db
TOO_MANY = 3_000_000_000  # > 2**31 - 1


@pytest.mark.parametrize("params,named", [
    ({"reservedSlots": TOO_MANY}, "reservedSlots"),
    ({"reservedSlots": 10, "minimumUsage": TOO_MANY}, "minimumUsage"),
])
def test_X2_L1_L6_set_monthly_subscription_refuses_a_seat_number_too_large(rpc, tree, params, named):
    before = list(License.objects.filter(company=tree.acme).values())
    error = rpc.error("licensing", "setMonthlySubscription", {"companyId": tree.acme.pk, **params},
                      key=tree.keys[tree.north.pk])
    assert error["code"] == -32602, error
    assert f"'{named}'" in error["data"]["details"] and "2147483647" in error["data"]["details"], error
    assert list(License.objects.filter(company=tree.acme).values()) == before


def test_X2_L1_create_company_refuses_a_seat_number_too_large(rpc, tree):
    before = Company.objects.count()
    error = rpc.error("companies", "createCompany", {
        "type": 1, "name": "Huge Corp", "licenseSubscription": {"type": 3, "reservedSlots": TOO_MANY}},
        key=tree.keys[tree.north.pk])
    assert error["code"] == -32602 and "'licenseSubscription.reservedSlots'" in error["data"]["details"], error
    assert Company.objects.count() == before
