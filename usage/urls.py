from django.urls import path

from . import views

app_name = "usage"
urlpatterns = [
    path("", views.UsageView.as_view(), name="index"),
    path("<int:company_id>/", views.UsageView.as_view(), name="company"),
]
