from django.conf import settings
from django.urls import include, path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView

from companies.views import DashboardView

from .health import healthz

urlpatterns = [
    path("", DashboardView.as_view(), name="dashboard"),
    path("healthz", healthz, name="healthz"),
    path("accounts/", include("companies.account_urls")),
    path("companies/", include("companies.urls")),
    path("licensing/", include("licensing.urls")),
    path("reports/", include("reports.urls")),
    path("usage/", include("usage.urls")),
    path("integrations/", include("integrations.urls")),
    path("api/v1/", include("companies.api_urls")),
    path("api/v1/", include("licensing.api_urls")),
    path("api/v1/", include("usage.api_urls")),
    path("api/agent/v1/", include("usage.agent_urls")),
    path("api/", include("publicapi.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
]
# Company logos are the only uploads; their names are random, so serving them from the app is
# enough at this size (a proxy can take over MEDIA_URL in front of gunicorn).
urlpatterns += [re_path(r"^media/(?P<path>logos/[\w.-]+)$", serve, {"document_root": settings.MEDIA_ROOT})]
