"""The company tree as tenants: schemas, the template, the request's tenant, isolation (C6)."""

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse
from django_tenants.utils import schema_exists, tenant_context

from companies.models import Company, CompanyType, Role
from companies.selectors import company_path, company_subtree
from companies.services import company_move
from tests.factories import PASSWORD, make_company, make_partner, make_user
from usage.telemetry.models import Endpoint

pytestmark = pytest.mark.django_db


def _tables(schema: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema])
        return {row[0] for row in cursor.fetchall()}


def test_platform_exists_after_migrate():
    # the test database was built by our `migrate`; the root company is there with its schema
    root = Company.objects.get(parent__isnull=True)
    assert root.type == CompanyType.PARTNER
    assert root.lineage == f"/{root.pk}/"
    assert schema_exists(root.schema_name)


def test_new_company_schema_is_cloned_from_template(platform):
    template = settings.TENANT_BASE_SCHEMA
    assert "telemetry_endpoint" in _tables(template)
    # a sentinel table only the template has: it can reach the new schema only by cloning
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE TABLE "{template}".clone_sentinel (id int)')
    company = make_company(parent=platform)
    tables = _tables(company.schema_name)
    assert "clone_sentinel" in tables
    assert "telemetry_endpoint" in tables
    # shared tables stay in public only
    assert "companies_company" not in tables
    assert "companies_user" not in tables


def test_company_network_data_stays_in_its_schema(platform):
    first, second = make_company(parent=platform), make_company(parent=platform)
    with tenant_context(first):
        Endpoint.objects.create(hardware_id="hw-1", hostname="pc-1", os_family="windows",
                                os_type="workstation", machine_type="physical")
    with tenant_context(second):
        assert Endpoint.objects.count() == 0
    with tenant_context(first):
        assert Endpoint.objects.count() == 1


def test_H3_path_and_subtree(platform):
    distributor = make_partner(parent=platform, name="Dist")
    msp = make_partner(parent=distributor, name="MSP")
    customer = make_company(parent=msp, name="Cust")
    assert [c.name for c in company_path(company=customer)] == [platform.name, "Dist", "MSP", "Cust"]
    assert set(company_subtree(company=distributor)) == {distributor, msp, customer}


def test_H1_move_refuses_cycle_and_rewrites_subtree(platform):
    a = make_partner(parent=platform, name="A")
    b = make_partner(parent=a, name="B")
    c = make_company(parent=b, name="C")
    with pytest.raises(ValidationError, match="itself or below it"):
        company_move(company=a, new_parent=b)
    other = make_partner(parent=platform, name="Other")
    company_move(company=b, new_parent=other)
    c.refresh_from_db()
    assert c.lineage == f"{other.lineage}{b.pk}/{c.pk}/"
    assert c.depth == 3


def test_request_tenant_is_signed_in_users_company(client, platform):
    company = make_company(parent=platform)
    user = make_user(company=company)
    client.force_login(user)
    response = client.get(reverse("dashboard"))
    assert response.status_code == 200
    assert response.wsgi_request.tenant == company
    # the connection is returned to public after the request
    assert connection.schema_name == "public"


def test_C6_other_companys_pages_answer_404(client, platform):
    partner = make_partner(parent=platform, name="Partner One")
    own_customer = make_company(parent=partner, name="Own customer")
    sibling = make_partner(parent=platform, name="Partner Two")
    sibling_customer = make_company(parent=sibling, name="Sibling customer")
    client.force_login(make_user(company=partner))

    assert client.get(reverse("companies:detail", args=[own_customer.pk])).status_code == 200
    for foreign in (sibling, sibling_customer, platform):
        response = client.get(reverse("companies:detail", args=[foreign.pk]))
        assert response.status_code == 404
        assert foreign.name.encode() not in response.content
    missing = client.get(reverse("companies:detail", args=[999_999]))
    assert missing.status_code == 404
    listing = client.get(reverse("companies:list")).content.decode()
    assert "Own customer" in listing
    assert "Sibling customer" not in listing
    assert "Partner Two" not in listing


def test_C6_customer_cannot_see_its_partner(client, platform):
    partner = make_partner(parent=platform)
    customer = make_company(parent=partner)
    client.force_login(make_user(company=customer))
    assert client.get(reverse("companies:detail", args=[partner.pk])).status_code in (403, 404)
    assert client.get(reverse("companies:list")).status_code == 403


def test_A2_navigation_shows_only_what_the_role_may_open(client, platform):
    partner = make_partner(parent=platform)
    client.force_login(make_user(company=partner, role=Role.REPORTER))
    page = client.get(reverse("dashboard")).content.decode()
    assert 'data-nav="reports"' in page and 'data-nav="companies"' in page
    assert 'data-nav="accounts"' not in page and 'data-nav="licensing"' not in page
    assert client.get(reverse("accounts:list")).status_code == 403
    assert client.get(reverse("licensing:overview")).status_code == 403

    client.force_login(make_user(company=partner, role=Role.COMPANY_ADMIN))
    page = client.get(reverse("dashboard")).content.decode()
    for key in ("dashboard", "companies", "licensing", "reports", "my_company", "accounts"):
        assert f'data-nav="{key}"' in page


def test_sign_in_and_sign_out(client, platform):
    user = make_user(company=make_company(parent=platform), email="someone@example.test")
    response = client.post(reverse("accounts:sign-in"), {"username": "someone@example.test",
                                                         "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("dashboard")).status_code == 200
    client.post(reverse("accounts:sign-out"))
    assert client.get(reverse("dashboard")).status_code == 302
    bad = client.post(reverse("accounts:sign-in"), {"username": user.email, "password": "wrong-password"})
    assert bad.status_code == 200
    assert b"Please enter a correct email and password" in bad.content


def test_H4_suspended_company_users_cannot_sign_in(client, platform):
    company = make_company(parent=platform)
    user = make_user(company=company, email="suspended@example.test")
    client.force_login(user)
    Company.objects.filter(pk=company.pk).update(status="suspended")
    # an open session ends at the next request
    assert client.get(reverse("dashboard")).status_code == 302
    response = client.post(reverse("accounts:sign-in"), {"username": user.email, "password": PASSWORD})
    assert response.status_code == 200  # the form again, not a redirect into the console
