"""Test data built through the services, so tests exercise the same rules as the product."""

import itertools

from companies.models import Company, CompanyType, Role, User
from companies.services import company_create, platform_ensure, user_create

_seq = itertools.count(1)
PASSWORD = "test-pass-123456"  # noqa: S105


def make_company(*, parent: Company | None = None, type: str = CompanyType.CUSTOMER,
                 name: str | None = None, **details) -> Company:
    parent = parent or platform_ensure()
    return company_create(parent=parent, name=name or f"Company {next(_seq)}", type=type, **details)


def make_partner(*, parent: Company | None = None, **details) -> Company:
    return make_company(parent=parent, type=CompanyType.PARTNER, **details)


def make_user(*, company: Company, role: str = Role.COMPANY_ADMIN, email: str | None = None) -> User:
    return user_create(company=company, email=email or f"user{next(_seq)}@example.test",
                       full_name="Test User", role=role, password=PASSWORD)
