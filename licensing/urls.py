from django.urls import path

from . import views

app_name = "licensing"
urlpatterns = [
    path("", views.LicensingOverviewView.as_view(), name="overview"),
    path("<int:company_id>/", views.CompanyLicensingView.as_view(), name="company"),
]
