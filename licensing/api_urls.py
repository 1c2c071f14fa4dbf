"""REST API routes of the licensing app, mounted under /api/v1/."""

urlpatterns: list = []
