"""Review findings on the company tree, accounts and API keys: each test names the rule the old code
broke (C2/C3/C5/C6 isolation, A4 keys, X1 audit, X2 input, H5 moves, H6 import)."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from companies.imports import import_job_create, import_validate
from companies.models import ApiKey, ImportJob, ImportStatus, Role
from companies.services import company_create, company_update
from tests.factories import make_company, make_partner, make_user

pytestmark = pytest.mark.django_db


# --- X2: no 500 for a key id that is not a number, nor for a NUL in a company's text -------------------

@pytest.mark.parametrize("key_id", ["abc", "", "1.5", "١", "9" * 40])
def test_X2_revoking_a_key_named_by_a_non_number_is_404_not_500(client, platform, key_id):
    admin = make_user(company=platform)
    client.force_login(admin)
    response = client.post(reverse("accounts:list"), {"action": "revoke-key", "key": key_id})
    assert response.status_code == 404


@pytest.mark.parametrize("address", ["a\x00b", "a\x0bb", "a\x1bb"])
def test_X2_control_characters_in_address_refused_naming_the_field(platform, address):
    with pytest.raises(ValidationError) as error:
        company_create(parent=platform, name="Nul Address", type="customer", address=address)
    assert set(error.value.message_dict) == {"address"}
    company = make_company(parent=platform, name="Fine Address", address="1 Main St\nBerlin")
    with pytest.raises(ValidationError) as error:
        company_update(actor=None, company=company, address=address)
    assert set(error.value.message_dict) == {"address"}
    assert ApiKey.objects.count() == 0  # nothing else was written either


@pytest.mark.parametrize("field,value", [("name", "a\x00b"), ("phone", "1\x002"), ("country", "D\x00"),
                                         ("field_of_activity", "it\x00")])
def test_X2_nul_in_any_company_text_field_refused_naming_it(platform, field, value):
    details = {"name": "Nul Co", field: value}
    with pytest.raises(ValidationError) as error:
        company_create(parent=platform, type="customer", **details)
    assert field in error.value.message_dict


# --- H6/X2: the import's check step runs the same company checks as creating the company --------------

@pytest.mark.parametrize("name", ["Bad\x0bName", "Tab\tName", "Bell\x07Name"])
def test_H6_X2_import_check_refuses_control_characters_with_line_and_field(platform, name):
    from django.core.files.uploadedfile import SimpleUploadedFile

    partner = make_partner(parent=platform, name="Import MSP")
    admin = make_user(company=partner, role=Role.COMPANY_ADMIN)
    text = f"company_name,company_type\nGood Co,customer\n\"{name}\",customer\n"
    job = import_job_create(actor=admin, upload=SimpleUploadedFile("rmm.csv", text.encode(), "text/csv"))
    job = import_validate(job=ImportJob.objects.select_related("company").get(pk=job.pk))
    assert job.status == ImportStatus.FAILED
    assert [(e["line"], e["field"]) for e in job.errors] == [(3, "company_name")]
    assert "control characters" in job.errors[0]["message"]


# --- A4: a companies-scoped key cannot create accounts or reset another's two-factor -------------------

def test_A4_api_key_cannot_invite_an_administrator_or_reset_two_factor(platform):
    import json

    from django.test import Client

    from companies.models import User
    from tests.trees import api_tree

    tree = api_tree(platform)
    _, secret = tree.keys[tree.north.pk]
    client = Client(headers={"Authorization": f"Api-Key {secret}"})
    victim = tree.admins[tree.acme.pk]
    User.objects.filter(pk=victim.pk).update(totp_secret="JBSWY3DPEHPK3PXP", totp_confirmed_at="2026-01-01T00:00Z")
    for role in ("company_admin", "reporter"):
        response = client.post(reverse("companies-api:account-list"), content_type="application/json",
                               data=json.dumps({"company": tree.north.pk, "email": f"{role}@evil.test",
                                                "full_name": "Mallory", "role": role}))
        assert response.status_code == 403, response.content
        assert "signed-in user" in response.json()["detail"]
    response = client.post(reverse("companies-api:account-reset-two-factor", args=[victim.pk]))
    assert response.status_code == 403
    assert not User.objects.filter(email__endswith="@evil.test").exists()
    assert User.objects.get(pk=victim.pk).totp_confirmed_at is not None
    # reading accounts stays open to the key
    assert client.get(reverse("companies-api:account-list")).status_code == 200


# --- C3/C5 across H5: a move never shows a partner what an assist-off company below it hides ----------

@pytest.fixture
def hidden(platform):
    """P ── S (partner, assist off) ── C (customer, assist on); T is a sibling of S under P."""
    from companies.services import company_set_assist

    p = make_partner(parent=platform, name="Pe MSP")
    s = make_partner(parent=p, name="Es Sub")
    t = make_partner(parent=p, name="Te Sub")
    c = make_company(parent=s, name="Ce Customer")
    admins = {x.name: make_user(company=x, role=Role.COMPANY_ADMIN) for x in (p, s, t, c)}
    company_set_assist(actor=admins["Es Sub"], company=s, on=False)
    for x in (p, s, t, c):
        x.refresh_from_db()
    return p, s, t, c, admins


def test_C3_C5_H5_move_out_from_under_an_assist_off_partner_is_refused(client, hidden):
    from companies.access import accounts_manageable, network_visible
    from companies.services import company_move

    p, s, t, c, admins = hidden
    actor = admins["Pe MSP"]
    assert not network_visible(p, c) and not accounts_manageable(actor, c)
    for target in (p, t):  # straight under the actor, or under a sibling of the hiding partner
        with pytest.raises(ValidationError) as error:
            company_move(actor=actor, company=c, new_parent=target)
        assert "assist" in error.value.message_dict["parent"][0]
    client.force_login(actor)
    response = client.post(reverse("companies-api:company-move", args=[c.pk]), content_type="application/json",
                           data={"parent": p.pk})
    assert response.status_code == 400 and "parent" in response.json()["errors"]
    c.refresh_from_db()
    assert c.parent_id == s.pk
    assert not network_visible(p, c) and not accounts_manageable(actor, c)


def test_C3_C4_H5_move_allowed_when_nothing_hidden_is_revealed(hidden):
    from companies.access import accounts_manageable, network_visible
    from companies.services import company_move, company_set_assist

    p, s, t, c, admins = hidden
    actor = admins["Pe MSP"]
    # the company itself hides its network first: the move reveals nothing, C4 lets C decide later
    company_set_assist(actor=actor, company=c, on=False)
    company_move(actor=actor, company=c, new_parent=p)
    assert not network_visible(p, c) and not accounts_manageable(actor, c)
    # and a move between open partners is as before
    other = make_company(parent=t, name="Open Customer")
    company_move(actor=actor, company=other, new_parent=p)
    company_move(actor=actor, company=other, new_parent=t)
    assert network_visible(p, other)


# --- H5: two opposite moves at once cannot make a cycle ---------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_H5_opposite_concurrent_moves_cannot_create_a_cycle(platform):
    """A under B in one transaction, B under A in another started before the first commits: the second
    waits for the first and then refuses (the cycle check sees the committed move)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections, transaction

    from companies.models import Company
    from companies.services import company_move

    a, b = make_partner(parent=platform, name="Ring A"), make_partner(parent=platform, name="Ring B")
    first_moved, release = threading.Event(), threading.Event()

    def first():
        try:
            with transaction.atomic():
                company_move(company=a, new_parent=b)
                first_moved.set()
                release.wait(20)
        finally:
            connections.close_all()

    def second():
        try:
            assert first_moved.wait(20)
            company_move(company=b, new_parent=a)
        except ValidationError as error:
            return error.message_dict["parent"][0]
        else:
            return "moved"
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=2) as pool:
        one, two = pool.submit(first), pool.submit(second)
        time.sleep(1.5)  # the second move is waiting for the first's lock (unlocked, it is done by now)
        release.set()
        one.result(timeout=30)
        outcome = two.result(timeout=30)
    a, b = Company.objects.get(pk=a.pk), Company.objects.get(pk=b.pk)
    assert (a.parent_id, b.parent_id) == (b.pk, platform.pk)
    assert a.lineage == f"{b.lineage}{a.pk}/"
    assert "cannot move under" in outcome


# --- C6: a company renaming itself, or inviting, learns nothing about companies it cannot see -----------

def test_C6_H2_renaming_own_company_does_not_name_a_sibling(client, platform):
    partner = make_partner(parent=platform, name="Parent MSP")
    mine = make_company(parent=partner, name="Mine Co")
    make_company(parent=partner, name="Secret Sibling")
    admin = make_user(company=mine, role=Role.COMPANY_ADMIN)
    client.force_login(admin)
    response = client.post(reverse("companies:my-company"), {"action": "details", "name": "Secret Sibling"})
    body = response.content.decode()
    assert response.status_code == 400
    assert "This name cannot be used" in body and "same partner" not in body
    # the partner above both still gets the precise answer
    with pytest.raises(ValidationError) as error:
        company_update(actor=make_user(company=partner), company=mine, name="Secret Sibling")
    assert "Secret Sibling" in error.value.message_dict["name"][0]


def test_C6_A1_inviting_an_email_used_elsewhere_names_no_company(platform):
    from companies.services import user_invite

    other = make_company(parent=platform, name="Far Away Co")
    make_user(company=other, email="taken@example.test")
    mine = make_company(parent=platform, name="Near Co")
    admin = make_user(company=mine)
    with pytest.raises(ValidationError) as error:
        user_invite(actor=admin, company=mine, email="taken@example.test", full_name="Someone")
    message = error.value.message_dict["email"][0]
    assert "Far Away" not in message and "exists" not in message


# --- X1/C6: after a move, each partner reads only the history of its own time --------------------------

def test_X1_C6_move_history_stays_with_the_partner_it_happened_under(client, platform):
    from companies.models import AuditEvent
    from companies.services import company_move

    g = make_partner(parent=platform, name="Gee Distribution")
    s, t = make_partner(parent=g, name="Es MSP"), make_partner(parent=g, name="Te MSP")
    c = make_company(parent=s, name="Ce Dental")
    s_admin = make_user(company=s, email="admin@es-msp.test")
    t_admin, g_admin = make_user(company=t), make_user(company=g, email="admin@gee.test")
    company_update(actor=s_admin, company=c, address="1 Es Street")
    company_move(actor=g_admin, company=c, new_parent=t)
    company_update(actor=t_admin, company=c, address="2 Te Street")

    def page(user, name, *args):
        client.force_login(user)
        response = client.get(reverse(name, args=args))
        assert response.status_code == 200
        return response.content.decode()

    t_view = page(t_admin, "companies:detail", c.pk)
    assert "2 Te Street" in t_view
    assert "admin@es-msp.test" not in t_view  # S's people, before T's time
    client.force_login(t_admin)
    events = client.get(reverse("companies:detail", args=[c.pk])).context["events"]
    assert [(e.action, e.actor_label) for e in events] == [("company.update", t_admin.email)]
    g_view = page(g_admin, "companies:detail", c.pk)
    assert "1 Es Street" in g_view and "2 Te Street" in g_view and "company.move" in g_view
    c_view = page(make_user(company=c), "companies:my-company")
    assert "1 Es Street" in c_view and "company.move" in c_view
    # the old partner is told the company left, the new one that it arrived; neither names the other
    s_view = page(s_admin, "companies:my-company")
    assert "company.move_out" in s_view and "Ce Dental" in s_view and "Te MSP" not in s_view
    t_own = page(t_admin, "companies:my-company")
    assert "company.move_in" in t_own and "Es MSP" not in t_own
    assert AuditEvent.objects.get(action="company.move_out").company_id == s.pk


def test_X1_C6_backfill_gives_old_events_the_lineage_of_their_time(platform):
    import importlib
    from types import SimpleNamespace

    from django.apps import apps
    from django.db import connection

    from companies.models import AuditEvent
    from companies.services import company_move

    g, h = make_partner(parent=platform, name="Gee"), make_partner(parent=platform, name="Aitch")
    s, t = make_partner(parent=g, name="Es"), make_partner(parent=g, name="Te")
    c = make_company(parent=s, name="Ce")
    company_update(actor=None, company=c, address="under S")
    company_move(actor=None, company=c, new_parent=t)
    company_update(actor=None, company=c, address="under T in G")
    company_move(actor=None, company=t, new_parent=h)
    company_update(actor=None, company=c, address="under T in H")
    recorded = dict(AuditEvent.objects.values_list("pk", "lineage"))
    AuditEvent.objects.update(lineage="")  # as the field arrives on existing rows

    migration = importlib.import_module("companies.migrations.0004_auditevent_lineage")
    migration.backfill(apps, SimpleNamespace(connection=connection))

    def lineage_of(address):
        return AuditEvent.objects.get(action="company.update", company=c, after__address=address).lineage

    p = platform.pk
    assert lineage_of("under S") == f"/{p}/{g.pk}/{s.pk}/{c.pk}/"
    assert lineage_of("under T in G") == f"/{p}/{g.pk}/{t.pk}/{c.pk}/"
    assert lineage_of("under T in H") == f"/{p}/{h.pk}/{t.pk}/{c.pk}/"
    # and what the backfill rebuilds is what recording now stores
    assert dict(AuditEvent.objects.values_list("pk", "lineage")) == recorded


def test_X1_C6_backfill_hides_history_from_before_a_move_whose_old_partner_was_deleted(platform):
    """The old partner was deleted after the move (allowed once it is empty): its place is unknown, so
    the events from before the move go where only the platform and the company itself read them,
    never under the new partner."""
    import importlib
    from types import SimpleNamespace

    from django.apps import apps
    from django.db import connection

    from companies.models import AuditEvent
    from companies.services import company_delete, company_move

    s, t = make_partner(parent=platform, name="Old S"), make_partner(parent=platform, name="New T")
    c = make_company(parent=s, name="Moving C")
    company_update(actor=None, company=c, address="under S")
    company_move(actor=None, company=c, new_parent=t)
    company_delete(actor=None, company=s)
    AuditEvent.objects.update(lineage="")
    importlib.import_module("companies.migrations.0004_auditevent_lineage").backfill(
        apps, SimpleNamespace(connection=connection))
    before = AuditEvent.objects.get(action="company.update", company=c, after__address="under S").lineage
    assert before == f"/{platform.pk}/0/{c.pk}/"
    assert f"/{t.pk}/" not in before


# --- X1: changes made with an API key name the key, over REST and JSON-RPC -----------------------------

def test_X1_api_key_changes_name_the_key_not_system(platform):
    import base64
    import json

    from django.test import Client

    from companies.models import AuditEvent
    from tests.trees import api_tree

    tree = api_tree(platform)
    key, secret = tree.keys[tree.north.pk]
    label = f"API key {key.prefix} ({key.name})"
    rest = Client(headers={"Authorization": f"Api-Key {secret}"})
    response = rest.post(reverse("companies-api:company-suspend", args=[tree.acme.pk]),
                         content_type="application/json", data=json.dumps({"reason": "unpaid"}))
    assert response.status_code == 200, response.content
    assert AuditEvent.objects.get(action="company.suspend", company=tree.acme).actor_label == label
    basic = "Basic " + base64.b64encode(f"{secret}:".encode()).decode()
    response = Client().post("/api/v1.0/jsonrpc/companies", content_type="application/json",
                             HTTP_AUTHORIZATION=basic,
                             data=json.dumps({"id": 1, "jsonrpc": "2.0", "method": "updateCompanyDetails",
                                              "params": {"companyId": tree.kite_bakery.pk, "address": "9 Rpc Road"}}))
    assert "error" not in response.json(), response.json()
    assert AuditEvent.objects.get(action="company.update", company=tree.kite_bakery).actor_label == label
    # the label does not outlive the request: a later change without a person is "system" again
    company_update(actor=None, company=tree.pine, address="after")
    assert AuditEvent.objects.get(action="company.update", company=tree.pine).actor_label == "system"
