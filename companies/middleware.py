"""The tenant of a request is the signed-in user's company.

Builds on django-tenants' connection API: the search path is set once per request (with
TENANT_LIMIT_SET_CALLS it is not re-sent on every cursor), and reset to public afterwards so the
next request on the same connection starts clean.
"""

from django.contrib.auth import logout
from django.db import connection

from .models import CompanyStatus


class CompanyTenantMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        connection.set_schema_to_public()
        request.tenant = None
        user = request.user
        if user.is_authenticated:
            company = user.company
            if company.status != CompanyStatus.ACTIVE:
                # H4: users of a suspended company cannot sign in, nor stay signed in
                logout(request)
            else:
                request.tenant = company
                connection.set_tenant(company)
        try:
            return self.get_response(request)
        finally:
            connection.set_schema_to_public()
