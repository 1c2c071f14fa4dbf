"""H6: importing companies and their endpoint inventory from a CSV file (docs/import.md).

Also X1 (the import writes audit events), X2 (every bad row is named with its line and field, and
nothing is half-written) and C6 (a file cannot reach, or reveal, companies outside the subtree).
"""

import re
import time

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.urls import reverse
from django_tenants.utils import tenant_context

from companies import imports
from companies.imports import (
    import_apply,
    import_job_create,
    import_progress,
    import_progress_set,
    import_request_apply,
    import_validate,
)
from companies.models import AuditEvent, Company, CompanyType, ImportJob, ImportStatus, Role
from companies.services import company_set_assist
from tests.factories import make_company, make_partner, make_user
from usage.telemetry.models import Endpoint

HEADER = ("company_name,company_type,parent_company,country,hostname,hardware_id,os_family,os_type,"
          "machine_type")

VALID = f"""{HEADER}
Sub MSP,partner,,DE,,,,,
Alpha,customer,Sub MSP,DE,alpha-pc1,HW-A1,windows,workstation,physical
Alpha,,Sub MSP,,alpha-srv,HW-A2,linux,server,virtual
Beta,,,FR,beta-mac,HW-B1,macos,workstation,physical
Existing Co,,,,ex-pc,HW-E1,windows,workstation,physical
Existing Co,,,,ex-old,HW-E0,windows,workstation,physical
"""


@pytest.fixture
def partner(platform):
    return make_partner(parent=platform, name="Acme MSP")


@pytest.fixture
def admin(partner):
    return make_user(company=partner, role=Role.COMPANY_ADMIN)


@pytest.fixture
def existing(partner):
    """A customer the partner already has, with one machine already registered."""
    company = make_company(parent=partner, name="Existing Co")
    with tenant_context(company):
        Endpoint.objects.create(hardware_id="HW-E0", hostname="ex-old", os_family="windows",
                                os_type="workstation", machine_type="physical")
    return company


def _upload(text: str | bytes, name: str = "rmm.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode() if isinstance(text, str) else text, "text/csv")


def _checked(admin, text) -> ImportJob:
    job = import_job_create(actor=admin, upload=_upload(text))
    return import_validate(job=ImportJob.objects.select_related("company").get(pk=job.pk))


def _imported(admin, text, **kwargs) -> ImportJob:
    job = _checked(admin, text)
    assert job.status == ImportStatus.READY, job.errors
    import_request_apply(actor=admin, job=job)
    return import_apply(job=job, **kwargs)


def _hardware_ids(company: Company) -> set[str]:
    with tenant_context(company):
        return set(Endpoint.objects.values_list("hardware_id", flat=True))


# --- the dry run ---------------------------------------------------------------------------------------

def test_H6_X2_validation_reports_every_bad_row_with_line_and_field(admin, partner, platform):
    make_company(parent=partner, name="Some Customer")
    before = Company.objects.count()
    text = f"""{HEADER}
Good One,,,,,,,,
Bad Type,reseller,,,,,,,
Bad Country,,,XX,,,,,

No Hardware,,,,pc-1,,windows,workstation,physical
First Owner,,,,pc-2,HW-1,windows,workstation,physical
Second Owner,,,,pc-3,HW-1,windows,workstation,physical
Orphan,,Nowhere Partners,,,,,,
Under Customer,,Some Customer,,,,,,
Bad Os,,,,pc-4,HW-4,beos,workstation,physical
Too Wide,,,,,,,,,extra
,customer,,,,,,,
"""
    job = _checked(admin, text)

    assert job.status == ImportStatus.FAILED
    found = [(e["line"], e["field"]) for e in job.errors]
    assert found == [
        (3, "company_type"), (4, "country"), (6, "hardware_id"), (8, "hardware_id"),
        (9, "parent_company"), (10, "parent_company"), (11, "os_family"), (12, ""), (13, "company_name"),
    ]
    messages = {e["line"]: e["message"] for e in job.errors}
    assert "'reseller' is not a company type" in messages[3]
    assert "'XX' is not an ISO 3166-1 alpha-2 country code" in messages[4]
    assert "Enter the hardware id" in messages[6]
    assert "also on line 7, for First Owner" in messages[8]
    assert "was not found" in messages[9]
    assert "'Some Customer' is a customer" in messages[10]
    assert "'beos' is not the os_family" in messages[11]
    assert "10 fields; the header has 9" in messages[12]
    assert Company.objects.count() == before  # a dry run stores no company


def test_H6_C6_parent_outside_the_subtree_is_simply_not_found(admin, partner, platform):
    rival = make_partner(parent=platform, name="Rival MSP")
    make_company(parent=rival, name="Rival Customer")
    text = f"""{HEADER}
Under Rival,,Rival MSP,,,,,,
Under Platform,,{platform.name},,,,,,
Under Nothing,,No Such Partner,,,,,,
"""
    job = _checked(admin, text)

    messages = [e["message"] for e in job.errors]
    assert messages == [
        "'Rival MSP' was not found among your companies or on an earlier line of this file.",
        f"'{platform.name}' was not found among your companies or on an earlier line of this file.",
        "'No Such Partner' was not found among your companies or on an earlier line of this file.",
    ]
    # the page shows the file's own words back, and nothing about companies outside the subtree
    assert "Rival Customer" not in str(job.errors) and "Rival Customer" not in str(job.preview)


def test_H6_header_with_bom_any_case_and_semicolons_is_accepted(admin):
    text = ("\ufeff Company_Name ;HOSTNAME;Hardware_ID;os_family;os_type;machine_type\r\n"
            "Gamma;g-1;HW-G1;Windows;Server;Virtual\r\n")
    job = _checked(admin, text.encode("utf-8"))

    assert job.status == ImportStatus.READY, job.errors
    assert job.preview["companies_new"] == 1 and job.preview["endpoints_new"] == 1


def test_H6_X2_unknown_and_missing_columns_are_named(admin):
    job = _checked(admin, "name,hostname,serial\nAcme,pc,123\n")

    assert job.status == ImportStatus.FAILED
    messages = [(e["line"], e["field"], e["message"]) for e in job.errors]
    assert messages[0][:2] == (1, "") and "Unknown columns: name, serial." in messages[0][2]
    assert (1, "company_name", "The company_name column is required.") in messages
    assert (1, "hardware_id", "The hardware_id column is required when the file has hostnames.") in messages


def test_H6_X2_file_limits_and_encoding_are_clear_errors(admin, monkeypatch):
    with pytest.raises(ValidationError, match="at most 5 MB"):
        import_job_create(actor=admin, upload=_upload(b"company_name\n" + b"x" * (5 * 1024 * 1024)))
    with pytest.raises(ValidationError, match="Line 3 is not UTF-8 text"):
        import_job_create(actor=admin, upload=_upload("company_name\nCafé\n".encode() + b"Caf\xe9\n"))
    with pytest.raises(ValidationError, match="empty"):
        import_job_create(actor=admin, upload=_upload(b"\xef\xbb\xbf \n"))

    monkeypatch.setattr(imports, "MAX_ROWS", 3)
    job = _checked(admin, "company_name\nA\nB\nC\nD\nE\n")
    assert [(e["line"], e["field"]) for e in job.errors] == [(5, "")]
    assert "more than 3 rows" in job.errors[0]["message"]


def test_H6_C3_no_endpoints_into_a_company_whose_network_is_hidden(admin, partner):
    private = make_company(parent=partner, name="Private Co")
    company_set_assist(actor=admin, company=private, on=False)
    text = f"""{HEADER}
Private Co,,,,p-1,HW-P1,windows,workstation,physical
Private Co,,,,,,,,
"""
    job = _checked(admin, text)

    assert [(e["line"], e["field"]) for e in job.errors] == [(2, "hostname")]
    assert "cannot see its network" in job.errors[0]["message"]


def test_H6_T7_machine_already_in_another_company_is_reported(admin, existing):
    text = f"""{HEADER}
Existing Co,,,,,,,,
Beta,,,,moved-pc,HW-E0,windows,workstation,physical
Gamma,,,ZZ,,,,,
"""
    job = _checked(admin, text)

    assert [(e["line"], e["field"]) for e in job.errors] == [(3, "hardware_id"), (4, "country")]
    assert job.errors[0]["message"] == (
        "'HW-E0' is already an endpoint of Existing Co; a machine belongs to one company.")


# --- the import ----------------------------------------------------------------------------------------

def test_H6_X1_valid_file_creates_companies_under_their_parents_and_endpoints_in_their_schemas(
        admin, partner, existing):
    job = _checked(admin, VALID)
    assert job.preview["companies_new"] == 3 and job.preview["companies_existing"] == 1
    assert job.preview["endpoints_new"] == 4 and job.preview["endpoints_existing"] == 1

    job = _imported_from(admin, job)

    assert job.status == ImportStatus.DONE
    assert (job.companies_created, job.companies_existing) == (3, 1)
    assert (job.endpoints_created, job.endpoints_existing) == (4, 1)
    sub = Company.objects.get(name="Sub MSP")
    alpha = Company.objects.get(name="Alpha")
    beta = Company.objects.get(name="Beta")
    assert (sub.parent, sub.type, sub.country) == (partner, CompanyType.PARTNER, "DE")
    assert (alpha.parent, alpha.type) == (sub, CompanyType.CUSTOMER)
    assert alpha.lineage == f"{sub.lineage}{alpha.pk}/"
    assert (beta.parent, beta.country) == (partner, "FR")
    assert _hardware_ids(alpha) == {"HW-A1", "HW-A2"}
    assert _hardware_ids(beta) == {"HW-B1"}
    assert _hardware_ids(existing) == {"HW-E0", "HW-E1"}
    assert _hardware_ids(sub) == set()
    with tenant_context(alpha):
        server = Endpoint.objects.get(hardware_id="HW-A2")
    assert (server.hostname, server.os_family, server.os_type, server.machine_type) == (
        "alpha-srv", "linux", "server", "virtual")
    # X1: each company the import created has its creation event, by the partner's administrator
    created = AuditEvent.objects.filter(action="company.create", company__in=[sub, alpha, beta])
    assert sorted(created.values_list("object_label", "actor_id")) == sorted(
        [("Sub MSP", admin.pk), ("Alpha", admin.pk), ("Beta", admin.pk)])
    summary = AuditEvent.objects.get(action="import.apply", company=partner)
    assert summary.after["companies_created"] == 3 and summary.after["endpoints_created"] == 4


def _imported_from(admin, job, **kwargs):
    import_request_apply(actor=admin, job=job)
    return import_apply(job=job, **kwargs)


def test_H6_rerunning_the_same_file_creates_no_duplicates(admin, partner, existing):
    _imported(admin, VALID)
    companies, alpha = Company.objects.count(), Company.objects.get(name="Alpha")

    again = _checked(admin, VALID)
    assert again.preview["companies_new"] == 0 and again.preview["endpoints_new"] == 0
    again = _imported_from(admin, again)

    assert (again.companies_created, again.endpoints_created) == (0, 0)
    assert (again.companies_existing, again.endpoints_existing) == (4, 5)
    assert Company.objects.count() == companies
    assert _hardware_ids(alpha) == {"HW-A1", "HW-A2"}


def test_H6_one_bad_row_imports_nothing(admin, partner):
    before = Company.objects.count()
    job = _checked(admin, VALID.replace("HW-B1,macos", "HW-B1,amiga"))

    assert job.status == ImportStatus.FAILED and [e["line"] for e in job.errors] == [5]
    with pytest.raises(ValidationError):
        import_request_apply(actor=admin, job=job)
    with pytest.raises(ValidationError):
        import_apply(job=job)
    assert Company.objects.count() == before


def test_H6_X2_a_failure_midway_stores_nothing(admin, partner, existing, monkeypatch):
    before = set(Company.objects.values_list("pk", flat=True))
    real = imports._endpoints_create
    calls = []

    def failing(**kwargs):
        calls.append(kwargs["company"].name)
        if len(calls) == 2:  # after Sub MSP, Alpha and Alpha's endpoints were written
            raise RuntimeError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(imports, "_endpoints_create", failing)
    job = _checked(admin, VALID)
    import_request_apply(actor=admin, job=job)
    with pytest.raises(RuntimeError):
        import_apply(job=job)

    job.refresh_from_db()
    assert calls == ["Alpha", "Beta"]
    assert job.status == ImportStatus.FAILED and "nothing was imported" in job.failure
    assert set(Company.objects.values_list("pk", flat=True)) == before
    assert not AuditEvent.objects.filter(action="company.create",
                                         object_label__in=["Alpha", "Sub MSP"]).exists()


def test_H6_file_changed_tree_between_check_and_import_fails_whole(admin, partner):
    job = _checked(admin, f"{HEADER}\nNew One,,,,,,,,\nNew Two,,Sub,,,,,,\n")
    assert job.status == ImportStatus.FAILED  # "Sub" does not exist yet
    sub = make_partner(parent=partner, name="Sub")
    job = _checked(admin, f"{HEADER}\nNew One,,,,,,,,\nNew Two,,Sub,,,,,,\n")
    assert job.status == ImportStatus.READY
    Company.objects.filter(pk=sub.pk).update(type=CompanyType.CUSTOMER)  # as if changed meanwhile

    job = _imported_from(admin, job)

    assert job.status == ImportStatus.FAILED and "no longer passes its check" in job.failure
    assert [(e["line"], e["field"]) for e in job.errors] == [(3, "parent_company")]
    assert not Company.objects.filter(name="New One").exists()


# --- pages, access and progress -------------------------------------------------------------------------

def test_H6_C6_another_partners_job_answers_404_on_every_route(client, admin, partner, platform):
    job = _checked(admin, VALID)
    rival_admin = make_user(company=make_partner(parent=platform, name="Rival MSP"))
    routes = [("get", "companies:import-job"), ("get", "companies:import-status"),
              ("post", "companies:import-apply")]

    client.force_login(admin)
    assert client.get(reverse("companies:import-job", args=[job.pk])).status_code == 200
    for viewer in (rival_admin, make_user(company=partner, role=Role.REPORTER)):
        client.force_login(viewer)
        for method, name in routes:
            for job_id in (job.pk, 999_999):
                response = getattr(client, method)(reverse(name, args=[job_id]))
                assert response.status_code == 404, (viewer, name, job_id)
                assert b"Acme MSP" not in response.content and b"Sub MSP" not in response.content
    job.refresh_from_db()
    assert job.status == ImportStatus.READY
    assert not Company.objects.filter(name="Sub MSP").exists()


def test_H6_only_partner_administrators_open_the_upload_page(client, admin, partner):
    client.force_login(admin)
    assert client.get(reverse("companies:import")).status_code == 200
    client.force_login(make_user(company=partner, role=Role.NETWORK_ADMIN))
    assert client.get(reverse("companies:import")).status_code == 403
    client.force_login(make_user(company=make_company(parent=partner)))
    assert client.get(reverse("companies:import")).status_code == 403


def test_H6_pages_show_the_dry_run_errors_and_the_import_button(client, admin):
    client.force_login(admin)
    bad = client.post(reverse("companies:import"), {"file": _upload(f"{HEADER}\nX,robot,,,,,,,\n")})
    assert bad.status_code == 302
    job = ImportJob.objects.get(pk=int(bad.url.rstrip("/").rsplit("/", 1)[-1]))
    import_validate(job=job)
    page = client.get(bad.url).content.decode()
    assert "1 problem found" in page and "<td>2</td><td>company_type</td>" in page

    good = _checked(admin, VALID.replace("Existing Co", "Delta"))
    page = client.get(reverse("companies:import-job", args=[good.pk])).content.decode()
    assert 'data-testid="import-apply"' in page and "Sub MSP" in page

    not_utf8 = client.post(reverse("companies:import"), {"file": _upload(b"company_name\n\xff\n")})
    assert not_utf8.status_code == 400
    assert "Line 2 is not UTF-8 text" in not_utf8.content.decode()


def _status(client, job_id, **headers) -> tuple[dict, object]:
    response = client.get(reverse("companies:import-status", args=[job_id]), **headers)
    assert response.status_code == 200
    html = response.content.decode()
    fields = dict(re.findall(r'data-(status|done|total)="([^"]*)"', html))
    return fields, response


@pytest.mark.django_db(transaction=True)
def test_H6_progress_is_readable_while_the_import_transaction_is_open(client, platform):
    partner = make_partner(parent=platform, name="Acme MSP")
    admin = make_user(company=partner)
    rows = "".join(f"Cust {i},,,,pc-{i},HW-{i},windows,workstation,physical\n" for i in range(5))
    # The job is made directly, not by import_job_create: that queues the dry run and the import
    # for the suite's Celery worker (if one is up), which would race this test's own run.
    job = ImportJob.objects.create(company=partner, created_by=admin, file_name="rmm.csv",
                                   csv_text=f"{HEADER}\n{rows}")
    job = import_validate(job=ImportJob.objects.select_related("company").get(pk=job.pk))
    assert job.status == ImportStatus.READY, job.errors
    client.force_login(admin)
    seen = []

    def progress(done, total):
        import_progress_set(job_id=job.pk, done=done, total=total)
        fields, response = _status(client, job.pk, HTTP_HX_REQUEST="true")
        # another connection: the companies are not committed yet, but the progress is readable
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM companies_company WHERE name LIKE 'Cust %%'")
                committed = cursor.fetchone()[0]
        finally:
            other.close()
        seen.append((fields, committed, "hx-trigger" in response.content.decode()))

    import_apply(job=job, progress=progress)

    assert {"status": "importing", "done": "2", "total": "5"} in [s[0] for s in seen]
    assert all(committed == 0 for _, committed, _ in seen)
    assert all(polling for _, _, polling in seen)
    fields, response = _status(client, job.pk, HTTP_HX_REQUEST="true")
    assert fields == {"status": "done", "done": "5", "total": "5"}
    assert response["HX-Refresh"] == "true" and "hx-trigger" not in response.content.decode()
    assert Company.objects.filter(name__startswith="Cust ").count() == 5


def test_H6_status_reports_live_progress_from_the_cache(client, admin):
    job = _checked(admin, VALID.replace("Existing Co", "Delta"))
    import_request_apply(actor=admin, job=job)
    import_progress_set(job_id=job.pk, done=3, total=7)
    job.refresh_from_db()

    assert import_progress(job=job) == {"status": "importing", "done": 3, "total": 7, "percent": 42}
    client.force_login(admin)
    fields, _ = _status(client, job.pk)
    assert fields == {"status": "importing", "done": "3", "total": "7"}


@pytest.mark.django_db(transaction=True)
def test_H6_import_runs_through_the_real_worker_to_done(client, platform, celery_worker_process):
    partner = make_partner(parent=platform, name="Acme MSP")
    admin = make_user(company=partner)
    client.force_login(admin)

    upload = _upload(VALID.replace("Existing Co", "Delta"))
    response = client.post(reverse("companies:import"), {"file": upload})
    job = ImportJob.objects.get(pk=int(response.url.rstrip("/").rsplit("/", 1)[-1]))
    assert _wait_for(job, {ImportStatus.READY, ImportStatus.FAILED}).status == ImportStatus.READY
    client.post(reverse("companies:import-apply", args=[job.pk]))
    job = _wait_for(job, {ImportStatus.DONE, ImportStatus.FAILED})

    assert job.status == ImportStatus.DONE, job.failure
    assert (job.companies_created, job.companies_existing) == (4, 0)
    assert (job.endpoints_created, job.endpoints_existing) == (5, 0)
    assert _hardware_ids(Company.objects.get(name="Delta")) == {"HW-E1", "HW-E0"}
    fields, _ = _status(client, job.pk)
    assert fields == {"status": "done", "done": "6", "total": "6"}


def _wait_for(job: ImportJob, statuses: set, seconds: float = 60) -> ImportJob:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in statuses:
            return job
        time.sleep(0.2)
    pytest.fail(f"the import stayed {job.status}")


def test_H6_validating_2000_rows_issues_no_per_row_queries(admin, partner, django_assert_max_num_queries):
    existing = [make_company(parent=partner, name=f"Old {i}") for i in range(5)]
    with tenant_context(existing[1]):  # row 1 of the file puts HW-1 in "Old 1"
        Endpoint.objects.create(hardware_id="HW-1", hostname="pc-1", os_family="windows",
                                os_type="workstation", machine_type="physical")
    lines = [HEADER, "Region,partner,,,,,,,"]
    for i in range(2_000):
        company = f"Old {i % 5}" if i % 2 else f"New {i % 20}"
        parent = "" if i % 2 else "Region"
        lines.append(f"{company},,{parent},US,pc-{i},HW-{i},windows,workstation,physical")
    job = import_job_create(actor=admin, upload=_upload("\n".join(lines) + "\n"))
    job = ImportJob.objects.select_related("company").get(pk=job.pk)

    with django_assert_max_num_queries(8):
        job = import_validate(job=job)

    assert job.status == ImportStatus.READY, job.errors[:3]
    assert job.preview["rows"] == 2_001
    assert job.preview["companies_new"] == 11 and job.preview["companies_existing"] == 5
    assert job.preview["endpoints_new"] == 1_999 and job.preview["endpoints_existing"] == 1


def test_H6_an_import_leaves_half_the_lock_table_to_the_rollup_workers(partner):
    """One file's new companies hold their schema's locks until the import commits; the limit keeps them
    within half of the server's shared lock table, measured against what creating one company really
    holds, so two rollup workers' batches (usage.rollups.BATCH_SIZE companies, ~10 locks each) still fit."""
    from django.db import connection

    from usage.rollups import BATCH_SIZE

    def held() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()")
            return cursor.fetchone()[0]
    before = held()
    make_company(parent=partner, name="Lock probe")
    per_company = held() - before
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('max_locks_per_transaction')::int"
                       " * current_setting('max_connections')::int")
        lock_slots = cursor.fetchone()[0]

    limit = imports.import_company_limit()
    assert per_company > 5 and 1 <= limit
    assert limit * per_company <= lock_slots // 2
    assert limit * per_company + 2 * BATCH_SIZE * 10 <= lock_slots
