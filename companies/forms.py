from django import forms
from django.contrib.auth.forms import AuthenticationForm

from .throttle import client_address, sign_in_failure_record, sign_in_lockout_message


class SignInForm(AuthenticationForm):
    username = forms.EmailField(label="Email", widget=forms.EmailInput(attrs={"autofocus": True}))

    def clean_username(self) -> str:
        # accounts are stored with lower-case emails (UserManager.create_user)
        return self.cleaned_data["username"].strip().lower()

    def clean(self):
        email = self.cleaned_data.get("username")
        if not email or not self.cleaned_data.get("password"):
            return super().clean()
        address = client_address(self.request)
        # checked before the password, so a guesser learns nothing once the limit is reached
        reason = sign_in_lockout_message(email=email, address=address)
        if reason is not None:
            raise forms.ValidationError(reason, code="locked_out")
        try:
            return super().clean()
        except forms.ValidationError:
            if self.user_cache is None:  # a wrong password, not an inactive account
                sign_in_failure_record(email=email, address=address)
            raise


class TwoFactorCodeForm(forms.Form):
    """The code only; its format and value are checked by the two-factor services (X2)."""

    code = forms.CharField(
        label="Code", max_length=16, strip=True,
        error_messages={"required": "Enter the 6-digit code from your authenticator app."},
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "one-time-code",
                                      "inputmode": "numeric", "spellcheck": "false"}),
    )
