"""The Companies page with 5,000 companies, against the same page with 50 (baseline)."""

import statistics
import time

import pytest
from django.db.models import CharField, Value
from django.db.models.functions import Cast, Concat
from django.test import Client

from companies.models import Company, CompanyType, Role
from companies.services import company_create, platform_ensure, user_create

ROUNDS = 15


def _add_rows(parent: Company, start: int, end: int) -> None:
    # rows only: the page never opens a company's schema, so none is created
    Company.objects.bulk_create([
        Company(name=f"Customer {i:05d}", type=CompanyType.CUSTOMER, parent=parent,
                schema_name=f"pagebench_{i}", depth=parent.depth + 1) for i in range(start, end)])
    Company.objects.filter(lineage="").update(
        lineage=Concat(Value(parent.lineage), Cast("id", CharField()), Value("/")))


def _median_ms(client: Client, url: str) -> float:
    client.get(url)  # warm
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        assert client.get(url).status_code == 200
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


@pytest.mark.django_db
def test_companies_page_with_5000_companies(stopwatch):
    partner = company_create(parent=platform_ensure(), name="Page bench partner", type=CompanyType.PARTNER)
    user = user_create(company=partner, email="pagebench@example.test", full_name="Bench",
                       role=Role.COMPANY_ADMIN, password="bench-pass-123456")
    client = Client()
    client.force_login(user)
    _add_rows(partner, 0, 50)
    urls = {"first page": "/companies/", "page 2": "/companies/?page=2",
            "search": "/companies/?search=0042", "filter": "/companies/?type=customer&assist=on"}
    baseline = {name: _median_ms(client, url) for name, url in urls.items()}
    _add_rows(partner, 50, 5000)
    large = {name: _median_ms(client, url) for name, url in urls.items()}
    stopwatch.report("Companies page, 5,000 companies vs 50 (median of 15)", [
        (name, f"{large[name]:.1f} ms vs {baseline[name]:.1f} ms  ({large[name] / baseline[name]:.2f}x)")
        for name in urls])
