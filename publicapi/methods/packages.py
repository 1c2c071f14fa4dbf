"""packages: getInstallationLinks. An install package belongs to one company and carries that
company's install token (T1); installing agents is part of managing the company's security (C1),
so the token is given only for companies whose network the key's company may see (C2, C3)."""

from django.conf import settings
from django.urls import reverse

from companies.access import access_company_network
from usage.agent import install_token_for

from ..fields import company_id
from ..jsonrpc import Params, RpcContext, rpc_method

PACKAGE_SUFFIX = " agent"


def package_name(company) -> str:
    return f"{company.name}{PACKAGE_SUFFIX}"


@rpc_method("packages", "getInstallationLinks")
def get_installation_links(ctx: RpcContext, params: dict) -> list[dict]:
    p = Params(params, allowed=("companyId", "packageName"))
    target = p.id("companyId")
    wanted = p.string("packageName", max_length=300)
    company = access_company_network(ctx.actor, ctx.company.pk if target is None else target)
    if wanted is not None and wanted != package_name(company):
        return []
    token = install_token_for(company=company)
    register = settings.CONSOLE_URL + reverse("agent:register")
    return [{
        "packageName": package_name(company),
        "companyName": company.name,
        "companyId": company_id(company),
        # GZ Console's agents register against the agent API with the company's install token
        "installToken": token.token,
        "registerUrl": register,
        "installLinkWindows": None, "installLinkMac": None, "installLinkMacArm": None, "installLinkLinux": None,
    }]
