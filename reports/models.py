from django.conf import settings
from django.db import models


class ReportPreference(models.Model):
    """R3: the columns a user chose to show, remembered per user and report kind."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="report_preferences")
    kind = models.CharField(max_length=32)
    hidden_columns = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "kind"], name="report_preference_unique")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.kind}"
