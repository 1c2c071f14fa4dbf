"""SPEC C6: every companies and accounts page, tried with ids from outside the viewer's view.

Viewers: a customer, a partner whose customer has assist off, a reseller-only partner, and a user
of a sibling partner. Each must get 404 for ids it may not see, and no response may carry the name
of a company outside its view.
"""

import pytest
from django.urls import reverse

from companies.models import Role
from companies.services import company_set_assist
from tests.factories import make_company, make_partner, make_user

pytestmark = pytest.mark.django_db

COMPANY_GET_ROUTES = ["companies:detail", "companies:edit", "companies:network"]
COMPANY_POST_ACTIONS = ["suspend", "reactivate", "assist-off", "two-factor-on", "two-factor-off", "move"]
ACCOUNT_POST_ACTIONS = ["deactivate", "activate", "reset-two-factor", "role"]


@pytest.fixture
def world(platform):
    """Two partner trees side by side under a distributor."""
    dist = make_partner(parent=platform, name="Zeta Distribution")
    msp = make_partner(parent=dist, name="Kappa MSP")
    assisted = make_company(parent=msp, name="Omicron Assisted")
    private = make_company(parent=msp, name="Sigma Private")
    reseller = make_partner(parent=dist, name="Lambda Reseller", manages_security=False)
    resold = make_company(parent=reseller, name="Tau Resold")
    sibling = make_partner(parent=dist, name="Upsilon Sibling")
    sibling_customer = make_company(parent=sibling, name="Phi SiblingCustomer")
    admin = make_user(company=msp, role=Role.COMPANY_ADMIN)
    company_set_assist(actor=admin, company=private, on=False)
    users = {c.name: make_user(company=c, role=Role.COMPANY_ADMIN)
             for c in (platform, dist, msp, assisted, private, reseller, resold, sibling, sibling_customer)}
    users["Kappa MSP"] = admin
    companies = {c.name: c for c in (platform, dist, msp, assisted, private, reseller, resold, sibling,
                                     sibling_customer)}
    return companies, users


# viewer -> companies it must not see at all (C6); names must never appear
INVISIBLE = {
    "Omicron Assisted": ["GZ Platform", "Zeta Distribution", "Kappa MSP", "Sigma Private", "Lambda Reseller",
                         "Tau Resold", "Upsilon Sibling", "Phi SiblingCustomer"],
    "Kappa MSP": ["GZ Platform", "Zeta Distribution", "Lambda Reseller", "Tau Resold", "Upsilon Sibling",
                  "Phi SiblingCustomer"],
    "Lambda Reseller": ["GZ Platform", "Zeta Distribution", "Kappa MSP", "Omicron Assisted", "Sigma Private",
                        "Upsilon Sibling", "Phi SiblingCustomer"],
    "Upsilon Sibling": ["GZ Platform", "Zeta Distribution", "Kappa MSP", "Omicron Assisted", "Sigma Private",
                        "Lambda Reseller", "Tau Resold"],
}


def _assert_hidden(response, names):
    assert response.status_code == 404, response.status_code
    body = response.content.decode()
    for name in names:
        assert name not in body


@pytest.mark.parametrize("viewer", sorted(INVISIBLE))
def test_C6_foreign_company_ids_answer_404_everywhere(client, world, viewer):
    companies, users = world
    client.force_login(users[viewer])
    names = INVISIBLE[viewer]
    for foreign_name in names:
        foreign = companies[foreign_name]
        for route in COMPANY_GET_ROUTES:
            _assert_hidden(client.get(reverse(route, args=[foreign.pk])), names)
        for action in COMPANY_POST_ACTIONS:
            _assert_hidden(client.post(reverse("companies:action", args=[foreign.pk, action]),
                                       {"new_parent": foreign.pk}), names)
        for user in foreign.users.all():
            for action in ACCOUNT_POST_ACTIONS:
                _assert_hidden(client.post(reverse("accounts:action", args=[user.pk, action]),
                                           {"role": "reporter"}), names)


@pytest.mark.parametrize("viewer", sorted(INVISIBLE))
def test_C6_lists_and_own_pages_carry_no_foreign_names(client, world, viewer):
    _companies, users = world
    client.force_login(users[viewer])
    for url in (reverse("dashboard"), reverse("companies:list"), reverse("companies:my-company"),
                reverse("accounts:list"), reverse("companies:list") + "?search=a"):
        response = client.get(url)
        if response.status_code == 403:
            continue
        body = response.content.decode()
        for name in INVISIBLE[viewer]:
            # the viewer's own partner is the one ancestor My Company names (its partner)
            if url == reverse("companies:my-company") and users[viewer].company.parent.name == name:
                continue
            assert name not in body, (url, name)


def test_C3_partner_without_assist_sees_no_network_or_accounts(client, world):
    companies, users = world
    client.force_login(users["Kappa MSP"])
    private = companies["Sigma Private"]
    assert client.get(reverse("companies:detail", args=[private.pk])).status_code == 200
    assert client.get(reverse("companies:network", args=[private.pk])).status_code == 404
    private_user = users["Sigma Private"]
    assert private_user.email not in client.get(reverse("accounts:list")).content.decode()
    assert client.post(reverse("accounts:action", args=[private_user.pk, "deactivate"])).status_code == 404
    # the distributor above does not see it either: assist is off below it on the way down
    client.force_login(users["Zeta Distribution"])
    assert client.get(reverse("companies:network", args=[private.pk])).status_code == 404


def test_C2_reseller_only_partner_sees_no_network_anywhere(client, world):
    companies, users = world
    client.force_login(users["Lambda Reseller"])
    for name in ("Lambda Reseller", "Tau Resold"):
        assert client.get(reverse("companies:network", args=[companies[name].pk])).status_code == 404
    assert client.get(reverse("companies:detail", args=[companies["Tau Resold"].pk])).status_code == 200
