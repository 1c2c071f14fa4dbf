"""packages.getInstallationLinks: the company's install token (T1), only where the network is
visible (C1-C3, C6)."""

import pytest

from usage.agent import install_token_company
from usage.models import InstallToken

pytestmark = pytest.mark.django_db


def test_T1_installation_links_carry_the_company_install_token(rpc, tree):
    key = tree.keys[tree.north.pk]
    links = rpc.result("packages", "getInstallationLinks", {"companyId": str(tree.acme.pk)}, key=key)
    assert len(links) == 1
    link = links[0]
    assert link["companyId"] == str(tree.acme.pk) and link["packageName"] == "Acme Dental agent"
    assert install_token_company(install_token=link["installToken"]) == tree.acme
    assert link["registerUrl"].endswith("/api/agent/v1/register")
    # asking again gives the same token (no new token per call)
    again = rpc.result("packages", "getInstallationLinks", {"companyId": tree.acme.pk}, key=key)[0]
    assert again["installToken"] == link["installToken"]
    assert InstallToken.objects.filter(company=tree.acme).count() == 1
    assert rpc.result("packages", "getInstallationLinks", {"packageName": "Other"}, key=key) == []
    own = rpc.result("packages", "getInstallationLinks", {}, key=tree.keys[tree.acme.pk])[0]
    assert own["installToken"] == link["installToken"]


def test_C2_C3_C6_no_install_token_where_the_network_is_hidden(rpc, tree):
    north = tree.keys[tree.north.pk]
    missing = rpc.call("packages", "getInstallationLinks", {"companyId": 10**9}, key=north)
    assert missing[1]["error"] == {"code": -32000, "message": "Server error",
                                   "data": {"details": "Company not found."}}
    for hidden in (tree.bolt, tree.pine, tree.south):
        assert rpc.call("packages", "getInstallationLinks", {"companyId": hidden.pk}, key=north) == missing
    assert rpc.call("packages", "getInstallationLinks", {"companyId": tree.oak.pk},
                    key=tree.keys[tree.rivet.pk]) == missing
    assert not InstallToken.objects.filter(company__in=[tree.bolt, tree.pine, tree.oak]).exists()
    error = rpc.error("packages", "getInstallationLinks", {"companyId": 1.5}, key=north)
    assert error["code"] == -32602 and "'companyId'" in error["data"]["details"]


def test_A4_packages_need_the_companies_scope(rpc, tree):
    key = tree.scoped(tree.north, ["licensing", "usage", "reports"])
    assert rpc.error("packages", "getInstallationLinks", {"companyId": tree.acme.pk}, key=key,
                     status=403)["code"] == -32000
    assert not InstallToken.objects.filter(company=tree.acme).exists()
