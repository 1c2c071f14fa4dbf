"""The agent protocol v1 over HTTP (SPEC T1-T7, U14/U15 inputs, X2, H4)."""

import datetime as dt
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import tenant_context

from companies.models import AuditEvent, CompanyStatus
from companies.services import company_set_status
from licensing.models import SeatAssignment, SeatState
from licensing.seats import pool_of, reservation_set, seats_expire_trials, trial_end_for
from tests.factories import make_company
from usage.agent import agent_register, install_token_for, install_token_rotate
from usage.models import AgentCredential, EndpointDay, MonthClose, PendingRollup, RollupWatermark, late_horizon
from usage.modules import MODULE_BITS, SCAN_MODES, XDR_SENSOR_BITS
from usage.rollups import heartbeats_pending, usage_company_rollup
from usage.telemetry.models import Endpoint, Heartbeat, MailboxMonth

pytestmark = pytest.mark.django_db

REGISTER = "/api/agent/v1/register"
HEARTBEATS = "/api/agent/v1/heartbeats"
MAILBOXES = "/api/agent/v1/mailboxes"


def post(client, url, body, token=None, raw=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", **headers)


def register(client, company, hardware_id=None, **fields):
    body = {"hardware_id": f"hw-{uuid.uuid4()}" if hardware_id is None else hardware_id, "hostname": "web-01",
            "os_family": "windows", "os_type": "workstation", "machine_type": "physical", **fields}
    return post(client, REGISTER, body, install_token_for(company=company).token)


def agent(client, company, **fields):
    """A registered agent: (endpoint id, agent token)."""
    answer = register(client, company, **fields).json()
    return answer["endpoint_id"], answer["agent_token"]


def heartbeat(**fields):
    item = {"id": str(uuid.uuid4()), "observed_at": timezone.now().isoformat(), "os_family": "linux",
            "os_type": "server", "machine_type": "virtual", "container_host": False,
            "modules": ["antimalware", "edr"], "scan_mode": "central", "uptime_seconds": 900,
            "xdr_sensors": ["network"]}
    item.update(fields)
    return item


def send(client, token, items):
    return post(client, HEARTBEATS, {"heartbeats": items}, token)


def stored(company, **filters):
    with tenant_context(company):
        return list(Heartbeat.objects.filter(**filters).order_by("observed_at"))


@pytest.fixture
def company(platform):
    return make_company(parent=platform)


# --- T1 registration -------------------------------------------------------------------------------------

def test_T1_register_returns_endpoint_seat_and_credential(client, company):
    reservation_set(actor=None, company=company, seats=1)
    first = register(client, company)
    assert first.status_code == 201
    body = first.json()
    assert set(body) == {"endpoint_id", "agent_token", "seat"}
    assert body["seat"] == {"state": "licensed", "trial_ends_at": None}
    with tenant_context(company):
        endpoint = Endpoint.objects.get(pk=body["endpoint_id"])
    assert (endpoint.hostname, endpoint.os_family, endpoint.machine_type) == ("web-01", "windows", "physical")
    credential = AgentCredential.objects.get(endpoint_id=body["endpoint_id"])
    assert credential.company == company and body["agent_token"] not in credential.token_hash
    # the reservation is full: the next install enters trial until the end of next month (L4)
    second = register(client, company).json()
    assert second["seat"] == {"state": "trial",
                              "trial_ends_at": trial_end_for(timezone.now().date()).isoformat()}
    assert pool_of(company).used == 1


def test_T1_credential_works_and_is_stored_only_as_a_hash(client, company):
    endpoint_id, token = agent(client, company)
    assert send(client, token, [heartbeat()]).status_code == 200
    assert not AgentCredential.objects.filter(token_hash=token).exists()


def test_T1_registration_fields_are_validated_naming_them(client, company):
    response = register(client, company, hardware_id="", os_family="solaris", machine_type=None)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"hardware_id", "os_family", "machine_type"}
    assert "solaris" in errors["os_family"][0]
    with tenant_context(company):
        assert not Endpoint.objects.exists()


def test_T1_unknown_install_token_is_401(client, company):
    response = post(client, REGISTER, {"hardware_id": "x"}, "not-a-token")
    assert response.status_code == 401
    assert "install token is unknown" in response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_T1_rotated_install_token_stops_registering_but_agents_keep_working(client, company):
    _, token = agent(client, company)
    old = install_token_for(company=company).token
    new = install_token_rotate(actor=None, company=company)
    assert new.token != old and install_token_for(company=company) == new
    body = {"hardware_id": "hw-new", "hostname": "h", "os_family": "linux", "os_type": "server",
            "machine_type": "virtual"}
    assert post(client, REGISTER, body, old).status_code == 401
    assert post(client, REGISTER, body, new.token).status_code == 201
    assert send(client, token, [heartbeat()]).json()["accepted"] == 1
    event = AuditEvent.objects.get(company=company, action="agent.install_token_rotate")
    assert old not in json.dumps([event.before, event.after])


# --- T2 heartbeats -----------------------------------------------------------------------------------

def test_T2_batch_of_heartbeats_stored_in_company_schema(client, company, platform):
    other = make_company(parent=platform)
    agent(client, other)
    endpoint_id, token = agent(client, company)
    items = [heartbeat(observed_at=(timezone.now() - dt.timedelta(minutes=i)).isoformat()) for i in range(5)]
    items[0].update(os_family="windows", os_type="workstation", machine_type="physical", container_host=True,
                    modules=["antimalware", "patch_management"], scan_mode="local", uptime_seconds=0,
                    xdr_sensors=[])
    response = send(client, token, items)
    assert response.status_code == 200
    assert response.json() == {"accepted": 5, "duplicates": 0, "rejected": [],
                               "seat": {"state": "licensed", "trial_ends_at": None}}
    rows = {str(row.id): row for row in stored(company)}
    assert set(rows) == {item["id"] for item in items}
    first = rows[items[0]["id"]]
    assert first.endpoint_id == uuid.UUID(endpoint_id)
    assert first.observed_at == dt.datetime.fromisoformat(items[0]["observed_at"])
    assert (first.os_family, first.os_type, first.machine_type, first.container_host) == (
        "windows", "workstation", "physical", True)
    assert first.modules == MODULE_BITS["antimalware"] | MODULE_BITS["patch_management"]
    assert (first.scan_mode, first.uptime_seconds, first.xdr_sensors) == (SCAN_MODES["local"], 0, 0)
    second = rows[items[1]["id"]]
    assert second.modules == MODULE_BITS["antimalware"] | MODULE_BITS["edr"]
    assert (second.scan_mode, second.xdr_sensors) == (SCAN_MODES["central"], XDR_SENSOR_BITS["network"])
    assert heartbeats_pending(company=company) == len(rows)  # stored, waiting for the rollup
    assert all(abs(row.received_at - timezone.now()) < dt.timedelta(minutes=1) for row in rows.values())
    # in the company's own schema, and in no other
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{company.schema_name}".telemetry_heartbeat')
        assert cursor.fetchone()[0] == 5
        cursor.execute(f'SELECT count(*) FROM "{other.schema_name}".telemetry_heartbeat')
        assert cursor.fetchone()[0] == 0
    assert stored(other) == []
    assert PendingRollup.objects.filter(company=company).exists()
    assert not PendingRollup.objects.filter(company=other).exists()
    with tenant_context(company):
        last_seen = Endpoint.objects.get(pk=endpoint_id).last_seen_at
    assert last_seen == max(row.observed_at for row in rows.values())


def test_T2_unknown_optional_fields_are_ignored(client, company):
    _, token = agent(client, company)
    response = send(client, token, [heartbeat(agent_version="7.9.1", extra={"a": 1})])
    assert response.json()["accepted"] == 1


def test_T2_batch_cost_does_not_grow_with_its_size(client, company, django_assert_num_queries):
    _, token = agent(client, company)
    send(client, token, [heartbeat()])  # warm caches (content types, the seat pool)
    with CaptureQueriesContext(connection) as ten:
        assert send(client, token, [heartbeat() for _ in range(10)]).json()["accepted"] == 10
    with django_assert_num_queries(len(ten.captured_queries)):
        assert send(client, token, [heartbeat() for _ in range(100)]).json()["accepted"] == 100
    assert len(stored(company)) == 111


# --- T3 module keys ------------------------------------------------------------------------------------

def test_T3_unknown_module_key_rejected_naming_it(client, company):
    _, token = agent(client, company)
    good, bad = heartbeat(), heartbeat(modules=["antimalware", "foo"])
    response = send(client, token, [good, bad])
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1
    assert body["rejected"] == [{"index": 1, "id": bad["id"], "error": "modules: unknown module key 'foo'."}]
    assert [str(row.id) for row in stored(company)] == [good["id"]]
    # a batch with nothing valid in it is a 400 with the same body
    alone = send(client, token, [heartbeat(modules=["foo"])])
    assert alone.status_code == 400
    assert alone.json()["rejected"][0]["error"] == "modules: unknown module key 'foo'."


def test_T3_every_module_key_is_accepted(client, company):
    _, token = agent(client, company)
    item = heartbeat(modules=list(MODULE_BITS), xdr_sensors=list(XDR_SENSOR_BITS))
    assert send(client, token, [item]).json()["accepted"] == 1
    row = stored(company)[0]
    assert row.modules == (1 << len(MODULE_BITS)) - 1 and row.xdr_sensors == 0b1111


# --- T4 at least once ------------------------------------------------------------------------------------

def test_T4_duplicate_heartbeat_counted_once(client, company):
    _, token = agent(client, company)
    item, other = heartbeat(), heartbeat()
    first = send(client, token, [item, item, other]).json()
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (2, 1, [])
    again = send(client, token, [item]).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    assert sorted(str(row.id) for row in stored(company)) == sorted([item["id"], other["id"]])


def test_T4_numbers_drawn_for_no_stored_heartbeat_are_passed_over(client, company):
    """The rollup bounds what it merges by the newest number the sequence numbering the company's
    heartbeats has handed out (usage/rollups.py). A resend (its number drawn, its row dropped as a
    duplicate) and an insert rolled back leave gaps: the watermark passes over them, nothing is counted
    twice, and the heartbeat after them is merged."""
    endpoint_id, token = agent(client, company)
    first = heartbeat()
    send(client, token, [first])
    usage_company_rollup(company_id=company.pk)
    merged = RollupWatermark.objects.get(company=company).seq

    assert send(client, token, [first]).json()["duplicates"] == 1
    with pytest.raises(RuntimeError), transaction.atomic(), tenant_context(company):
        Heartbeat.objects.create(id=uuid.uuid4(), endpoint_id=endpoint_id, observed_at=timezone.now(),
                                 received_at=timezone.now(), os_family="linux", os_type="server",
                                 machine_type="virtual", container_host=False, modules=1, scan_mode=1,
                                 uptime_seconds=60, xdr_sensors=0)
        raise RuntimeError("rolled back")
    usage_company_rollup(company_id=company.pk)
    assert RollupWatermark.objects.get(company=company).seq == merged + 2
    days = EndpointDay.objects.filter(company=company, endpoint_id=endpoint_id)
    assert [(d.heartbeats, d.uptime_seconds) for d in days] == [(1, 900)]

    send(client, token, [heartbeat()])
    usage_company_rollup(company_id=company.pk)
    assert heartbeats_pending(company=company) == 0
    assert [(d.heartbeats, d.uptime_seconds) for d in days.all()] == [(2, 1800)]


def test_T4_heartbeat_for_finalized_month_is_kept(client, company):
    _, token = agent(client, company)
    last_month = (timezone.now().date().replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    MonthClose.objects.create(month=last_month)
    # the last day of the finalized month: inside the late window whatever today's date
    observed = dt.datetime.combine(timezone.now().date().replace(day=1) - dt.timedelta(days=1), dt.time(12),
                                   tzinfo=dt.UTC)
    PendingRollup.objects.filter(company=company).delete()
    response = send(client, token, [heartbeat(observed_at=observed.isoformat())])
    assert response.status_code == 200 and response.json()["accepted"] == 1
    assert [row.observed_at for row in stored(company)] == [observed]
    assert heartbeats_pending(company=company) == 1
    assert PendingRollup.objects.filter(company=company).exists()  # the rollup records the adjustment (U12)


def test_T4_a_resend_after_the_purge_is_refused_never_counted_again(client, company):
    """The raw rows that recognise a resend are purged after the late window; a heartbeat that old
    is refused naming observed_at, so the endpoint-day keeps counting it once."""
    from usage.models import EndpointDay
    from usage.rollups import heartbeats_purge, usage_company_rollup

    _, token = agent(client, company)
    now = timezone.now()
    item = heartbeat(observed_at=(now - dt.timedelta(days=10)).isoformat())
    assert send(client, token, [item]).json()["accepted"] == 1
    usage_company_rollup(company_id=company.pk)
    later = now + dt.timedelta(days=40)
    assert heartbeats_purge(now=later) == 1
    before = list(EndpointDay.objects.filter(company=company).values_list("day", "uptime_seconds", "heartbeats"))
    assert [row[1:] for row in before] == [(900, 1)]
    from usage import agent as agent_module

    body = agent_module.heartbeats_validate(endpoint_id=uuid.UUID(stored_endpoint(company)), items=[item],
                                            now=later)[1]
    assert body.accepted == 0 and "is before the earliest time accepted now" in body.rejected[0]["error"]
    too_old = late_horizon(now) - dt.timedelta(minutes=1)  # before both 35 days ago and the previous month
    assert send(client, token, [heartbeat(observed_at=too_old.isoformat())]).status_code == 400
    usage_company_rollup(company_id=company.pk)
    after = EndpointDay.objects.filter(company=company).values_list("day", "uptime_seconds", "heartbeats")
    assert list(after) == before


def stored_endpoint(company) -> str:
    with tenant_context(company):
        return str(Endpoint.objects.get().id)


@pytest.mark.parametrize("field", ["os_family", "os_type", "machine_type"])
@pytest.mark.parametrize("value", [["windows"], {"a": 1}, 7])
def test_T6_X2_a_choice_of_the_wrong_type_is_refused_and_the_rest_of_the_batch_kept(client, company, field, value):
    _, token = agent(client, company)
    good, bad = heartbeat(), heartbeat(**{field: value})
    response = send(client, token, [good, bad])
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1 and body["rejected"][0]["index"] == 1
    assert body["rejected"][0]["error"].startswith(f"{field}: must be")
    assert [str(row.id) for row in stored(company)] == [good["id"]]
    answer = register(client, company, **{field: value})
    assert answer.status_code == 400 and set(answer.json()["errors"]) == {field}


# --- T5 expired endpoints --------------------------------------------------------------------------------

def test_T5_suspended_company_agent_told_expired(client, company):
    endpoint_id, token = agent(client, company)
    assert send(client, token, []).json()["seat"]["state"] == "licensed"
    company_set_status(actor=None, company=company, status=CompanyStatus.SUSPENDED)
    response = send(client, token, [heartbeat()])
    assert response.status_code == 200
    assert response.json()["seat"] == {"state": "expired", "trial_ends_at": None}
    assert len(stored(company)) == 1  # H4: nothing of its data is lost
    assert SeatAssignment.objects.get(endpoint_id=endpoint_id).state == SeatState.EXPIRED
    # a suspended company's install package still registers, and is told expired
    registered = register(client, company)
    assert registered.status_code == 201 and registered.json()["seat"]["state"] == "expired"


def test_T5_trial_end_answer(client, company):
    reservation_set(actor=None, company=company, seats=0)
    endpoint_id, token = agent(client, company)
    ends = trial_end_for(timezone.now().date())
    assert send(client, token, []).json()["seat"] == {"state": "trial", "trial_ends_at": ends.isoformat()}
    # the last day has passed: expired at once, before the nightly job records it
    SeatAssignment.objects.filter(endpoint_id=endpoint_id).update(
        trial_ends_on=timezone.now().date() - dt.timedelta(days=1))
    assert send(client, token, [heartbeat()]).json()["seat"] == {"state": "expired", "trial_ends_at": None}
    seats_expire_trials(today=timezone.now().date())
    assert send(client, token, []).json()["seat"] == {"state": "expired", "trial_ends_at": None}
    assert len(stored(company)) == 1


def test_L4_T5_T7_an_expired_endpoint_reinstalled_after_seats_are_bought_takes_one(client, company):
    """Its trial ran out with no seat; the MSP buys seats and reinstalls the agent: the machine is
    licensed, takes one seat however often it registers, and gets no second trial."""
    reservation_set(actor=None, company=company, seats=0)
    hardware = f"hw-{uuid.uuid4()}"
    assert register(client, company, hardware_id=hardware).json()["seat"]["state"] == "trial"
    SeatAssignment.objects.filter(company=company).update(trial_ends_on=timezone.now().date() - dt.timedelta(days=1))
    seats_expire_trials(today=timezone.now().date())
    assert register(client, company, hardware_id=hardware).json()["seat"]["state"] == "expired"  # no seat yet

    reservation_set(actor=None, company=company, seats=10)
    for _ in range(2):
        answer = register(client, company, hardware_id=hardware).json()
        assert answer["seat"] == {"state": "licensed", "trial_ends_at": None}
    seat = SeatAssignment.objects.get(company=company)
    assert seat.state == SeatState.LICENSED and seat.licensed_at is not None
    assert pool_of(company).used == 1
    assert AuditEvent.objects.filter(company=company, action="license.seat_retake").count() == 1


# --- T6 bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [None, "Bearer", "Basic abc", "Bearer not-a-token"])
def test_T6_wrong_token_is_401(client, company, authorization):
    agent(client, company)
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.post(HEARTBEATS, data=json.dumps({"heartbeats": [heartbeat()]}),
                           content_type="application/json", **headers)
    assert response.status_code == 401
    detail = response.json()["detail"]
    assert "agent token" in detail
    assert stored(company) == []


def test_T6_install_token_is_not_an_agent_token(client, company):
    agent(client, company)
    response = send(client, install_token_for(company=company).token, [heartbeat()])
    assert response.status_code == 401


def test_T6_malformed_body_is_400(client, company):
    _, token = agent(client, company)
    response = post(client, HEARTBEATS, None, token, raw='{"heartbeats": [')
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["errors"]["body"][0]
    for body in ({}, {"heartbeats": {"id": "x"}}, [heartbeat()], {"heartbeat": []}):
        response = post(client, HEARTBEATS, body, token)
        assert response.status_code == 400, body
        assert list(response.json()["errors"]) == ["heartbeats"]
    response = send(client, token, [heartbeat(), "not an object"])
    assert response.status_code == 200
    assert response.json()["rejected"] == [{"index": 1, "id": None, "error": "heartbeat: must be a JSON object."}]


def test_T6_oversized_batch_is_413(client, company):
    _, token = agent(client, company)
    response = send(client, token, [heartbeat() for _ in range(1001)])
    assert response.status_code == 413
    assert "at most 1000 heartbeats" in response.json()["detail"]
    assert stored(company) == []
    assert send(client, token, [heartbeat() for _ in range(1000)]).json()["accepted"] == 1000


def test_T6_future_timestamp_rejected_while_the_rest_of_the_batch_is_stored(client, company):
    _, token = agent(client, company)
    now = timezone.now()
    items = [heartbeat(), heartbeat(observed_at=(now + dt.timedelta(hours=2)).isoformat()),
             heartbeat(observed_at=(now + dt.timedelta(minutes=4)).isoformat()),
             heartbeat(observed_at="2026-10-05T12:00:00"), heartbeat(observed_at="yesterday"),
             heartbeat(observed_at=(late_horizon(now) - dt.timedelta(minutes=1)).isoformat()),
             heartbeat(observed_at=(now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))]
    body = send(client, token, items).json()
    assert body["accepted"] == 3
    errors = {r["index"]: r["error"] for r in body["rejected"]}
    assert set(errors) == {1, 3, 4, 5}
    assert all(error.startswith("observed_at: ") for error in errors.values())
    assert "future" in errors[1] and "time zone" in errors[3] and "before the earliest time accepted" in errors[5]
    assert {str(row.id) for row in stored(company)} == {items[0]["id"], items[2]["id"], items[6]["id"]}


@pytest.mark.parametrize("uptime", [-1, 86401, 1.5, "900", True, None])
def test_T6_uptime_out_of_range_rejected(client, company, uptime):
    _, token = agent(client, company)
    response = send(client, token, [heartbeat(uptime_seconds=uptime), heartbeat(uptime_seconds=86400)])
    body = response.json()
    assert body["accepted"] == 1
    assert body["rejected"][0]["index"] == 0
    assert body["rejected"][0]["error"].startswith("uptime_seconds: must be a whole number from 0 to 86400")


def test_T6_every_field_is_checked_and_named(client, company):
    _, token = agent(client, company)
    item = {"id": "not-a-uuid", "observed_at": timezone.now().isoformat(), "os_family": "beos",
            "os_type": "laptop", "machine_type": "cloud", "container_host": "no", "modules": "antimalware",
            "scan_mode": "remote", "uptime_seconds": 1, "xdr_sensors": ["email"]}
    error = send(client, token, [item]).json()["rejected"][0]["error"]
    for name in ("id", "os_family", "os_type", "machine_type", "container_host", "modules", "scan_mode",
                 "xdr_sensors"):
        assert f"{name}: " in error, name
    assert "unknown sensor category 'email'" in error
    missing = send(client, token, [{"id": str(uuid.uuid4())}]).json()["rejected"][0]
    assert "observed_at: required" in missing["error"] and "modules: required" in missing["error"]


def test_T6_unknown_endpoint(client, company):
    endpoint_id, token = agent(client, company)
    # a heartbeat naming another endpoint than the token's is refused on its own
    body = send(client, token, [heartbeat(endpoint_id=str(uuid.uuid4())), heartbeat(endpoint_id=endpoint_id)])
    assert body.json()["accepted"] == 1
    assert "endpoint_id: " in body.json()["rejected"][0]["error"]
    # an endpoint removed from the inventory: nothing stored, the agent is told to register again
    with tenant_context(company):
        Heartbeat.objects.all().delete()
        Endpoint.objects.filter(pk=endpoint_id).delete()
    response = send(client, token, [heartbeat()])
    assert response.status_code == 401 and "unknown endpoint" in response.json()["detail"]
    assert stored(company) == []


def test_T6_wrong_method_and_too_large_body(client, company, settings):
    _, token = agent(client, company)
    assert client.get(HEARTBEATS, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 405
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = send(client, token, [heartbeat() for _ in range(20)])
    assert response.status_code == 413 and "larger than 1000 bytes" in response.json()["detail"]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2621440  # Django's default, which docs/agent-api.md states
    assert "larger than 2.5 MB" in send(client, token, [heartbeat(hostname="x" * 3000) for _ in range(1000)]
                                        ).json()["detail"]


# --- T7 the same machine again ------------------------------------------------------------------------

def test_T7_reregistration_same_hardware_keeps_endpoint_and_seat(client, company):
    reservation_set(actor=None, company=company, seats=5)
    first = register(client, company, hardware_id="HW-1").json()
    assert send(client, first["agent_token"], [heartbeat()]).status_code == 200
    used = pool_of(company).used
    again = register(client, company, hardware_id="HW-1", hostname="web-01-reimaged", os_family="linux",
                     os_type="server", machine_type="virtual")
    assert again.status_code == 200
    body = again.json()
    assert body["endpoint_id"] == first["endpoint_id"]
    assert body["seat"] == first["seat"] == {"state": "licensed", "trial_ends_at": None}
    assert body["agent_token"] != first["agent_token"]
    assert send(client, first["agent_token"], [heartbeat()]).status_code == 401
    assert send(client, body["agent_token"], [heartbeat()]).json()["accepted"] == 1
    assert pool_of(company).used == used == 1
    assert SeatAssignment.objects.filter(company=company).count() == 1
    with tenant_context(company):
        endpoint = Endpoint.objects.get()
    assert (endpoint.hostname, endpoint.os_family, endpoint.os_type, endpoint.machine_type) == (
        "web-01-reimaged", "linux", "server", "virtual")
    assert AgentCredential.objects.filter(endpoint_id=endpoint.pk, revoked_at__isnull=True).count() == 1


def test_T7_surrounding_spaces_do_not_make_a_second_endpoint(client, company):
    first = register(client, company, hardware_id="4C4C4544-0042").json()
    again = register(client, company, hardware_id=" 4C4C4544-0042 \n")
    assert again.status_code == 200 and again.json()["endpoint_id"] == first["endpoint_id"]
    with tenant_context(company):
        assert list(Endpoint.objects.values_list("hardware_id", flat=True)) == ["4C4C4544-0042"]
    assert SeatAssignment.objects.filter(company=company).count() == 1


def test_T6_a_token_with_a_nul_byte_is_401_not_an_error(client, company):
    assert register(client, company).status_code == 201
    response = post(client, REGISTER, {"hardware_id": "x", "hostname": "h", "os_family": "windows",
                                       "os_type": "workstation", "machine_type": "physical"}, "abc\u0000def")
    assert response.status_code == 401
    assert send(client, "abc\u0000def", [heartbeat()]).status_code == 401


def test_T7_same_hardware_in_two_companies_is_two_endpoints(client, company, platform):
    other = make_company(parent=platform)
    a = register(client, company, hardware_id="HW-SHARED")
    b = register(client, other, hardware_id="HW-SHARED")
    assert a.status_code == b.status_code == 201
    assert a.json()["endpoint_id"] != b.json()["endpoint_id"]


# --- isolation (C6) -------------------------------------------------------------------------------------

def test_agent_token_of_one_company_never_writes_into_another(client, company, platform):
    other = make_company(parent=platform)
    other_endpoint, other_token = agent(client, other)
    _, token = agent(client, company)
    response = send(client, token, [heartbeat(), heartbeat(endpoint_id=other_endpoint)])
    assert response.json()["accepted"] == 1
    assert len(stored(company)) == 1 and stored(other) == []
    with tenant_context(other):
        assert Endpoint.objects.get(pk=other_endpoint).last_seen_at is None
    post(client, MAILBOXES, {"observed_at": timezone.now().isoformat(), "environment": "cloud",
                             "product": "email", "mailboxes": [{"id": "a@x.test", "primary": True}]}, token)
    with tenant_context(other):
        assert not MailboxMonth.objects.exists()
    assert send(client, other_token, [heartbeat()]).json()["accepted"] == 1
    assert len(stored(company)) == 1 and len(stored(other)) == 1


def test_agent_calls_pass_two_factor_enforcement(client, company):
    company.enforce_two_factor = True
    company.save(update_fields=["enforce_two_factor"])
    _, token = agent(client, company)
    assert send(client, token, [heartbeat()]).status_code == 200
    assert "sessionid" not in client.cookies


@pytest.mark.django_db(transaction=True)
def test_T7_concurrent_registrations_of_one_machine_make_one_endpoint(platform):
    company = make_company(parent=platform)
    token = install_token_for(company=company).token
    count = 8
    barrier = threading.Barrier(count)

    def register_once(_):
        try:
            barrier.wait(timeout=30)
            return agent_register(install_token=token, hardware_id="HW-RACE", hostname="h", os_family="linux",
                                  os_type="server", machine_type="virtual")
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(register_once, range(count)))
    assert len({r.endpoint_id for r in results}) == 1
    assert [r.created for r in results].count(True) == 1
    assert SeatAssignment.objects.filter(company=company).count() == 1
    assert pool_of(company).used == 1
    assert AgentCredential.objects.filter(company=company, revoked_at__isnull=True).count() == 1
    with tenant_context(company):
        assert Endpoint.objects.count() == 1


# --- mailbox inventory (U14, U15 inputs) ----------------------------------------------------------------

def mailbox_report(**fields):
    report = {"observed_at": timezone.now().isoformat(), "environment": "cloud", "product": "email",
              "mailboxes": [{"id": "ann@x.test", "primary": True, "object_class": "user", "emails_sent": 3,
                             "emails_received": 10},
                            {"id": "team@x.test", "primary": True, "object_class": "sharedMailbox"},
                            {"id": "bob@x.test", "primary": False, "emails_sent": 0, "emails_received": 0}]}
    report.update(fields)
    return report


def mailboxes(company):
    with tenant_context(company):
        return {row.mailbox_id: row for row in MailboxMonth.objects.all()}


def test_U15_mailbox_inventory_stored_for_the_observed_month(client, company):
    _, token = agent(client, company)
    response = post(client, MAILBOXES, mailbox_report(), token)
    assert response.status_code == 200 and response.json() == {"stored": 3}
    rows = mailboxes(company)
    ann = rows["ann@x.test"]
    assert (ann.product, ann.environment, ann.primary, ann.object_class) == ("email", "cloud", True, "user")
    assert (ann.emails_sent, ann.emails_received) == (3, 10)
    assert ann.month == timezone.now().date().replace(day=1)
    assert rows["team@x.test"].object_class == "sharedMailbox"
    assert rows["bob@x.test"].object_class == "" and rows["bob@x.test"].primary is False
    assert PendingRollup.objects.filter(company=company).exists()


def test_U15_reports_merge_latest_flags_and_sum_emails(client, company):
    _, token = agent(client, company)
    now = timezone.now()
    post(client, MAILBOXES, mailbox_report(observed_at=(now - dt.timedelta(hours=2)).isoformat()), token)
    later = {"id": "ann@x.test", "primary": False, "object_class": "group", "emails_sent": 1,
             "emails_received": 1}
    post(client, MAILBOXES, mailbox_report(observed_at=now.isoformat(), environment="on_premises",
                                           mailboxes=[later, later]), token)
    earlier = {"id": "ann@x.test", "primary": True, "object_class": "user", "emails_sent": 5}
    post(client, MAILBOXES, mailbox_report(observed_at=(now - dt.timedelta(hours=5)).isoformat(),
                                           mailboxes=[earlier]), token)
    ann = mailboxes(company)["ann@x.test"]
    # the latest report's flags win whatever the order of arrival; traffic adds up
    assert (ann.primary, ann.object_class, ann.environment) == (False, "group", "on_premises")
    assert (ann.emails_sent, ann.emails_received) == (3 + 2 + 5, 10 + 2)
    assert ann.last_observed_at == now


def test_U14_exchange_and_email_inventories_are_kept_apart(client, company):
    _, token = agent(client, company)
    post(client, MAILBOXES, mailbox_report(product="exchange", environment="on_premises"), token)
    post(client, MAILBOXES, mailbox_report(), token)
    with tenant_context(company):
        assert MailboxMonth.objects.filter(product="exchange").count() == 3
        assert MailboxMonth.objects.filter(product="email").count() == 3


def test_X2_bad_mailbox_report_names_fields_and_stores_nothing(client, company):
    _, token = agent(client, company)
    report = mailbox_report(environment="hybrid", product="teams")
    report["mailboxes"][1]["emails_sent"] = -1
    report["mailboxes"][2]["primary"] = "yes"
    response = post(client, MAILBOXES, report, token)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"environment", "product", "mailboxes[1].emails_sent", "mailboxes[2].primary"}
    assert mailboxes(company) == {}
    for wrong in (False, 0, [], {"a": 1}):
        report = mailbox_report()
        report["mailboxes"][0]["object_class"] = wrong
        response = post(client, MAILBOXES, report, token)
        assert response.status_code == 400 and set(response.json()["errors"]) == {"mailboxes[0].object_class"}
    assert mailboxes(company) == {}
    response = post(client, MAILBOXES, mailbox_report(observed_at="2026-10-05", mailboxes="none"), token)
    assert set(response.json()["errors"]) == {"observed_at", "mailboxes"}
    assert post(client, MAILBOXES, {}, "bad-token").status_code == 401


def test_openapi_schema_documents_the_agent_protocol(client, platform):
    schema = json.loads(client.get("/api/schema/?format=json").content)
    for path in ("/api/agent/v1/register", "/api/agent/v1/heartbeats", "/api/agent/v1/mailboxes"):
        assert path in schema["paths"], path
    assert set(schema["paths"]["/api/agent/v1/heartbeats"]["post"]["responses"]) >= {"200", "401", "413"}
    assert schema["components"]["securitySchemes"]["agentToken"]["scheme"] == "bearer"


# --- inputs a database cannot store are refused, not crashed on (T6, X2) ------------------------------

@pytest.mark.parametrize("hostname", ["web\u0000", "web\ud800"])
def test_T6_X2_text_that_cannot_be_stored_is_refused_naming_the_field(client, company, hostname):
    response = register(client, company, hostname=hostname)
    assert response.status_code == 400
    assert "hostname" in response.json()["errors"]
    with tenant_context(company):
        assert not Endpoint.objects.exists()


def test_T6_X2_deeply_nested_json_is_a_malformed_body(client, company):
    _, token = agent(client, company)
    response = post(client, HEARTBEATS, None, token, raw="[" * 200_000 + "]" * 200_000)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["errors"]["body"][0]


def test_U15_X2_mailbox_counts_are_bounded_and_sums_never_overflow(client, company):
    from usage.agent import MAX_EMAILS_PER_REPORT
    from usage.models import CompanyMonthUsage
    from usage.rollups import usage_company_rollup

    _, token = agent(client, company)
    too_many = mailbox_report(mailboxes=[{"id": "a\u0000", "primary": True, "emails_sent": 2**63},
                                         {"id": "b@x.test", "primary": True, "object_class": "u\u0000"}])
    response = post(client, MAILBOXES, too_many, token)
    assert response.status_code == 400
    assert {"mailboxes[0].id", "mailboxes[0].emails_sent", "mailboxes[1].object_class"} <= set(
        response.json()["errors"])
    assert mailboxes(company) == {}
    # the largest counts keep a valid figure however often they come, and the rollup still runs
    big = {"id": "ann@x.test", "primary": True, "object_class": "user", "emails_sent": MAX_EMAILS_PER_REPORT,
           "emails_received": MAX_EMAILS_PER_REPORT}
    assert post(client, MAILBOXES, mailbox_report(mailboxes=[big] * 10_000), token).status_code == 200
    assert mailboxes(company)["ann@x.test"].emails_sent == 10_000 * MAX_EMAILS_PER_REPORT
    with tenant_context(company):
        MailboxMonth.objects.update(emails_sent=2**63 - 10, emails_received=2**63 - 10)
    assert post(client, MAILBOXES, mailbox_report(mailboxes=[big]), token).status_code == 200
    assert mailboxes(company)["ann@x.test"].emails_sent == 10**15  # saturated, not overflowed
    with tenant_context(company):
        MailboxMonth.objects.update(emails_sent=2**63 - 10, emails_received=2**63 - 10)
    month = timezone.now().date().replace(day=1)
    usage_company_rollup(company_id=company.pk, months=[month])  # no bigint overflow in the figures
    assert CompanyMonthUsage.objects.filter(company=company, month=month).exists()
