"""/api/agent/v1/: the agent protocol (SPEC "Agent protocol v1", docs/agent-api.md)."""

from django.urls import path

from .agent_api import HeartbeatsView, MailboxesView, RegisterView

app_name = "agent"

urlpatterns = [
    path("register", RegisterView.as_view(), name="register"),
    path("heartbeats", HeartbeatsView.as_view(), name="heartbeats"),
    path("mailboxes", MailboxesView.as_view(), name="mailboxes"),
]
