from django import forms

from .models import MAX_SEATS, CatalogItem


class LicenseForm(forms.Form):
    reserve = forms.BooleanField(required=False, label="Reserve seats")
    reserved_seats = forms.IntegerField(required=False, min_value=0, max_value=MAX_SEATS, label="Reserved seats",
                                        error_messages={"max_value": "Reserved seats: at most %(limit_value)s."})
    has_end_date = forms.BooleanField(required=False, label="Add subscription end date")
    end_date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="End date")
    auto_renew = forms.BooleanField(required=False, label="Set auto-renewal")
    renew_months = forms.IntegerField(required=False, min_value=1, max_value=120, initial=12,
                                      label="Renew for (months)")
    has_minimum = forms.BooleanField(required=False, label="Select minimum usage")
    minimum_usage = forms.IntegerField(required=False, min_value=0, max_value=MAX_SEATS, label="Minimum usage (seats)",
                                       error_messages={"max_value": "Minimum usage: at most %(limit_value)s seats."})
    own_product = forms.ChoiceField(required=False, choices=())
    own_model = forms.ChoiceField(required=False, choices=())
    own_use = forms.MultipleChoiceField(required=False, choices=())
    resell = forms.MultipleChoiceField(required=False, choices=())

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        keys = [(key, key) for key in CatalogItem.objects.values_list("key", flat=True)]
        for name in ("own_product", "own_model"):
            self.fields[name].choices = [("", "—"), *keys]
        self.fields["own_use"].choices = keys
        self.fields["resell"].choices = keys

    def clean(self):
        data = super().clean()
        if data.get("reserve") and data.get("reserved_seats") is None:
            self.add_error("reserved_seats", "Enter the number of seats to reserve.")
        if data.get("has_end_date") and not data.get("end_date"):
            self.add_error("end_date", "Enter the end date.")
        if data.get("has_minimum") and data.get("minimum_usage") is None:
            self.add_error("minimum_usage", "Enter the minimum usage.")
        return data

    def service_arguments(self) -> dict:
        data = self.cleaned_data
        return {
            "reserved_seats": data["reserved_seats"] if data.get("reserve") else None,
            "end_date": data["end_date"] if data.get("has_end_date") else None,
            "auto_renew": bool(data.get("auto_renew")) and bool(data.get("has_end_date")),
            "renew_months": data.get("renew_months") or 12,
            "minimum_usage": data["minimum_usage"] if data.get("has_minimum") else None,
            "own_use": {k for k in (data.get("own_product"), data.get("own_model"), *(data.get("own_use") or []))
                        if k},
            "resell": set(data.get("resell") or []),
        }


class MdrContactForm(forms.Form):
    primary_name = forms.CharField(max_length=200, required=False, label="Primary contact name")
    primary_email = forms.EmailField(required=False, label="Primary contact email")
    primary_phone = forms.CharField(max_length=40, required=False, label="Primary contact phone")
    escalation_name = forms.CharField(max_length=200, required=False, label="Escalation contact name")
    escalation_email = forms.EmailField(required=False, label="Escalation contact email")
    escalation_phone = forms.CharField(max_length=40, required=False, label="Escalation contact phone")
