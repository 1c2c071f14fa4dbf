"""/api/v1/ routes of the companies app: companies, accounts, API keys."""

from rest_framework.routers import SimpleRouter

from . import api

app_name = "companies-api"

router = SimpleRouter()
router.register("companies", api.CompanyViewSet, basename="company")
router.register("accounts", api.AccountViewSet, basename="account")
router.register("api-keys", api.ApiKeyViewSet, basename="api-key")

urlpatterns = router.urls
