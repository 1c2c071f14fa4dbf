"""C6 on the licensing pages: a pool or an end date owned by a company outside the viewer's
subtree (its partner, the platform) is not named on the Licensing pages, nor are that pool's
figures, which count other companies' endpoints."""

import datetime as dt
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from licensing.seats import reservation_set, seat_assign
from licensing.subscriptions import subscription_set
from tests.factories import make_company, make_partner, make_user

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def tree(platform):
    north = make_partner(parent=platform, name="Northwind MSP")
    kite_sub = make_partner(parent=north, name="Kite Sub")
    make_company(parent=kite_sub, name="Kite Bakery")
    rival = make_company(parent=platform, name="Rival Shop")  # a stranger on the platform's pool
    for _ in range(7):
        seat_assign(company=rival, endpoint_id=uuid.uuid4())
    return platform, north, kite_sub


def test_C6_overview_and_company_page_do_not_name_an_outside_pool_owner(tree):
    platform, north, kite_sub = tree
    reservation_set(actor=None, company=north, seats=40)
    subscription_set(actor=None, company=north, end_date=dt.date(2027, 6, 30), auto_renew=True)
    kite = signed_in(make_user(company=kite_sub))
    for path in (reverse("licensing:overview"), reverse("licensing:company", args=[kite_sub.pk])):
        response = kite.get(path)
        assert response.status_code == 200, path
        text = response.content.decode()
        assert "Northwind" not in text, path
        assert "of 40" not in text and "reserved below" not in text, path  # the partner's pool figures
    # the partner sees its own pool and what draws from it
    overview = signed_in(make_user(company=north)).get(reverse("licensing:overview")).content.decode()
    assert "free of 40" in overview


def test_C6_a_top_level_partner_does_not_see_the_platforms_pool(tree):
    platform, north, _ = tree
    text = signed_in(make_user(company=north)).get(reverse("licensing:overview")).content.decode()
    assert platform.name not in text
    assert "7 used" not in text  # the stranger's endpoints, counted in the platform's pool


def test_C2_C3_trial_endpoints_on_the_licensing_page_only_where_the_network_is_visible(tree):
    """C3: with the customer's assist off, its partner's Licensing page shows the trial count but not
    the trial endpoints' ids (REST /trials/ answers 404 alike)."""
    from companies.services import company_set_assist

    _platform, north, kite_sub = tree
    customer = make_company(parent=north, name="Quiet Clinic")
    reservation_set(actor=None, company=customer, seats=0)
    endpoint = uuid.uuid4()
    seat_assign(company=customer, endpoint_id=endpoint)
    partner = signed_in(make_user(company=north))
    path = reverse("licensing:company", args=[customer.pk])
    assert str(endpoint) in partner.get(path).content.decode()
    company_set_assist(actor=None, company=customer, on=False)
    text = partner.get(path).content.decode()
    assert str(endpoint) not in text and 'data-testid="trial-table"' not in text
    assert "1 in trial" in text
