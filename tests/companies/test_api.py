"""REST API (/api/v1/) for companies, accounts and API keys: the services' rules over HTTP, and the
isolation of every route (C6)."""

import hashlib
import json

import pytest
from django.test import Client
from django.urls import reverse

from companies import api_urls
from companies.models import ApiKey, AuditEvent, Company, CompanyStatus, CompanyType, Role, User
from companies.services import api_key_create, api_key_revoke
from gz_console.api import CompanyScopedAPIView
from tests.factories import make_user
from tests.trees import api_tree

pytestmark = pytest.mark.django_db

NOT_FOUND = {"detail": "Not found."}


def url(name: str, *args) -> str:
    return reverse(f"companies-api:{name}", args=args)


def call(client: Client, method: str, path: str, body: dict | None = None, **headers):
    if method == "get":
        return client.get(path, headers=headers)
    return getattr(client, method)(path, data=json.dumps(body or {}), content_type="application/json",
                                   headers=headers)


def key_client(secret: str) -> Client:
    return Client(headers={"Authorization": f"Api-Key {secret}"})


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def tree(platform):
    """The API tree of tests/trees.py; `keys` are (ApiKey, secret) pairs."""
    return api_tree(platform)


# --- C6: every route, with ids from outside the caller's view -----------------------------------------

def _probe_calls(*, caller: Company, foreign_companies, foreign_account_companies, foreign_users,
                 foreign_keys, own_child: Company | None):
    """(route name, method, path, body) for every route, each naming something the caller must not reach."""
    calls = []
    for company in foreign_companies:
        c = company.pk
        calls += [
            ("company-list", "get", url("company-list") + f"?parent={c}", None),
            ("company-list", "post", url("company-list"), {"parent": c, "name": "Probe", "type": "customer"}),
            ("company-detail", "get", url("company-detail", c), None),
            ("company-detail", "patch", url("company-detail", c), {"name": "Probe"}),
            ("company-suspend", "post", url("company-suspend", c), {"reason": "probe"}),
            ("company-reactivate", "post", url("company-reactivate", c), None),
            ("company-move", "post", url("company-move", c), {"parent": caller.pk}),
            ("company-assist-off", "post", url("company-assist-off", c), None),
            ("company-assist-on", "post", url("company-assist-on", c), None),
            ("company-two-factor", "post", url("company-two-factor", c), {"enforce": True}),
        ]
        if own_child is not None:
            calls.append(("company-move", "post", url("company-move", own_child.pk), {"parent": c}))
    for company in foreign_account_companies:
        c = company.pk
        calls += [
            ("account-list", "get", url("account-list") + f"?company={c}", None),
            ("account-list", "post", url("account-list"),
             {"company": c, "email": f"probe{c}@example.test", "full_name": "Probe"}),
        ]
    for user in foreign_users:
        u = user.pk
        calls += [
            ("account-detail", "get", url("account-detail", u), None),
            ("account-detail", "patch", url("account-detail", u), {"full_name": "Probe"}),
            ("account-deactivate", "post", url("account-deactivate", u), None),
            ("account-activate", "post", url("account-activate", u), None),
            ("account-reset-two-factor", "post", url("account-reset-two-factor", u), None),
        ]
    for key in foreign_keys:
        calls.append(("api-key-revoke", "post", url("api-key-revoke", key.pk), None))
    return calls


def _personas(tree):
    everyone = set(tree.companies)
    assisted_below_north = {tree.north, tree.acme, tree.kite_sub, tree.kite_bakery}
    return {
        "a customer": (tree.acme, everyone - {tree.acme}, everyone - {tree.acme}, None),
        "a partner whose customer has assist off": (
            tree.north, everyone - {tree.north, tree.acme, tree.bolt, tree.kite_sub, tree.kite_bakery},
            everyone - assisted_below_north, tree.acme),
        "a reseller-only partner": (tree.rivet, everyone - {tree.rivet, tree.oak},
                                    everyone - {tree.rivet, tree.oak}, tree.oak),
        "a user of a sibling partner": (tree.south, everyone - {tree.south, tree.pine},
                                        everyone - {tree.south, tree.pine}, tree.pine),
    }


@pytest.mark.parametrize("persona", ["a customer", "a partner whose customer has assist off",
                                     "a reseller-only partner", "a user of a sibling partner"])
def test_C6_api_foreign_ids_answer_404(tree, persona):
    caller, foreign_companies, foreign_account_companies, own_child = _personas(tree)[persona]
    foreign_users = [tree.admins[c.pk] for c in foreign_account_companies]
    foreign_keys = [key for company_id, (key, _) in tree.keys.items() if company_id != caller.pk]
    calls = _probe_calls(caller=caller, foreign_companies=foreign_companies,
                         foreign_account_companies=foreign_account_companies, foreign_users=foreign_users,
                         foreign_keys=foreign_keys, own_child=own_child)
    # every id-taking route of the API is probed; a new route must be added here
    routes = {pattern.name for pattern in api_urls.urlpatterns}
    assert {name for name, *_ in calls} == routes - {"api-key-list"}

    forbidden_words = ([c.name for c in foreign_companies] + [u.email for u in foreign_users]
                       + [key.name for key in foreign_keys] + [key.prefix for key in foreign_keys])
    client = signed_in(tree.admins[caller.pk])
    for name, method, path, body in calls:
        response = call(client, method, path, body)
        assert response.status_code == 404, (name, method, path, response.content)
        assert response.json() == NOT_FOUND, (name, path)
        for word in forbidden_words:
            assert word not in response.content.decode(), (name, path, word)
    # the one route without ids lists only the caller's own keys
    listing = client.get(url("api-key-list")).content.decode()
    assert all(word not in listing for word in forbidden_words)
    # nothing was changed on the way
    for company in foreign_companies:
        company.refresh_from_db()
        assert company.status == CompanyStatus.ACTIVE and not company.enforce_two_factor
        assert company.name != "Probe"
    assert all(User.objects.get(pk=u.pk).is_active for u in foreign_users)
    assert not User.objects.filter(email__startswith="probe").exists()
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()


def test_C6_api_missing_and_foreign_ids_answer_alike(tree):
    client = signed_in(tree.admins[tree.south.pk])
    for name in ("company-detail", "company-suspend", "account-detail", "api-key-revoke"):
        method = "get" if name.endswith("detail") else "post"
        foreign_id = {"company": tree.acme.pk, "account": tree.admins[tree.acme.pk].pk,
                      "api-key": tree.keys[tree.acme.pk][0].pk}[name.rsplit("-", 1)[0]]
        foreign = call(client, method, url(name, foreign_id))
        missing = call(client, method, url(name, 987_654_321))
        assert (foreign.status_code, foreign.content) == (missing.status_code, missing.content) == (
            404, b'{"detail":"Not found."}')
        not_an_id = call(client, method, url(name, 1).replace("/1/", "/abc/"))
        assert (not_an_id.status_code, not_an_id.json()) == (404, NOT_FOUND)


def test_C6_api_key_sees_only_its_company_subtree(tree):
    client = key_client(tree.keys[tree.south.pk][1])
    listing = client.get(url("company-list")).json()
    assert [c["name"] for c in listing["results"]] == ["Pine Dairy"]
    for foreign in (tree.north, tree.acme, tree.platform):
        response = client.get(url("company-detail", foreign.pk))
        assert response.status_code == 404
        assert foreign.name not in response.content.decode()


def test_C6_company_list_is_the_subtree_below_the_caller(tree):
    client = signed_in(tree.admins[tree.north.pk])
    body = client.get(url("company-list")).json()
    assert body["count"] == 4
    assert [c["name"] for c in body["results"]] == ["Acme Dental", "Bolt Legal", "Kite Sub", "Kite Bakery"]

    def names(query: str) -> list[str]:
        response = client.get(url("company-list") + query)
        assert response.status_code == 200, response.content
        return [c["name"] for c in response.json()["results"]]

    assert names("?type=partner") == ["Kite Sub"]
    assert names(f"?parent={tree.kite_sub.pk}") == ["Kite Bakery"]
    assert names("?search=kite") == ["Kite Sub", "Kite Bakery"]
    assert names("?status=suspended") == []
    assert names("?assist=off") == ["Bolt Legal"]
    paged = client.get(url("company-list") + "?page_size=3&page=2").json()
    assert paged["count"] == 4 and [c["name"] for c in paged["results"]] == ["Kite Bakery"]
    # a customer has nothing below it
    assert signed_in(tree.admins[tree.acme.pk]).get(url("company-list")).json()["count"] == 0


def test_C6_path_starts_at_the_callers_company(tree):
    north = signed_in(tree.admins[tree.north.pk])
    bakery = north.get(url("company-detail", tree.kite_bakery.pk)).json()
    assert bakery["path"] == ["Northwind MSP", "Kite Sub", "Kite Bakery"]
    assert bakery["parent"] == tree.kite_sub.pk
    assert bakery["license_key"] == tree.kite_bakery.license_key

    customer = signed_in(tree.admins[tree.acme.pk]).get(url("company-detail", tree.acme.pk))
    assert customer.json()["path"] == ["Acme Dental"]
    assert customer.json()["parent"] is None  # its partner is outside its view
    assert "Northwind" not in customer.content.decode()
    assert tree.platform.name not in customer.content.decode()


def test_C6_scoped_view_refuses_its_own_queryset():
    for method in ("get_queryset", "get_object"):
        with pytest.raises(TypeError, match="dangerously_get_queryset"):
            type("LeakyViewSet", (CompanyScopedAPIView,), {method: lambda self: Company.objects.all()})
        leaky_mixin = type("LeakyMixin", (), {method: lambda self: Company.objects.all()})
        with pytest.raises(TypeError, match="dangerously_get_queryset"):
            type("MixedViewSet", (leaky_mixin, CompanyScopedAPIView), {})
    # the loud way out is allowed
    type("DeliberateViewSet", (CompanyScopedAPIView,), {"dangerously_get_queryset": lambda self: None})


# --- companies: create, edit, suspend, move, assist, two-factor ----------------------------------------

def test_C2_reseller_only_partner_creates_and_manages_companies(tree):
    client = signed_in(tree.admins[tree.rivet.pk])
    created = call(client, "post", url("company-list"),
                   {"name": "Elm Garage", "type": "customer", "country": "RO",
                    "field_of_activity": "automotive"})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["path"] == ["Rivet Resellers", "Elm Garage"]
    assert body["parent"] == tree.rivet.pk
    assert body["manages_security"] is True  # C1: a customer always does
    assert Company.objects.get(pk=body["id"]).parent_id == tree.rivet.pk
    suspended = call(client, "post", url("company-suspend", body["id"]), {})
    assert suspended.json()["status"] == CompanyStatus.SUSPENDED


def test_A1_primary_account_required_without_assist(tree):
    client = signed_in(tree.admins[tree.north.pk])
    payload = {"parent": tree.kite_sub.pk, "name": "Quill Print", "type": "customer",
               "partner_can_assist": False}
    refused = call(client, "post", url("company-list"), payload)
    assert refused.status_code == 400
    assert "primary account" in refused.json()["errors"]["primary_account"][0]
    assert not Company.objects.filter(name="Quill Print").exists()

    payload["primary_account"] = {"full_name": "Quinn Ray", "email": "quinn@quill.test",
                                  "timezone": "Europe/Bucharest", "language": "ro"}
    created = call(client, "post", url("company-list"), payload)
    assert created.status_code == 201, created.content
    assert created.json()["partner_can_assist"] is False
    primary = User.objects.get(email="quinn@quill.test")
    assert primary.company_id == created.json()["id"] and primary.role == Role.COMPANY_ADMIN
    assert primary.timezone == "Europe/Bucharest"


def test_X2_bad_input_names_field(tree):
    client = signed_in(tree.admins[tree.north.pk])
    before = Company.objects.count()
    bad = call(client, "post", url("company-list"),
               {"name": "  ", "type": "vendor", "country": "XX", "phone": "call me"})
    assert bad.status_code == 400
    errors = bad.json()["errors"]
    assert set(errors) == {"name", "type", "country", "phone"}
    assert errors["country"] == ["'XX' is not an ISO 3166-1 alpha-2 country code."]
    assert errors["type"] == ["Choose partner or customer."]  # the service's message, as on the pages
    # a field that is not part of the request is named, not silently ignored
    unknown = call(client, "patch", url("company-detail", tree.acme.pk), {"status": "suspended"})
    assert unknown.status_code == 400 and list(unknown.json()["errors"]) == ["status"]
    wrong_type = call(client, "post", url("company-two-factor", tree.acme.pk), {"enforce": "maybe"})
    assert wrong_type.status_code == 400 and list(wrong_type.json()["errors"]) == ["enforce"]
    duplicate = call(client, "patch", url("company-detail", tree.acme.pk), {"name": "Bolt Legal"})
    assert duplicate.json()["errors"]["name"] == [
        "Another company under the same partner is named Bolt Legal."]
    assert call(client, "get", url("company-list") + "?type=vendor").json()["errors"]["type"]
    assert Company.objects.count() == before
    tree.acme.refresh_from_db()
    assert tree.acme.name == "Acme Dental" and tree.acme.status == CompanyStatus.ACTIVE


def test_H2_edit_details_and_X1_audit(tree):
    admin = tree.admins[tree.north.pk]
    response = call(signed_in(admin), "patch", url("company-detail", tree.acme.pk),
                    {"name": "Acme Dental Group", "country": "DE", "phone": "+49 30 1234"})
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "Acme Dental Group" and response.json()["country"] == "DE"
    event = AuditEvent.objects.filter(company=tree.acme, action="company.update").get()
    assert event.actor == admin
    assert event.before["name"] == "Acme Dental" and event.after["name"] == "Acme Dental Group"


def test_H4_suspend_and_reactivate(tree):
    client = signed_in(tree.admins[tree.north.pk])
    suspended = call(client, "post", url("company-suspend", tree.kite_sub.pk), {"reason": "unpaid"})
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    event = AuditEvent.objects.get(company=tree.kite_sub, action="company.suspend")
    assert event.after["reason"] == "unpaid"
    # its API key stops working (H4), nothing is deleted
    assert key_client(tree.keys[tree.kite_sub.pk][1]).get(url("company-list")).status_code == 401
    assert Company.objects.filter(pk=tree.kite_bakery.pk).exists()
    reactivated = call(client, "post", url("company-reactivate", tree.kite_sub.pk))
    assert reactivated.json()["status"] == "active"
    # a company does not suspend itself: only a partner above it manages it
    assert call(client, "post", url("company-suspend", tree.north.pk)).status_code == 404


def test_H5_move_refused_with_message(tree):
    client = signed_in(tree.admins[tree.north.pk])
    under_customer = call(client, "post", url("company-move", tree.acme.pk), {"parent": tree.bolt.pk})
    assert under_customer.status_code == 400
    assert under_customer.json()["errors"]["parent"] == [
        "Bolt Legal is a customer; only a partner can have companies under it."]
    cycle = call(client, "post", url("company-move", tree.kite_sub.pk), {"parent": tree.kite_sub.pk})
    assert cycle.status_code == 400
    assert "itself or below it" in cycle.json()["errors"]["parent"][0]
    assert Company.objects.get(pk=tree.acme.pk).parent_id == tree.north.pk


def test_H5_move_under_another_partner_in_view(tree):
    client = signed_in(tree.admins[tree.north.pk])
    moved = call(client, "post", url("company-move", tree.acme.pk), {"parent": tree.kite_sub.pk})
    assert moved.status_code == 200, moved.content
    assert moved.json()["path"] == ["Northwind MSP", "Kite Sub", "Acme Dental"]
    assert moved.json()["parent"] == tree.kite_sub.pk
    # a partner outside the caller's view is not a destination, and is not named
    outside = call(client, "post", url("company-move", tree.bolt.pk), {"parent": tree.south.pk})
    assert outside.status_code == 404 and "Southgate" not in outside.content.decode()


def test_C3_assist_off_keeps_company_subscription_and_two_factor_not_accounts(tree):
    client = signed_in(tree.admins[tree.north.pk])
    off = call(client, "post", url("company-assist-off", tree.acme.pk))
    assert off.status_code == 200 and off.json()["partner_can_assist"] is False
    # still in the list, still managed: two-factor (A3) and suspension
    listing = client.get(url("company-list")).json()["results"]
    assert "Acme Dental" in [c["name"] for c in listing]
    enforced = call(client, "post", url("company-two-factor", tree.acme.pk), {"enforce": True})
    assert enforced.status_code == 200 and enforced.json()["enforce_two_factor"] is True
    # but its accounts are no longer the partner's to manage (C5)
    assert client.get(url("account-list") + f"?company={tree.acme.pk}").status_code == 404
    assert client.get(url("account-detail", tree.admins[tree.acme.pk].pk)).status_code == 404


def test_C4_assist_back_on_only_by_the_companys_own_users(tree):
    partner = signed_in(tree.admins[tree.north.pk])
    refused = call(partner, "post", url("company-assist-on", tree.bolt.pk))
    assert refused.status_code == 400
    assert list(refused.json()["errors"]) == ["partner_can_assist"]
    by_key = key_client(tree.keys[tree.bolt.pk][1])
    assert call(by_key, "post", url("company-assist-on", tree.bolt.pk)).status_code == 403
    assert not Company.objects.get(pk=tree.bolt.pk).partner_can_assist

    own = call(signed_in(tree.admins[tree.bolt.pk]), "post", url("company-assist-on", tree.bolt.pk))
    assert own.status_code == 200 and own.json()["partner_can_assist"] is True
    assert own.json()["path"] == ["Bolt Legal"]


def test_A3_company_enforces_two_factor_for_itself(tree):
    client = signed_in(tree.admins[tree.pine.pk])
    response = call(client, "post", url("company-two-factor", tree.pine.pk), {"enforce": True})
    assert response.status_code == 200
    assert Company.objects.get(pk=tree.pine.pk).enforce_two_factor is True
    # from now on a session without a code reaches no API route; a key is not a session
    held = client.get(url("company-detail", tree.pine.pk))
    assert held.status_code == 403 and "Two-factor" in held.json()["detail"]
    assert key_client(tree.keys[tree.pine.pk][1]).get(url("company-detail", tree.pine.pk)).status_code == 200


# --- accounts --------------------------------------------------------------------------------------------

def test_C5_partner_manages_accounts_of_own_and_assisted_companies(tree):
    client = signed_in(tree.admins[tree.north.pk])
    for company in (tree.north, tree.acme, tree.kite_bakery):
        created = call(client, "post", url("account-list"),
                       {"company": company.pk, "email": f"new@{company.pk}.test", "full_name": "New Person",
                        "role": "security_analyst"})
        assert created.status_code == 201, created.content
        assert User.objects.get(email=f"new@{company.pk}.test").company_id == company.pk
    own = client.get(url("account-list")).json()
    assert {a["email"] for a in own["results"]} == {"admin@northwind-msp.test", f"new@{tree.north.pk}.test"}
    acme = client.get(url("account-list") + f"?company={tree.acme.pk}").json()["results"]
    assert {a["email"] for a in acme} == {"admin@acme-dental.test", f"new@{tree.acme.pk}.test"}
    # Bolt Legal has assist off
    refused = call(client, "post", url("account-list"),
                   {"company": tree.bolt.pk, "email": "x@bolt.test", "full_name": "X"})
    assert refused.status_code == 404
    assert not User.objects.filter(email="x@bolt.test").exists()


def test_C5_account_edit_deactivate_and_reset_two_factor(tree):
    admin = tree.admins[tree.north.pk]
    target = tree.admins[tree.acme.pk]
    User.objects.filter(pk=target.pk).update(totp_secret="ABC", totp_confirmed_at="2026-01-01T00:00:00Z")
    client = signed_in(admin)
    edited = call(client, "patch", url("account-detail", target.pk), {"role": "reporter", "language": "fr"})
    assert edited.status_code == 200 and edited.json()["role"] == "reporter"
    assert call(client, "post", url("account-deactivate", target.pk)).json()["is_active"] is False
    assert call(client, "post", url("account-activate", target.pk)).json()["is_active"] is True
    reset = call(client, "post", url("account-reset-two-factor", target.pk))
    assert reset.json()["two_factor_enrolled"] is False
    assert User.objects.get(pk=target.pk).totp_secret == ""
    # the services' own guards hold over the API
    own = call(client, "post", url("account-deactivate", admin.pk))
    assert own.status_code == 400 and list(own.json()["errors"]) == ["is_active"]
    bad = call(client, "patch", url("account-detail", target.pk), {"timezone": "Mars/Olympus"})
    assert bad.json()["errors"]["timezone"] == ["'Mars/Olympus' is not a known timezone."]


def test_A2_other_roles_read_companies_but_change_nothing(tree):
    reporter = make_user(company=tree.north, role=Role.REPORTER)
    client = signed_in(reporter)
    assert client.get(url("company-list")).status_code == 200
    assert client.get(url("company-detail", tree.acme.pk)).status_code == 200
    for method, path, body in [
        ("post", url("company-list"), {"name": "Nope", "type": "customer"}),
        ("post", url("company-suspend", tree.acme.pk), {}),
        ("patch", url("company-detail", tree.acme.pk), {"name": "Nope"}),
        ("get", url("account-list"), None),
        ("get", url("api-key-list"), None),
        ("post", url("api-key-list"), {"name": "k", "scopes": ["usage"]}),
    ]:
        response = call(client, method, path, body)
        assert response.status_code == 403, (method, path)
    assert Company.objects.get(pk=tree.acme.pk).status == CompanyStatus.ACTIVE


# --- API keys --------------------------------------------------------------------------------------------

def test_A4_api_key_shown_once_stored_hashed(tree):
    client = signed_in(tree.admins[tree.north.pk])
    created = call(client, "post", url("api-key-list"),
                   {"name": "RMM sync", "scopes": ["usage", "companies"]})
    assert created.status_code == 201, created.content
    secret = created.json()["secret"]
    key = ApiKey.objects.get(pk=created.json()["id"])
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps([key.name, key.prefix, key.key_hash, key.scopes])
    assert key.scopes == ["companies", "usage"]
    listing = client.get(url("api-key-list"))
    assert secret not in listing.content.decode()
    rmm = next(k for k in listing.json()["results"] if k["id"] == key.pk)
    assert "secret" not in rmm and rmm["prefix"] == key.prefix and rmm["last_used_at"] is None
    # the secret shown works, and is then seen as used
    assert key_client(secret).get(url("company-list")).status_code == 200
    assert ApiKey.objects.get(pk=key.pk).last_used_at is not None
    # the keys of the companies below are theirs, not the partner's
    assert {k["name"] for k in listing.json()["results"]} == {"northwind-msp key", "RMM sync"}


def test_A4_api_key_scope_is_checked_per_view(tree):
    _, usage_only = api_key_create(actor=tree.admins[tree.north.pk], company=tree.north, name="usage",
                                   scopes=["usage"])
    client = key_client(usage_only)
    for method, path in [("get", url("company-list")), ("get", url("company-detail", tree.acme.pk)),
                         ("post", url("company-suspend", tree.acme.pk)), ("get", url("account-list"))]:
        response = call(client, method, path)
        assert response.status_code == 403, path
        assert "'companies' scope" in response.json()["detail"]
    assert Company.objects.get(pk=tree.acme.pk).status == CompanyStatus.ACTIVE


def test_A4_revoked_or_unknown_key_is_refused(tree):
    key, secret = tree.keys[tree.north.pk]
    client = signed_in(tree.admins[tree.north.pk])
    revoked = call(client, "post", url("api-key-revoke", key.pk))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    response = key_client(secret).get(url("company-list"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Api-Key"
    assert key_client("gzk_nothing_here").get(url("company-list")).status_code == 401
    assert Client().get(url("company-list")).status_code == 401
    # a bad key is refused even beside a valid session: no silent fall-back to the session
    assert client.get(url("company-list"), headers={"Authorization": f"Api-Key {secret}"}).status_code == 401


def test_A4_X1_api_key_acts_as_company_administrator_audited_as_the_key(tree):
    key, secret = tree.keys[tree.north.pk]
    client = key_client(secret)
    created = call(client, "post", url("company-list"), {"name": "Vale Farm", "type": "customer"})
    assert created.status_code == 201, created.content
    event = AuditEvent.objects.get(action="company.create", object_id=str(created.json()["id"]))
    assert event.actor is None and event.actor_label == f"API key {key.prefix} ({key.name})"
    invited = call(signed_in(tree.admins[tree.north.pk]), "post", url("account-list"),
                   {"company": created.json()["id"], "email": "vale@farm.test", "full_name": "Val"})
    assert invited.status_code == 201
    response = client.get(url("company-detail", tree.acme.pk))
    assert response.wsgi_request.tenant == tree.north  # the key's company is the request's tenant
    # actions that need a person, account changes and key management are closed to keys
    vale_user = invited.json()["id"]
    for method, path, body in [("patch", url("account-detail", vale_user), {"full_name": "V"}),
                               ("post", url("account-deactivate", vale_user), None),
                               ("post", url("account-reset-two-factor", vale_user), None),
                               ("post", url("account-list"), {"email": "more@farm.test", "full_name": "M"}),
                               ("get", url("api-key-list"), None),
                               ("post", url("api-key-list"), {"name": "more", "scopes": ["companies"]})]:
        assert call(client, method, path, body).status_code == 403, path
    assert ApiKey.objects.filter(company=tree.north).count() == 1


def test_A4_revoking_anothers_key_is_not_possible(tree):
    key, _ = tree.keys[tree.acme.pk]
    response = call(signed_in(tree.admins[tree.north.pk]), "post", url("api-key-revoke", key.pk))
    assert response.status_code == 404
    api_key_revoke(actor=tree.admins[tree.acme.pk], key=key)
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None


# --- the schema ------------------------------------------------------------------------------------------

def test_openapi_schema_documents_the_api(client, platform):
    response = client.get(reverse("api-schema") + "?format=json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    for path in ("/api/v1/companies/", "/api/v1/companies/{id}/", "/api/v1/companies/{id}/move/",
                 "/api/v1/companies/{id}/assist-on/", "/api/v1/accounts/", "/api/v1/api-keys/{id}/revoke/"):
        assert path in schema["paths"], path
    assert schema["components"]["securitySchemes"]["ApiKey"]["name"] == "Authorization"
    assert "secret" in schema["components"]["schemas"]["ApiKeyCreated"]["properties"]
    assert "secret" not in schema["components"]["schemas"]["ApiKey"]["properties"]
    create = schema["paths"]["/api/v1/companies/"]["post"]
    assert set(create["responses"]) >= {"201", "400", "404"}
    assert schema["components"]["schemas"]["TypeEnum"]["enum"] == [CompanyType.PARTNER, CompanyType.CUSTOMER]


def test_X2_unknown_field_of_primary_account_is_named(tree):
    client = signed_in(tree.admins[tree.north.pk])
    response = call(client, "post", url("company-list"),
                    {"name": "Zen Spa", "type": "customer",
                     "primary_account": {"full_name": "Z", "email": "z@zen.test", "phone": "1"}})
    assert response.status_code == 400
    assert list(response.json()["errors"]["primary_account"]) == ["phone"]
    assert not Company.objects.filter(name="Zen Spa").exists()
