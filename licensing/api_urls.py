"""REST API routes of the licensing app, mounted under /api/v1/: the catalogue, and each company's
licensing, trials, selections and MDR contact details."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api

app_name = "licensing-api"

router = SimpleRouter()
router.register("licensing", api.LicensingViewSet, basename="licensing")

urlpatterns = [
    path("catalogue/", api.CatalogueViewSet.as_view({"get": "read"}), name="catalogue"),
    *router.urls,
]
