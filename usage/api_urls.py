"""REST API routes of the usage app, mounted under /api/v1/: getMonthlyUsage (R7).

The company id is matched as text so a malformed id answers the API's own 404, as a missing one does.
"""

from django.urls import re_path

from .api import UsageViewSet

app_name = "usage-api"

urlpatterns = [
    re_path(r"^companies/(?P<company_id>[^/]+)/usage/?$", UsageViewSet.as_view({"get": "list"}),
            name="months"),
    re_path(r"^companies/(?P<company_id>[^/]+)/usage/(?P<month>[^/]+)/?$",
            UsageViewSet.as_view({"get": "retrieve"}), name="month"),
]
