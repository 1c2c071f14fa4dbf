"""The month picker of the Usage pages."""

from django import forms
from django.core.exceptions import ValidationError

from .month_selectors import usage_month_parse

SCOPES = (("subtree", "This company and the companies below it"), ("company", "This company only"))


class UsageMonthForm(forms.Form):
    month = forms.CharField(required=False, help_text="YYYY-MM")
    scope = forms.ChoiceField(choices=SCOPES, required=False)

    def __init__(self, *args, months: list, is_partner: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["month"].widget = forms.Select(
            choices=[(f"{m['month']:%Y-%m}", f"{m['month']:%B %Y}" + (" (finalized)" if m["finalized"] else ""))
                     for m in months])
        if not is_partner:
            del self.fields["scope"]

    def clean_month(self):
        value = self.cleaned_data.get("month")
        if not value:
            return None
        try:
            return usage_month_parse(value)
        except ValidationError as error:
            raise ValidationError(error.message_dict["month"]) from None
