from django.urls import path

from . import schedule_views, views

app_name = "reports"
urlpatterns = [
    # the Monthly License Usage report (issue 6 part 1): page, exports, drill-down, column choice
    path("", views.ReportIndexView.as_view(), name="index"),
    path("export.csv", views.ReportCsvView.as_view(), name="csv"),
    path("export.pdf", views.ReportPdfView.as_view(), name="pdf"),
    path("endpoints", views.ReportDrillView.as_view(), name="drill"),
    path("columns", views.ReportColumnsView.as_view(), name="columns"),
    # email, schedules, runs and report history (issue 6 part 2)
    path("send", schedule_views.SendNowView.as_view(), name="send"),
    path("runs/<int:run_id>", schedule_views.RunDetailView.as_view(), name="run"),
    path("runs/<int:run_id>/retry", schedule_views.RunRetryView.as_view(), name="run-retry"),
    path("schedules/", schedule_views.ScheduleListView.as_view(), name="schedules"),
    path("schedules/new", schedule_views.ScheduleCreateView.as_view(), name="schedule-new"),
    path("schedules/recipients", schedule_views.ScheduleRecipientsView.as_view(), name="schedule-recipients"),
    path("schedules/<int:schedule_id>", schedule_views.ScheduleDetailView.as_view(), name="schedule"),
    path("schedules/<int:schedule_id>/pause", schedule_views.SchedulePauseView.as_view(), name="schedule-pause"),
    path("schedules/<int:schedule_id>/delete", schedule_views.ScheduleDeleteView.as_view(), name="schedule-delete"),
    path("history/", schedule_views.HistoryView.as_view(), name="history"),
    path("history/<int:file_id>/delete", schedule_views.HistoryDeleteView.as_view(), name="history-delete"),
    path("history/<int:file_id>/<str:fmt>", schedule_views.HistoryDownloadView.as_view(),
         name="history-download"),
]
