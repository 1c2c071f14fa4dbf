"""What a user may open: one place for the navigation and the page checks (SPEC A2, C2)."""

from dataclasses import dataclass

from .models import CompanyType, Role, User


@dataclass(frozen=True)
class Page:
    key: str
    label: str
    url_name: str


PAGES = (
    Page("dashboard", "Dashboard", "dashboard"),
    Page("companies", "Companies", "companies:list"),
    Page("licensing", "Licensing", "licensing:overview"),
    Page("usage", "Usage", "usage:index"),
    Page("reports", "Reports", "reports:index"),
    Page("integrations", "Integrations", "integrations:index"),
    Page("my_company", "My Company", "companies:my-company"),
    Page("accounts", "Accounts", "accounts:list"),
)


def can_open(user: User, page_key: str) -> bool:
    if not user.is_authenticated:
        return False
    is_partner = user.company.type == CompanyType.PARTNER
    is_admin = user.role == Role.COMPANY_ADMIN
    rules = {
        "dashboard": True,
        "companies": is_partner,
        "licensing": is_partner and is_admin,
        "reports": True,
        "usage": True,  # company-level figures: C2/C3 allow them to every role and partner
        "my_company": True,
        "accounts": is_admin,
        "integrations": is_partner and is_admin,  # B1: partner administrators
    }
    return rules[page_key]


NETWORK_ROLES = {Role.COMPANY_ADMIN, Role.NETWORK_ADMIN, Role.SECURITY_ANALYST}


def can_view_network_role(user: User) -> bool:
    """A2: reporters work with reports only; the other roles see the network (C1-C3 still apply)."""
    return user.role in NETWORK_ROLES


def pages_for(user: User) -> list[Page]:
    return [page for page in PAGES if can_open(user, page.key)]
