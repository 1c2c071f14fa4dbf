"""The Companies, company detail, My Company and Accounts pages (SPEC H1-H5, C1-C5, A1-A2, X1)."""

import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django_tenants.utils import tenant_context
from PIL import Image

from companies.models import AuditEvent, Company, CompanyStatus, CompanyType, Role, User
from companies.services import company_set_assist
from tests.factories import PASSWORD, make_company, make_partner, make_user
from usage.telemetry.models import Endpoint

pytestmark = pytest.mark.django_db


def png_bytes(size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, "PNG")
    return buffer.getvalue()


def wizard_post(client, **overrides):
    data = {"name": "Acme Dental", "type": "customer", "country": "DE", "field_of_activity": "healthcare",
            "manages_security": "on", "partner_can_assist": "on", "address": "1 Main St",
            "phone": "+49 30 1234567", "primary_timezone": "UTC", "primary_language": "en"}
    data.update(overrides)
    return client.post(reverse("companies:add"), {k: v for k, v in data.items() if v is not None})


@pytest.fixture
def msp(platform):
    return make_partner(parent=platform, name="MSP One")


@pytest.fixture
def msp_admin(client, msp):
    user = make_user(company=msp, role=Role.COMPANY_ADMIN)
    client.force_login(user)
    return user


def test_H2_wizard_creates_company_with_details_and_logo(client, msp, msp_admin):
    logo = SimpleUploadedFile("logo.png", png_bytes(), content_type="image/png")
    response = wizard_post(client, logo=logo)
    assert response.status_code == 302
    company = Company.objects.get(name="Acme Dental")
    assert response["Location"] == reverse("companies:detail", args=[company.pk])
    assert (company.parent, company.type, company.country) == (msp, CompanyType.CUSTOMER, "DE")
    assert (company.field_of_activity, company.address, company.phone) == ("healthcare", "1 Main St",
                                                                          "+49 30 1234567")
    assert company.logo.name.startswith("logos/") and company.logo.name.endswith(".png")
    assert re.fullmatch(r"[A-Z2-9]{5}(-[A-Z2-9]{5}){3}", company.license_key)
    page = client.get(reverse("companies:detail", args=[company.pk])).content.decode()
    assert company.logo.url in page and company.license_key in page


def test_E4_wizard_ignores_reselling_boxes_left_ticked_for_a_customer(client, msp, msp_admin):
    """The boxes hide when the type is customer but are still posted if ticked before the change."""
    from licensing.entitlements import entitlements_set
    from licensing.models import Entitlement

    entitlements_set(actor=None, company=msp, purpose="resell", keys={"endpoint_security"})
    response = wizard_post(client, resell="endpoint_security")
    assert response.status_code == 302, response.content.decode()[:2000]
    company = Company.objects.get(name="Acme Dental")
    assert company.type == CompanyType.CUSTOMER
    assert not Entitlement.objects.filter(company=company, purpose="resell").exists()


def test_H2_logo_must_be_an_image_of_bounded_size(client, msp, msp_admin, settings):
    response = wizard_post(client, logo=SimpleUploadedFile("logo.png", b"not an image", "image/png"))
    assert response.status_code == 400
    assert "The logo must be a PNG, JPEG, GIF or WebP image." in response.content.decode()
    settings.LOGO_MAX_BYTES = 10
    response = wizard_post(client, logo=SimpleUploadedFile("logo.png", png_bytes(), "image/png"))
    assert response.status_code == 400
    assert "The logo can be at most" in response.content.decode()
    assert not Company.objects.filter(name="Acme Dental").exists()


def test_H2_default_logo_when_none(client, msp, msp_admin):
    page = client.get(reverse("companies:my-company")).content.decode()
    assert "img/default-logo.svg" in page


def test_H2_name_unique_among_siblings_only(client, platform, msp, msp_admin):
    make_company(parent=msp, name="Acme Dental")
    response = wizard_post(client)
    assert response.status_code == 400
    assert "MSP One already has a company named Acme Dental." in response.content.decode()
    other = make_partner(parent=platform, name="MSP Two")
    make_company(parent=other, name="Acme Dental")  # same name under another partner is fine


def test_X2_wizard_errors_name_the_field(client, msp, msp_admin):
    response = wizard_post(client, name="", country="XX", phone="call me")
    assert response.status_code == 400
    body = response.content.decode()
    assert 'data-field="name"' in body
    assert 'data-field="country"' in body
    assert 'data-field="phone"' in body
    assert Company.objects.filter(parent=msp).count() == 0


def test_C1_customer_always_manages_security(client, msp, msp_admin):
    wizard_post(client, manages_security=None)
    assert Company.objects.get(name="Acme Dental").manages_security is True


def test_C1_C2_reseller_only_partner_sees_no_network(client, msp, msp_admin):
    wizard_post(client, name="Resell Co", type="partner", manages_security=None)
    reseller = Company.objects.get(name="Resell Co")
    assert reseller.manages_security is False
    customer = make_company(parent=reseller, name="Resold customer")
    client.force_login(make_user(company=reseller))
    # C2: it still creates companies and sees them, but no network anywhere
    assert client.get(reverse("companies:detail", args=[customer.pk])).status_code == 200
    assert client.get(reverse("companies:network", args=[customer.pk])).status_code == 404
    assert client.get(reverse("companies:network", args=[reseller.pk])).status_code == 404
    detail = client.get(reverse("companies:detail", args=[customer.pk])).content.decode()
    assert 'data-testid="network-hidden"' in detail and 'data-testid="network-link"' not in detail
    assert wizard_post(client, name="Another customer").status_code == 302


def test_C1_C2_only_the_partner_above_changes_whether_a_company_manages_security(msp):
    from django.core.exceptions import ValidationError

    from companies.services import company_update

    reseller = make_partner(parent=msp, name="Resell Co", manages_security=False)
    own_admin = make_user(company=reseller)
    with pytest.raises(ValidationError) as refused:
        company_update(actor=own_admin, company=reseller, manages_security=True)
    assert "partner above" in refused.value.message_dict["manages_security"][0]
    reseller.refresh_from_db()
    assert reseller.manages_security is False
    # the partner above may turn it on
    company_update(actor=make_user(company=msp), company=reseller, manages_security=True)
    reseller.refresh_from_db()
    assert reseller.manages_security is True


def test_A1_primary_account_gets_invitation_and_sets_password(client, msp, msp_admin, mailoutbox,
                                                             django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = wizard_post(client, add_primary_account="on", primary_full_name="Dana Dentist",
                               primary_email="Dana@Acme.example", primary_timezone="Europe/Berlin",
                               primary_language="de")
    assert response.status_code == 302
    user = User.objects.get(email="dana@acme.example")
    assert (user.company.name, user.role, user.timezone, user.language) == (
        "Acme Dental", Role.COMPANY_ADMIN, "Europe/Berlin", "de")
    assert not user.has_usable_password()
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["dana@acme.example"]
    link = re.search(r"https?://\S+/accounts/set-password/\S+/", mailoutbox[0].body).group(0)
    path = link.split("://", 1)[1].split("/", 1)[1]
    client.logout()
    form_page = client.get("/" + path, follow=True)
    new_password = "correct horse battery staple 7"
    client.post(form_page.redirect_chain[-1][0] if form_page.redirect_chain else "/" + path,
                {"new_password1": new_password, "new_password2": new_password})
    assert client.login(username="dana@acme.example", password=new_password)


def test_A1_primary_account_required_without_assist(client, msp, msp_admin):
    response = wizard_post(client, partner_can_assist=None)
    assert response.status_code == 400
    assert "Add a primary account" in response.content.decode()
    assert wizard_post(client, partner_can_assist=None, add_primary_account="on",
                       primary_full_name="Pat", primary_email="pat@acme.example").status_code == 302


def test_C3_without_assist_partner_keeps_subscription_but_loses_network_and_accounts(client, msp, msp_admin):
    customer = make_company(parent=msp, name="Private Co")
    customer_user = make_user(company=customer)
    with tenant_context(customer):
        Endpoint.objects.create(hardware_id="hw-secret", hostname="secret-host", os_family="windows",
                                os_type="workstation", machine_type="physical")
    assert "secret-host" in client.get(reverse("companies:network", args=[customer.pk])).content.decode()
    response = client.post(reverse("companies:action", args=[customer.pk, "assist-off"]))
    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.partner_can_assist is False
    # still listed, network gone
    assert "Private Co" in client.get(reverse("companies:list")).content.decode()
    assert client.get(reverse("companies:network", args=[customer.pk])).status_code == 404
    # accounts gone
    accounts = client.get(reverse("accounts:list")).content.decode()
    assert customer_user.email not in accounts
    assert client.post(reverse("accounts:action", args=[customer_user.pk, "deactivate"])).status_code == 404
    # subscription-level management and two-factor enforcement stay
    client.post(reverse("companies:action", args=[customer.pk, "two-factor-on"]))
    client.post(reverse("companies:action", args=[customer.pk, "suspend"]))
    customer.refresh_from_db()
    assert customer.enforce_two_factor is True and customer.status == CompanyStatus.SUSPENDED


def test_C4_only_the_companys_own_users_turn_assist_back_on(client, msp, msp_admin):
    customer = make_company(parent=msp, name="Private Co")
    company_set_assist(actor=msp_admin, company=customer, on=False)
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="Only the company's own users"):
        company_set_assist(actor=msp_admin, company=customer, on=True)
    detail = client.get(reverse("companies:detail", args=[customer.pk])).content.decode()
    assert 'data-testid="assist-off"' not in detail  # no button to turn it on either
    own_admin = make_user(company=customer)
    client.force_login(own_admin)
    client.post(reverse("companies:my-company"), {"action": "assist-on"})
    customer.refresh_from_db()
    assert customer.partner_can_assist is True


def test_C5_accounts_page_lists_own_and_assisted_companies_users(client, msp, msp_admin):
    assisted = make_company(parent=msp, name="Assisted")
    private = make_company(parent=msp, name="Private")
    company_set_assist(actor=msp_admin, company=private, on=False)
    assisted_user = make_user(company=assisted, email="a@assisted.example")
    private_user = make_user(company=private, email="p@private.example")
    page = client.get(reverse("accounts:list")).content.decode()
    assert msp_admin.email in page and assisted_user.email in page
    assert private_user.email not in page
    client.post(reverse("accounts:action", args=[assisted_user.pk, "deactivate"]))
    assisted_user.refresh_from_db()
    assert assisted_user.is_active is False
    assert client.post(reverse("accounts:action", args=[private_user.pk, "deactivate"])).status_code == 404


def test_A2_roles_change_and_non_admins_cannot_manage(client, msp, msp_admin):
    reporter = make_user(company=msp, role=Role.REPORTER)
    client.post(reverse("accounts:action", args=[reporter.pk, "role"]), {"role": Role.NETWORK_ADMIN})
    reporter.refresh_from_db()
    assert reporter.role == Role.NETWORK_ADMIN
    # X2: a role that does not exist is refused with the field's message, nothing changes
    response = client.post(reverse("accounts:action", args=[reporter.pk, "role"]), {"role": "overlord"},
                           follow=True)
    assert "Choose a role from the list." in response.content.decode()
    reporter.refresh_from_db()
    assert reporter.role == Role.NETWORK_ADMIN
    client.force_login(reporter)
    customer = make_company(parent=msp)
    assert client.get(reverse("companies:add")).status_code == 403
    assert client.post(reverse("companies:action", args=[customer.pk, "suspend"])).status_code == 404
    assert client.get(reverse("companies:edit", args=[customer.pk])).status_code == 404


def test_A4_api_key_shown_once_and_revocable_on_accounts_page(client, msp, msp_admin):
    response = client.post(reverse("accounts:list"), {"action": "create-key", "name": "PSA sync",
                                                     "scopes": ["usage", "reports"]})
    body = response.content.decode()
    secret = re.search(r"gzk_[0-9a-f]{8}_[\w-]+", body).group(0)
    key = msp.api_keys.get()
    assert key.scopes == ["reports", "usage"] and secret not in key.key_hash
    assert secret not in client.get(reverse("accounts:list")).content.decode()
    client.post(reverse("accounts:list"), {"action": "revoke-key", "key": key.pk})
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_H4_suspend_and_reactivate_from_the_page(client, msp, msp_admin):
    customer = make_company(parent=msp, name="Late Payer")
    user = make_user(company=customer, email="late@payer.example")
    client.post(reverse("companies:action", args=[customer.pk, "suspend"]))
    customer.refresh_from_db()
    assert customer.status == CompanyStatus.SUSPENDED and customer.suspended_at is not None
    other = client.__class__()
    assert not other.login(username=user.email, password=PASSWORD)
    client.post(reverse("companies:action", args=[customer.pk, "reactivate"]))
    customer.refresh_from_db()
    assert customer.status == CompanyStatus.ACTIVE
    assert other.login(username=user.email, password=PASSWORD)
    actions = list(AuditEvent.objects.filter(company=customer).values_list("action", flat=True))
    assert "company.suspend" in actions and "company.reactivate" in actions


def test_H5_move_from_the_page_with_clear_refusal(client, platform, msp, msp_admin):
    sub = make_partner(parent=msp, name="Sub partner")
    customer = make_company(parent=msp, name="Mover")
    response = client.post(reverse("companies:action", args=[customer.pk, "move"]), {"new_parent": sub.pk},
                           follow=True)
    customer.refresh_from_db()
    assert customer.parent == sub
    assert "Mover now belongs to Sub partner." in response.content.decode()
    # a cycle is refused with a message, not a crash
    response = client.post(reverse("companies:action", args=[sub.pk, "move"]), {"new_parent": sub.pk},
                           follow=True)
    assert "cannot move under Sub partner" in response.content.decode()
    # a partner outside the actor's view is "not in the list", without its name
    foreign = make_partner(parent=platform, name="Foreign partner")
    response = client.post(reverse("companies:action", args=[customer.pk, "move"]),
                           {"new_parent": foreign.pk}, follow=True)
    assert "Choose the new partner from the list." in response.content.decode()
    assert "Foreign partner" not in response.content.decode()


def test_X1_audit_log_visible_to_company_and_partner_chain_only(client, platform, msp, msp_admin):
    customer = make_company(parent=msp, name="Audited", actor=msp_admin)
    client.post(reverse("companies:edit", args=[customer.pk]), {"name": "Audited Ltd", "country": "FR"})
    event = AuditEvent.objects.filter(company=customer, action="company.update").get()
    assert event.actor == msp_admin
    assert event.before == {"country": "", "name": "Audited"}
    assert event.after == {"country": "FR", "name": "Audited Ltd"}
    assert "company.update" in client.get(reverse("companies:detail", args=[customer.pk])).content.decode()
    client.force_login(make_user(company=customer))
    assert "company.update" in client.get(reverse("companies:my-company")).content.decode()
    sibling = make_partner(parent=platform, name="Sibling")
    client.force_login(make_user(company=sibling))
    assert client.get(reverse("companies:detail", args=[customer.pk])).status_code == 404


def test_companies_page_search_and_filters(client, msp, msp_admin):
    make_company(parent=msp, name="Alpha Clinic")
    beta = make_company(parent=msp, name="Beta Bakery")
    make_partner(parent=msp, name="Gamma Partner")
    company_set_assist(actor=msp_admin, company=beta, on=False)

    def names(**params):
        page = client.get(reverse("companies:list"), params).content.decode()
        return set(re.findall(r'<td><a href="/companies/\d+/">([^<]+)</a></td>', page))

    assert names() == {"Alpha Clinic", "Beta Bakery", "Gamma Partner"}
    assert names(search="clin") == {"Alpha Clinic"}
    assert names(type="partner") == {"Gamma Partner"}
    assert names(assist="off") == {"Beta Bakery"}
    assert names(status="suspended") == set()


def test_H3_companies_page_shows_paths_from_the_viewers_company(client, platform, msp, msp_admin):
    sub = make_partner(parent=msp, name="Sub")
    make_company(parent=sub, name="Leaf")
    page = client.get(reverse("companies:list")).content.decode()
    assert "MSP One / Sub / Leaf" in page
    assert platform.name not in page.split('data-testid="company-table"')[1]


def test_companies_page_query_count_does_not_grow(client, msp, msp_admin, django_assert_max_num_queries):
    """5,000 companies (rows only: the page never opens their schemas) cost the same queries as 50."""

    from django.db.models import CharField, Value
    from django.db.models.functions import Cast, Concat

    def add_rows(start, end):
        Company.objects.bulk_create([Company(name=f"Bulk {i}", type=CompanyType.CUSTOMER, parent=msp,
                                             schema_name=f"bulk_{i}", depth=2) for i in range(start, end)])
        Company.objects.filter(lineage="").update(
            lineage=Concat(Value(msp.lineage), Cast("id", CharField()), Value("/")))

    def queries_for_page():
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("companies:list"), {"page": 2}).status_code == 200
        return len(ctx.captured_queries)

    add_rows(0, 60)
    small = queries_for_page()
    add_rows(60, 5000)
    assert Company.objects.filter(parent=msp).count() == 5000
    with django_assert_max_num_queries(small):
        assert client.get(reverse("companies:list"), {"page": 2}).status_code == 200
    assert queries_for_page() == small


def test_A2_reporter_sees_no_network_even_of_its_own_company(client, msp):
    reporter = make_user(company=msp, role=Role.REPORTER)
    analyst = make_user(company=msp, role=Role.SECURITY_ANALYST)
    customer = make_company(parent=msp)
    client.force_login(reporter)
    assert client.get(reverse("companies:network", args=[customer.pk])).status_code == 404
    assert 'data-testid="network-link"' not in client.get(
        reverse("companies:detail", args=[customer.pk])).content.decode()
    client.force_login(analyst)
    assert client.get(reverse("companies:network", args=[customer.pk])).status_code == 200
