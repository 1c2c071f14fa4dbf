"""C6 over every page route, including ones added later: each route with an id in its path is called
with the ids of another company's objects, by GET and POST, as a partner administrator and as a
customer administrator. Every answer is a refusal (403/404/405) and no body names the other company.
A new route whose id parameter is not in ID_SOURCES fails here until its objects are added."""

import datetime as dt

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from companies.models import Company, ImportJob, User
from companies.services import api_key_create
from reports.models import ReportFile, ReportRun, ReportSchedule

pytestmark = pytest.mark.django_db

VIEWERS = ("admin@contoso.example", "admin@adatum.example", "reporter@contoso.example")
REFUSED = {401, 403, 404, 405}  # 401: the key-authenticated JSON-RPC download without a key
NOV = dt.date(2026, 11, 1)


def _routes():
    """(name, {param: converter}) of every named route with a parameter."""
    def walk(patterns, namespace=None):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, pattern.namespace or namespace)
            elif isinstance(pattern, URLPattern) and pattern.name and getattr(pattern.pattern, "converters", None):
                name = f"{namespace}:{pattern.name}" if namespace else pattern.name
                yield name, dict(pattern.pattern.converters)
    return list(walk(get_resolver().url_patterns))


# fixed values for parameters that are not ids of objects
FIXED = {"action": ["suspend", "reactivate", "assist-off", "deactivate", "reset-two-factor", "delete"],
         "fmt": ["csv", "pdf"], "api": None, "uidb64": None, "token": None}
# routes that carry no object of a company in their path (the JSON-RPC endpoints take the key's
# company; the set-password link is signed)
NOT_OBJECT_ROUTES = {"jsonrpc:v1.0", "jsonrpc:v1.1", "accounts:set-password"}


@pytest.fixture
def world(platform):
    call_command("seed_demo", quiet_logins=True)
    fabrikam = Company.objects.get(name="Fabrikam IT Services")
    coho = Company.objects.get(name="Coho Winery")
    frank = User.objects.get(email="admin@fabrikam.example")
    api_key_create(actor=frank, company=fabrikam, name="fabrikam key", scopes=["companies"])
    job = ImportJob.objects.create(company=fabrikam, created_by=frank, file_name="coho.csv", csv_text="x")
    schedule = ReportSchedule.objects.create(owner=fabrikam, company=coho, name="Coho monthly", created_by=frank)
    run = ReportRun.objects.create(owner=fabrikam, company=coho, schedule=schedule, kind="endpoint", month=NOV)
    report = ReportFile.objects.create(owner=fabrikam, company=coho, built_for=frank, kind="endpoint", month=NOV,
                                       source="manual", title="Coho November", csv_file="x.csv",
                                       pdf_file="x.pdf", csv_name="x.csv", pdf_name="x.pdf")
    foreign = [fabrikam, coho, Company.objects.get(name="Litware Resellers"),
               Company.objects.get(name="Tailspin Toys")]
    return {
        "ids": {
            "company_id": [c.pk for c in foreign],
            "user_id": list(User.objects.filter(company__in=foreign).values_list("pk", flat=True)),
            "job_id": [job.pk],
            "run_id": [run.pk],
            "schedule_id": [schedule.pk],
            "file_id": [report.pk],
        },
        "names": [c.name for c in foreign] + list(User.objects.filter(company__in=foreign)
                                                   .values_list("email", flat=True)),
    }


def _calls(routes, ids):
    for name, converters in routes:
        if name in NOT_OBJECT_ROUTES:
            continue
        id_params = [p for p in converters if p not in FIXED]
        assert all(p in ids for p in id_params), f"{name}: add its objects to the census ({id_params})"
        for id_param in id_params:
            for value in ids[id_param]:
                fixed_choices = [FIXED[p] or ["x"] for p in converters if p in FIXED]
                combos = [{}]
                for param, choices in zip([p for p in converters if p in FIXED], fixed_choices, strict=True):
                    combos = [{**c, param: choice} for c in combos for choice in choices]
                for combo in combos:
                    kwargs = {p: ids[p][0] for p in id_params} | {id_param: value} | combo
                    yield name, reverse(name, kwargs=kwargs)


@pytest.mark.parametrize("viewer", VIEWERS)
def test_C6_every_route_refuses_another_companys_ids(client, world, viewer):
    client.force_login(User.objects.get(email=viewer))
    calls = list(_calls(_routes(), world["ids"]))
    assert len({name for name, _ in calls}) >= 20  # the census reaches the routes it should
    for name, path in calls:
        for method in ("get", "post"):
            response = getattr(client, method)(path)
            body = response.content.decode(errors="replace") if not getattr(response, "streaming", False) else ""
            assert response.status_code in REFUSED, (viewer, method, name, path, response.status_code)
            leaked = [n for n in world["names"] if n in body]
            assert not leaked, (viewer, method, name, path, leaked)


def test_C6_query_string_routes_refuse_another_companys_ids(client, world):
    """The report page, its exports, drill-down, sending and the usage and licensing pages take the
    company in the query string or path: another company's id is refused the same way."""
    client.force_login(User.objects.get(email="admin@contoso.example"))
    for company_id in world["ids"]["company_id"]:
        for name in ("reports:index", "reports:csv", "reports:pdf", "reports:drill", "reports:send"):
            response = client.get(f"{reverse(name)}?company={company_id}&month=2026-11&row={company_id}"
                                  "&column=licensed_endpoints")
            body = b"".join(response.streaming_content) if response.streaming else response.content
            assert response.status_code in REFUSED, (name, company_id, response.status_code)
            assert not [n for n in world["names"] if n.encode() in body], (name, company_id)
