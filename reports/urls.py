from django.urls import path

from . import views

app_name = "reports"
urlpatterns = [
    # the Monthly License Usage report (issue 6 part 1): page, exports, drill-down, column choice
    path("", views.ReportIndexView.as_view(), name="index"),
    path("export.csv", views.ReportCsvView.as_view(), name="csv"),
    path("export.pdf", views.ReportPdfView.as_view(), name="pdf"),
    path("endpoints", views.ReportDrillView.as_view(), name="drill"),
    path("columns", views.ReportColumnsView.as_view(), name="columns"),
]
