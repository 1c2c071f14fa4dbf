from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from . import views
from .forms import SignInForm
from .twofactor import TwoFactorEnrolView, TwoFactorVerifyView

app_name = "accounts"
urlpatterns = [
    path("sign-in/", auth_views.LoginView.as_view(
        template_name="accounts/sign_in.html", authentication_form=SignInForm,
        redirect_authenticated_user=True), name="sign-in"),
    path("sign-out/", auth_views.LogoutView.as_view(), name="sign-out"),
    path("set-password/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(
        template_name="accounts/set_password.html",
        success_url=reverse_lazy("accounts:sign-in")), name="set-password"),
    path("two-factor/enrol/", TwoFactorEnrolView.as_view(), name="two-factor-enrol"),
    path("two-factor/verify/", TwoFactorVerifyView.as_view(), name="two-factor-verify"),
    path("", views.AccountListView.as_view(), name="list"),
    path("<int:user_id>/<slug:action>/", views.AccountActionView.as_view(), name="action"),
]
