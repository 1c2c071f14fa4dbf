"""Forms for the company pages. They only parse input; the services validate and decide."""

import zoneinfo

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django_countries import countries

from .models import ApiKeyScope, CompanyStatus, CompanyType, FieldOfActivity, Role

COUNTRY_CHOICES = [("", "—")] + list(countries)
TIMEZONE_CHOICES = [(tz, tz) for tz in sorted(zoneinfo.available_timezones()) if "/" in tz or tz == "UTC"]


def apply_service_errors(form: forms.Form, error: ValidationError) -> None:
    """Show a service's ValidationError on the form, each message on the field it names."""
    if hasattr(error, "error_dict"):
        for field, messages in error.message_dict.items():
            target = field if field in form.fields else None
            for message in messages:
                form.add_error(target, message)
    else:
        for message in error.messages:
            form.add_error(None, message)


class CompanyDetailsForm(forms.Form):
    name = forms.CharField(max_length=200)
    country = forms.ChoiceField(choices=COUNTRY_CHOICES, required=False)
    field_of_activity = forms.ChoiceField(choices=[("", "—"), *FieldOfActivity.choices], required=False)
    address = forms.CharField(max_length=500, required=False, label="Registered address")
    phone = forms.CharField(max_length=40, required=False, label="Phone number")

    def clean_phone(self):
        from .services import PHONE_MESSAGE, phone_is_valid

        phone = self.cleaned_data["phone"]
        if phone and not phone_is_valid(phone):
            raise forms.ValidationError(PHONE_MESSAGE)
        return phone
    logo = forms.FileField(required=False, help_text="PNG, JPEG, GIF or WebP, at most 1 MiB.")


class CompanyCreateForm(CompanyDetailsForm):
    type = forms.ChoiceField(choices=CompanyType.choices, widget=forms.RadioSelect, initial=CompanyType.CUSTOMER,
                             label="Company type")
    manages_security = forms.BooleanField(required=False, initial=True,
                                          label="The company manages endpoint security")
    partner_can_assist = forms.BooleanField(required=False, initial=True,
                                            label="The company's partner can assist with security management")
    add_primary_account = forms.BooleanField(required=False, label="Create a primary account")
    primary_full_name = forms.CharField(max_length=200, required=False, label="Full name")
    primary_email = forms.EmailField(required=False, label="Email address")
    primary_timezone = forms.ChoiceField(choices=TIMEZONE_CHOICES, initial="UTC", required=False,
                                         label="Timezone")
    primary_language = forms.ChoiceField(choices=settings.LANGUAGES, initial="en", required=False,
                                         label="Language")
    enforce_two_factor = forms.BooleanField(required=False,
                                            label="Enforce two-factor authentication for all users")

    field_order = ["name", "type", "country", "field_of_activity"]

    def clean(self):
        data = super().clean()
        if data.get("add_primary_account"):
            if not data.get("primary_full_name"):
                self.add_error("primary_full_name", "Enter the primary account's full name.")
            if not data.get("primary_email"):
                self.add_error("primary_email", "Enter the primary account's email address.")
        return data


class CompanyFilterForm(forms.Form):
    search = forms.CharField(required=False)
    type = forms.ChoiceField(choices=[("", "All types"), *CompanyType.choices], required=False)
    status = forms.ChoiceField(choices=[("", "Any state"), *CompanyStatus.choices], required=False)
    assist = forms.ChoiceField(choices=[("", "Assist on or off"), ("on", "Assist on"), ("off", "Assist off")],
                               required=False)


class MoveForm(forms.Form):
    new_parent = forms.IntegerField(label="New partner")


class InviteForm(forms.Form):
    company = forms.IntegerField(widget=forms.HiddenInput, required=False)
    full_name = forms.CharField(max_length=200)
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.REPORTER)
    timezone = forms.ChoiceField(choices=TIMEZONE_CHOICES, initial="UTC")
    language = forms.ChoiceField(choices=settings.LANGUAGES, initial="en")


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(choices=ApiKeyScope.choices, widget=forms.CheckboxSelectMultiple)
