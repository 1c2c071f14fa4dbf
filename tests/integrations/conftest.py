import datetime as dt
from types import SimpleNamespace

import pytest

from integrations.services import connection_save, month_start
from tests.factories import make_company, make_partner, make_user
from tests.integrations.fake_connectwise import FakeConnectWise, serve
from usage.models import CompanyMonthUsage

AGREEMENT_TYPE = "Managed Security"
PRODUCT = "GZ-ENDPOINT"


def _served(fake: FakeConnectWise):
    server, thread = serve(fake)
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def cw():
    yield from _served(FakeConnectWise())


@pytest.fixture
def cw_other():
    """A second partner's ConnectWise: its own keys, and ids numbered as the first one's are (ids of two
    PSAs collide, so an id is only meaningful with the connection it came from)."""
    yield from _served(FakeConnectWise(company_id="lambdamsp", public_key="pub-lambda", private_key="priv-lambda",
                                       client_id="client-lambda"))


def set_active(company, month: dt.date, count: int) -> None:
    """What the rollups store for a company-month (usage/rollups.py)."""
    CompanyMonthUsage.objects.update_or_create(
        company=company, month=month, defaults={"active_endpoints": count},
        create_defaults={"active_endpoints": count, "lineage": company.lineage})


@pytest.fixture
def billing(platform, cw):
    partner = make_partner(parent=platform, name="Kappa MSP")
    admin = make_user(company=partner)
    alpha = make_company(parent=partner, name="Alpha Dental")
    beta = make_company(parent=partner, name="Beta Law")
    connection = connection_save(actor=admin, partner=partner, site=cw.url, psa_company_id=cw.company_id,
                                 public_key=cw.public_key, private_key=cw.private_key, client_id=cw.client_id)
    cw_alpha = cw.add_company("AlphaDental", "Alpha Dental")
    cw_beta = cw.add_company("BetaLaw", "Beta Law")
    return SimpleNamespace(
        partner=partner, admin=admin, alpha=alpha, beta=beta, connection=connection,
        cw_alpha=cw_alpha, cw_beta=cw_beta,
        alpha_agreement=cw.add_agreement(cw_alpha, AGREEMENT_TYPE),
        beta_agreement=cw.add_agreement(cw_beta, AGREEMENT_TYPE),
        product=cw.add_product(PRODUCT),
        month=month_start(dt.datetime.now(dt.UTC)),
    )
