"""Forms of the schedule and send-by-email pages. They parse input; the rules live in the services
(reports/schedules.py, reports/delivery.py), whose ValidationErrors land on the field they name."""

from django import forms

from companies.models import Company, User
from companies.selectors import company_subtree

from .builder import KIND_TITLES, KINDS, PRODUCT_TYPES
from .delivery import report_recipients_eligible

KIND_CHOICES = [(kind, KIND_TITLES[kind]) for kind in KINDS]
PRODUCT_TYPE_CHOICES = [("", "All product types"), *PRODUCT_TYPES.items()]


def recipient_label(user: User) -> str:
    return f"{user.full_name} <{user.email}> · {user.company.name} · {user.get_role_display()}"


class _RecipientsMixin:
    """Recipient checkboxes: the users who may receive the chosen company's report (R5)."""

    def set_recipient_choices(self, *, owner: Company, company: Company | None) -> None:
        users = report_recipients_eligible(owner=owner, company=company) if company is not None else []
        self.fields["recipients"].choices = [(user.pk, recipient_label(user)) for user in users]


class ScheduleForm(_RecipientsMixin, forms.Form):
    name = forms.CharField(max_length=200)
    company = forms.TypedChoiceField(coerce=int, label="Company")
    kind = forms.ChoiceField(choices=KIND_CHOICES, initial="endpoint", label="Report")
    product_type = forms.ChoiceField(choices=PRODUCT_TYPE_CHOICES, required=False, label="Product type")
    only_endpoint_details = forms.BooleanField(required=False, label="Only endpoint details")
    only_direct = forms.BooleanField(required=False, label="Only direct companies")
    day_of_month = forms.IntegerField(min_value=1, max_value=28, initial=1, label="Day of the month",
                                      help_text="1 to 28. The report covers the previous month.")
    hour = forms.IntegerField(min_value=0, max_value=23, initial=6, label="Hour (UTC)")
    recipients = forms.TypedMultipleChoiceField(coerce=int, widget=forms.CheckboxSelectMultiple,
                                                help_text="Users who may see the company's report.")

    def __init__(self, *args, owner: Company, **kwargs):
        super().__init__(*args, **kwargs)
        companies = company_subtree(company=owner).order_by("lineage").only("id", "name", "depth")
        base = owner.depth
        self.fields["company"].choices = [(c.pk, "\u2003" * (c.depth - base) + c.name) for c in companies]
        chosen = self.data.get("company") if self.is_bound else self.initial.get("company")
        company = None
        try:
            company = company_subtree(company=owner).filter(pk=int(chosen)).first() if chosen else owner
        except (TypeError, ValueError):
            company = owner
        self.set_recipient_choices(owner=owner, company=company or owner)


class SendNowForm(_RecipientsMixin, forms.Form):
    company = forms.IntegerField(widget=forms.HiddenInput)
    month = forms.CharField(widget=forms.HiddenInput)
    kind = forms.ChoiceField(choices=KIND_CHOICES, widget=forms.HiddenInput)
    product_type = forms.ChoiceField(choices=PRODUCT_TYPE_CHOICES, required=False, widget=forms.HiddenInput)
    only_endpoint_details = forms.BooleanField(required=False, widget=forms.HiddenInput)
    only_direct = forms.BooleanField(required=False, widget=forms.HiddenInput)
    recipients = forms.TypedMultipleChoiceField(coerce=int, widget=forms.CheckboxSelectMultiple,
                                                help_text="Users who may see the report.")
