"""REST API routes of the usage app, mounted under /api/v1/."""

urlpatterns: list = []
