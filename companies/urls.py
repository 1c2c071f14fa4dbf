from django.urls import path

from . import import_views, views

app_name = "companies"
urlpatterns = [
    path("", views.CompanyListView.as_view(), name="list"),
    path("add/", views.CompanyCreateView.as_view(), name="add"),
    path("<int:company_id>/", views.CompanyDetailView.as_view(), name="detail"),
    path("<int:company_id>/edit/", views.CompanyEditView.as_view(), name="edit"),
    path("<int:company_id>/network/", views.CompanyNetworkView.as_view(), name="network"),
    path("<int:company_id>/<slug:action>/", views.CompanyActionView.as_view(), name="action"),
    path("mine/", views.MyCompanyView.as_view(), name="my-company"),
    path("import/", import_views.ImportUploadView.as_view(), name="import"),
    path("import/<int:job_id>/", import_views.ImportJobView.as_view(), name="import-job"),
    path("import/<int:job_id>/status/", import_views.ImportStatusView.as_view(), name="import-status"),
    path("import/<int:job_id>/apply/", import_views.ImportApplyView.as_view(), name="import-apply"),
]
