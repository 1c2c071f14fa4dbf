from django.urls import path

from . import views

app_name = "integrations"
urlpatterns = [
    path("", views.IntegrationsView.as_view(), name="index"),
    path("connection/", views.ConnectionSaveView.as_view(), name="connection"),
    path("connection/test/", views.ConnectionTestView.as_view(), name="test"),
    path("sync/", views.SyncAllView.as_view(), name="sync-all"),
    path("log/", views.SyncLogView.as_view(), name="log"),
    path("companies/<int:company_id>/mapping/", views.MappingSaveView.as_view(), name="mapping"),
    path("companies/<int:company_id>/sync/", views.CompanySyncView.as_view(), name="sync"),
    path("companies/<int:company_id>/plan/", views.PlanSetView.as_view(), name="plan"),
]
