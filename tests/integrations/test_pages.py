"""The Integrations page and its per-company routes, including C6 isolation, and the Celery retry."""

import time

import pytest
from django.urls import reverse

from companies.models import Role
from integrations.models import PsaAddition, SyncAttempt
from tests.factories import PASSWORD, make_company, make_partner, make_user
from tests.integrations.conftest import AGREEMENT_TYPE, PRODUCT, set_active

COMPANY_ROUTES = ["integrations:mapping", "integrations:sync"]


def _signed_in(client, user):
    assert client.login(username=user.email, password=PASSWORD)
    return client


def _mapping_post(company, **values):
    data = {"psa_company": "AlphaDental", "agreement_type": AGREEMENT_TYPE, "product_identifier": PRODUCT, **values}
    return {f"m{company.pk}-{k}": v for k, v in data.items()}


@pytest.mark.django_db
def test_B1_B4_page_saves_maps_syncs_and_shows_the_log(billing, cw, client):
    _signed_in(client, billing.admin)
    page = client.get(reverse("integrations:index"))
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-testid="keys-saved"' in body
    assert cw.private_key not in body and cw.public_key not in body  # never shown again

    # keys left empty keep the stored ones
    response = client.post(reverse("integrations:connection"), {
        "site": cw.url, "psa_company_id": cw.company_id, "client_id": cw.client_id, "enabled": "on"})
    assert response.status_code == 302
    client.post(reverse("integrations:test"))
    assert "signed in, version v2025.1.12345" in client.get(reverse("integrations:index")).content.decode()

    client.post(reverse("integrations:mapping", args=[billing.alpha.pk]),
                _mapping_post(billing.alpha, agreement_type="managed security"))
    body = client.get(reverse("integrations:index")).content.decode()
    assert 'data-state="agreement_not_found"' in body
    assert "Names are case-sensitive: ConnectWise has &quot;Managed Security&quot;" in body

    client.post(reverse("integrations:mapping", args=[billing.alpha.pk]), _mapping_post(billing.alpha))
    set_active(billing.alpha, billing.month, 7)
    response = client.post(reverse("integrations:sync", args=[billing.alpha.pk]), follow=True)
    assert "7 endpoints sent" in response.content.decode()
    log = client.get(reverse("integrations:log")).content.decode()
    assert "Alpha Dental" in log and "created addition" in log and ">7<" in log
    assert [a["quantity"] for a in cw.additions[billing.alpha_agreement["id"]]] == [7]


@pytest.mark.django_db
def test_bad_connection_input_names_the_field(billing, client):
    _signed_in(client, billing.admin)
    response = client.post(reverse("integrations:connection"), {"site": "not a url", "psa_company_id": "x",
                                                                "client_id": "y", "public_key": "only"})
    assert response.status_code == 400
    body = response.content.decode()
    assert 'data-field="site"' in body and 'data-field="private_key"' in body


@pytest.mark.django_db
def test_X2_a_broken_site_address_answers_400_naming_the_field(billing, client):
    _signed_in(client, billing.admin)
    response = client.post(reverse("integrations:connection"), {"site": "https://[zz", "psa_company_id": "x",
                                                                "client_id": "y"})
    assert response.status_code == 400
    assert 'data-field="site"' in response.content.decode()


@pytest.fixture
def outsiders(billing, platform):
    sibling = make_partner(parent=platform, name="Upsilon Sibling")
    sibling_customer = make_company(parent=sibling, name="Phi SiblingCustomer")
    sub = make_partner(parent=billing.partner, name="Sub MSP")
    grandchild = make_company(parent=sub, name="Grandchild Co")
    return {"sibling": sibling, "sibling_customer": sibling_customer, "sub": sub, "grandchild": grandchild,
            "sibling_admin": make_user(company=sibling), "alpha_admin": make_user(company=billing.alpha),
            "reporter": make_user(company=billing.partner, role=Role.REPORTER)}


@pytest.mark.django_db
def test_C6_company_routes_answer_404_outside_what_the_partner_bills(billing, outsiders, client):
    _signed_in(client, billing.admin)
    for route in COMPANY_ROUTES:
        for company in ("sibling", "sibling_customer", "grandchild"):
            response = client.post(reverse(route, args=[outsiders[company].pk]))
            assert response.status_code == 404, (route, company)
            assert outsiders[company].name not in response.content.decode()
        assert client.post(reverse(route, args=[999999])).status_code == 404
    # the plan of a partner: only partners above it
    assert client.post(reverse("integrations:plan", args=[outsiders["sibling"].pk]), {"plan": "basic"}).status_code \
        == 404
    assert client.post(reverse("integrations:plan", args=[billing.alpha.pk]), {"plan": "basic"}).status_code == 404
    assert client.post(reverse("integrations:plan", args=[outsiders["sub"].pk]), {"plan": "basic"}).status_code \
        == 302
    outsiders["sub"].refresh_from_db()
    assert outsiders["sub"].plan == "basic"

    # a sibling partner's administrator cannot touch this partner's companies, nor set its own plan
    client.logout()
    _signed_in(client, outsiders["sibling_admin"])
    for route in COMPANY_ROUTES:
        assert client.post(reverse(route, args=[billing.alpha.pk])).status_code == 404
    assert client.post(reverse("integrations:plan", args=[outsiders["sibling"].pk]),
                       {"plan": "standard"}).status_code == 404
    assert "Alpha Dental" not in client.get(reverse("integrations:index")).content.decode()

    # a customer and a reporter do not get the page at all
    for user in ("alpha_admin", "reporter"):
        client.logout()
        _signed_in(client, outsiders[user])
        assert client.get(reverse("integrations:index")).status_code == 403
        assert client.post(reverse("integrations:mapping", args=[billing.alpha.pk])).status_code == 404


@pytest.mark.django_db
def test_B2_plan_is_edited_on_the_company_edit_page_by_its_parent(billing, platform, client):
    root_admin = make_user(company=platform)
    _signed_in(client, root_admin)
    edit = client.get(reverse("companies:edit", args=[billing.partner.pk])).content.decode()
    assert 'data-testid="partner-plan"' in edit
    client.post(reverse("integrations:plan", args=[billing.partner.pk]), {"plan": "basic"})
    client.logout()
    _signed_in(client, billing.admin)
    body = client.get(reverse("integrations:index")).content.decode()
    assert 'data-testid="basic-plan"' in body and 'data-testid="save-connection"' not in body


@pytest.mark.django_db(transaction=True)
def test_B4_failed_sync_is_retried_with_back_off_by_the_worker(billing, cw, celery_worker_process):
    from integrations.services import mapping_save
    from integrations.tasks import sync_company

    mapping_save(actor=billing.admin, company=billing.alpha, psa_company="AlphaDental",
                 agreement_type=AGREEMENT_TYPE, product_identifier=PRODUCT)
    set_active(billing.alpha, billing.month, 4)
    cw.fail("POST", "/finance/agreements", 500, times=2)
    started = time.monotonic()
    result = sync_company.delay(billing.alpha.pk, billing.month.isoformat())
    assert result.get(timeout=90) == "ok"
    assert time.monotonic() - started >= 3.0  # waited 1 s, then 2 s
    assert len(cw.calls("POST")) == 3
    assert [a["quantity"] for a in cw.additions[billing.alpha_agreement["id"]]] == [4]
    assert list(SyncAttempt.objects.order_by("id").values_list("outcome", "trigger", "http_status")) == [
        ("failed", "schedule", 500), ("failed", "retry", 500), ("ok", "retry", 201)]
    assert PsaAddition.objects.get(company=billing.alpha).quantity == 4
