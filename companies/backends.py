from django.contrib.auth.backends import ModelBackend

from .models import CompanyStatus, User


class CompanyUserBackend(ModelBackend):
    """Email sign-in; fetches the company with the user (one query per request, not two)."""

    def user_can_authenticate(self, user):
        return super().user_can_authenticate(user) and user.company.status == CompanyStatus.ACTIVE

    def get_user(self, user_id):
        user = User.objects.select_related("company").filter(pk=user_id).first()
        return user if user is not None and self.user_can_authenticate(user) else None
