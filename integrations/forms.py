"""Forms for the Integrations page. They only parse input; the services validate and decide."""

from django import forms

from companies.models import PartnerPlan


class ConnectionForm(forms.Form):
    site = forms.CharField(max_length=300, label="ConnectWise site address",
                           help_text="For example https://na.myconnectwise.net")
    psa_company_id = forms.CharField(max_length=100, label="Company id",
                                     help_text="The company id you sign in to ConnectWise with.")
    public_key = forms.CharField(max_length=200, required=False, label="Public key",
                                 widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}))
    private_key = forms.CharField(max_length=200, required=False, label="Private key",
                                  widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}))
    client_id = forms.CharField(max_length=100, label="Client id",
                                help_text="The client id of your ConnectWise API integration.")
    enabled = forms.BooleanField(required=False, initial=True, label="Send usage to ConnectWise")


class MappingForm(forms.Form):
    psa_company = forms.CharField(max_length=100, required=False, label="ConnectWise company identifier")
    agreement_type = forms.CharField(max_length=100, required=False, label="Agreement type")
    product_identifier = forms.CharField(max_length=100, required=False, label="Product identifier")


class PlanForm(forms.Form):
    plan = forms.ChoiceField(choices=PartnerPlan.choices, label="Plan")
