"""The JSON-RPC 2.0 partner API, mounted at /api/ (docs/jsonrpc-api.md)."""

from django.urls import path

from . import methods  # noqa: F401 - registers the methods
from .jsonrpc import jsonrpc_view, report_download_view

app_name = "jsonrpc"

urlpatterns = [
    path("v1.0/jsonrpc/reports/download/<int:file_id>.<str:fmt>", report_download_view, name="report-download"),
    path("v1.0/jsonrpc/<str:api>", jsonrpc_view, {"version": "v1.0"}, name="v1.0"),
    path("v1.1/jsonrpc/<str:api>", jsonrpc_view, {"version": "v1.1"}, name="v1.1"),
]
