"""Products, protection models, add-ons and services (SPEC E1-E7) and H5's product check."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError

from companies.services import company_move, company_set_assist
from licensing.catalogue import catalogue_load
from licensing.entitlements import effective_own_use, entitlements_set, mdr_contact_set, selection_of
from licensing.models import CatalogItem, License, ModelRule
from tests.factories import make_company, make_partner

pytestmark = pytest.mark.django_db

FULL_MDR = {"primary_name": "Ops", "primary_email": "ops@msp.example", "primary_phone": "+1 555 0100",
            "escalation_name": "Lead", "escalation_email": "lead@msp.example", "escalation_phone": "+1 555 0101"}
ALL_MSP = {"endpoint_security", "edr_standalone", "a_la_carte", "secure", "secure_plus", "secure_extra",
           "patch_management", "full_disk_encryption", "advanced_threat_security", "edr", "xdr", "xdr_network",
           "xdr_cloud", "data_retention", "retention_90d", "retention_1y", "mdr_foundations", "sve",
           "container_protection", "security_for_exchange", "email_security", "integrity_monitoring"}


@pytest.fixture
def msp(platform):
    partner = make_partner(parent=platform, name="MSP")
    mdr_contact_set(actor=None, company=partner, **FULL_MDR)
    entitlements_set(actor=None, company=partner, purpose="resell", keys=ALL_MSP)
    return partner


def own(company, *keys):
    return entitlements_set(actor=None, company=company, purpose="own", keys=set(keys))


def test_E2_catalogue_is_data_loaded_by_migrate(platform):
    assert CatalogItem.objects.filter(kind="protection_model").count() == 4
    assert set(CatalogItem.objects.filter(kind="xdr_sensor").values_list("name", flat=True)) == {
        "Identity Providers", "Productivity", "Network", "Cloud Workloads"}
    includes = set(ModelRule.objects.filter(protection_model__key="secure_extra", relation="includes")
                   .values_list("item__key", flat=True))
    assert includes == {"advanced_threat_security", "edr", "mdr_foundations", "xdr"}
    assert catalogue_load() == {"items": CatalogItem.objects.count(), "rules": ModelRule.objects.count()}


def test_E1_edr_standalone_takes_no_model_or_addons(msp):
    customer = make_company(parent=msp)
    assert own(customer, "edr_standalone").keys == {"edr_standalone"}
    with pytest.raises(ValidationError, match="takes no protection model"):
        own(customer, "edr_standalone", "secure")
    with pytest.raises(ValidationError, match="Choose one product type"):
        own(customer, "secure", "patch_management")
    with pytest.raises(ValidationError, match="Choose one protection model"):
        own(customer, "endpoint_security", "patch_management")


def test_E2_model_includes_and_excludes(msp):
    customer = make_company(parent=msp)
    selection = own(customer, "endpoint_security", "secure", "patch_management", "edr")
    assert selection.keys == {"endpoint_security", "secure", "patch_management"}  # edr comes with Secure
    assert {"edr", "advanced_threat_security"} <= selection.included
    assert {"edr", "advanced_threat_security", "patch_management"} <= effective_own_use(customer)
    with pytest.raises(ValidationError, match="A la carte does not allow MDR Foundations"):
        own(customer, "endpoint_security", "a_la_carte", "mdr_foundations")


def test_E3_child_selection_is_subset_of_parents_reselling(platform, msp):
    narrow = make_partner(parent=msp, name="Narrow")
    mdr_contact_set(actor=None, company=narrow, **FULL_MDR)
    entitlements_set(actor=None, company=narrow, purpose="resell", keys={"endpoint_security", "a_la_carte",
                                                                         "patch_management"})
    customer = make_company(parent=narrow, name="Cust")
    own(customer, "endpoint_security", "a_la_carte", "patch_management")
    with pytest.raises(ValidationError, match="Narrow does not resell Full Disk Encryption"):
        own(customer, "endpoint_security", "a_la_carte", "full_disk_encryption")
    with pytest.raises(ValidationError, match="MSP does not resell Email Security|does not resell"):
        entitlements_set(actor=None, company=narrow, purpose="resell",
                         keys={"endpoint_security", "a_la_carte", "patch_management", "retention_180d"})


def test_E3_narrowing_refused_while_a_child_uses_the_item(msp):
    customer = make_company(parent=msp, name="Patchy")
    own(customer, "endpoint_security", "a_la_carte", "patch_management")
    with pytest.raises(ValidationError) as refused:
        entitlements_set(actor=None, company=msp, purpose="resell", keys=ALL_MSP - {"patch_management"})
    assert "Cannot stop reselling while Patchy uses Patch Management." in refused.value.messages
    assert "patch_management" in selection_of(company=msp, purpose="resell").keys


def test_E4_reselling_only_for_partners(msp):
    customer = make_company(parent=msp)
    with pytest.raises(ValidationError, match="Only partners resell"):
        entitlements_set(actor=None, company=customer, purpose="resell", keys={"endpoint_security"})


def test_E5_secure_plus_resold_only_with_complete_mdr_contact(platform, msp):
    sub = make_partner(parent=msp, name="Sub")
    with pytest.raises(ValidationError, match="fill in Sub's MDR contact details first"):
        entitlements_set(actor=None, company=sub, purpose="resell", keys={"endpoint_security", "secure_plus"})
    mdr_contact_set(actor=None, company=sub, **{**FULL_MDR, "escalation_phone": ""})
    with pytest.raises(ValidationError, match="E5"):
        entitlements_set(actor=None, company=sub, purpose="resell", keys={"endpoint_security", "secure_extra"})
    mdr_contact_set(actor=None, company=sub, **FULL_MDR)
    entitlements_set(actor=None, company=sub, purpose="resell", keys={"endpoint_security", "secure_plus",
                                                                      "mdr_foundations"})
    # own use of Secure Plus by a customer: its partner resells it, so the partner's contact counts
    incomplete = make_partner(parent=msp, name="Incomplete")
    mdr_contact_set(actor=None, company=incomplete, **FULL_MDR)
    entitlements_set(actor=None, company=incomplete, purpose="resell",
                     keys={"endpoint_security", "secure_plus", "mdr_foundations"})
    mdr_contact_set(actor=None, company=incomplete, primary_phone="")
    with pytest.raises(ValidationError, match="Incomplete has to fill them in"):
        own(make_company(parent=incomplete), "endpoint_security", "secure_plus")


def test_E6_mdr_for_own_use_requires_every_condition(platform, msp):
    customer = make_company(parent=msp, name="Clinic")
    own(customer, "endpoint_security", "secure", "mdr_foundations")  # all conditions met
    # not a customer
    sub = make_partner(parent=msp, name="SubPartner")
    with pytest.raises(ValidationError, match="for customer companies"):
        own(sub, "endpoint_security", "secure", "mdr_foundations")
    # target without assist (turned off once MDR is no longer used: see test_C3_E6_...)
    own(customer, "endpoint_security", "secure")
    company_set_assist(actor=None, company=customer, on=False)
    with pytest.raises(ValidationError, match="Clinic must let its partner assist"):
        own(customer, "endpoint_security", "secure", "mdr_foundations")
    # direct partner does not resell MDR
    plain = make_partner(parent=msp, name="Plain")
    entitlements_set(actor=None, company=plain, purpose="resell", keys={"endpoint_security", "secure"})
    with pytest.raises(ValidationError, match="Plain does not resell MDR Foundations"):
        own(make_company(parent=plain), "endpoint_security", "secure")  # fine without MDR
        own(make_company(parent=plain), "endpoint_security", "secure", "mdr_foundations")


def test_E6_legacy_onboarding_replaces_contact_details(platform, msp):
    legacy = make_partner(parent=msp, name="Legacy")
    mdr_contact_set(actor=None, company=legacy, **FULL_MDR)
    entitlements_set(actor=None, company=legacy, purpose="resell", keys={"endpoint_security", "secure",
                                                                         "mdr_foundations"})
    mdr_contact_set(actor=None, company=legacy, primary_name="")
    customer = make_company(parent=legacy)
    with pytest.raises(ValidationError, match="complete its MDR contact details"):
        own(customer, "endpoint_security", "secure", "mdr_foundations")
    License.objects.update_or_create(company=legacy, defaults={"mdr_onboarding_started_on": dt.date(2024, 3, 31)})
    own(customer, "endpoint_security", "secure", "mdr_foundations")
    License.objects.filter(company=legacy).update(mdr_onboarding_started_on=dt.date(2024, 4, 1))
    with pytest.raises(ValidationError, match="complete its MDR contact details"):
        own(customer, "endpoint_security", "secure", "mdr_foundations")


def test_E7_addons_sensor_categories_and_retention_tiers(msp):
    customer = make_company(parent=msp)
    with pytest.raises(ValidationError, match="need the XDR add-on"):
        own(customer, "endpoint_security", "a_la_carte", "xdr_network")
    own(customer, "endpoint_security", "a_la_carte", "xdr", "xdr_network", "xdr_cloud")
    with pytest.raises(ValidationError, match="Choose one Data Retention tier"):
        own(customer, "endpoint_security", "a_la_carte", "data_retention")
    with pytest.raises(ValidationError, match="Choose one Data Retention tier"):
        own(customer, "endpoint_security", "a_la_carte", "data_retention", "retention_90d", "retention_1y")
    own(customer, "endpoint_security", "a_la_carte", "data_retention", "retention_1y")


def test_H5_move_refused_when_new_partner_lacks_a_product(platform, msp):
    customer = make_company(parent=msp, name="Mover")
    own(customer, "endpoint_security", "a_la_carte", "full_disk_encryption")
    poor = make_partner(parent=platform, name="Poor")
    entitlements_set(actor=None, company=poor, purpose="resell", keys={"endpoint_security", "a_la_carte"})
    with pytest.raises(ValidationError, match="Poor does not resell Full Disk Encryption, which Mover uses"):
        company_move(company=customer, new_parent=poor)
    entitlements_set(actor=None, company=poor, purpose="resell",
                     keys={"endpoint_security", "a_la_carte", "full_disk_encryption"})
    company_move(company=customer, new_parent=poor)


def test_H5_E6_U10_move_refused_when_mdr_foundations_would_lose_a_requirement(platform, msp):
    """H5/E6: a customer using MDR Foundations (here through Secure Plus) moves only under a partner
    with which E6 holds; reselling the items (E3) is not enough (before: moved, and billed MDR under
    a partner without MDR contact details, U10)."""
    customer = make_company(parent=msp, name="Clinic")
    own(customer, "endpoint_security", "secure_plus")
    target = make_partner(parent=platform, name="Target")
    mdr_contact_set(actor=None, company=target, **FULL_MDR)
    entitlements_set(actor=None, company=target, purpose="resell",
                     keys={"endpoint_security", "secure_plus", "mdr_foundations"})
    mdr_contact_set(actor=None, company=target, primary_email="")
    with pytest.raises(ValidationError, match="Clinic uses MDR Foundations, which it cannot keep under Target "
                                              r"\(E6\): Target has to complete its MDR contact details"):
        company_move(company=customer, new_parent=target)
    mdr_contact_set(actor=None, company=target, **FULL_MDR)
    company_move(company=customer, new_parent=target)
    customer.refresh_from_db()
    assert customer.parent_id == target.pk


def test_C3_E6_assist_stays_on_while_mdr_foundations_needs_it(platform, msp):
    """C3/E6: neither a customer using MDR Foundations nor its direct partner can turn assist off;
    once MDR Foundations is removed they can."""
    sub = make_partner(parent=msp, name="Sub")
    mdr_contact_set(actor=None, company=sub, **FULL_MDR)
    entitlements_set(actor=None, company=sub, purpose="resell", keys={"endpoint_security", "secure",
                                                                      "mdr_foundations"})
    customer = make_company(parent=sub, name="Clinic")
    own(customer, "endpoint_security", "secure", "mdr_foundations")
    for company in (customer, sub):
        with pytest.raises(ValidationError, match="Assist cannot be turned off for .* while Clinic uses MDR "
                                                  "Foundations"):
            company_set_assist(actor=None, company=company, on=False)
    own(customer, "endpoint_security", "secure")
    company_set_assist(actor=None, company=sub, on=False)
    company_set_assist(actor=None, company=customer, on=False)
