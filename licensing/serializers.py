"""Serializers of the licensing REST API (licensing/api.py): what goes in is parsed here, what the
rules say is the services' (seats.py, subscriptions.py, entitlements.py, services.py)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from gz_console.api import StrictInputSerializer

from .models import MAX_SEATS, CatalogItem, ItemKind, MdrContact, ModelRule, SeatAssignment

# --- the catalogue (E1, E2, E7) ---------------------------------------------------------------------


class CatalogItemSerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="key", read_only=True,
                                          help_text="The item this one belongs to (a sensor category's "
                                                    "XDR, a tier's Data Retention), or null.")
    product_types = serializers.SlugRelatedField(slug_field="key", many=True, read_only=True,
                                                 help_text="Product types this item applies to (E1).")
    kind = serializers.ChoiceField(choices=ItemKind.choices, read_only=True)

    class Meta:
        model = CatalogItem
        fields = ["key", "name", "kind", "parent", "description", "rank", "product_types"]
        read_only_fields = fields


class ModelRuleSerializer(serializers.ModelSerializer):
    protection_model = serializers.SlugRelatedField(slug_field="key", read_only=True)
    item = serializers.SlugRelatedField(slug_field="key", read_only=True)

    class Meta:
        model = ModelRule
        fields = ["protection_model", "item", "relation"]
        read_only_fields = fields


class CatalogueSerializer(serializers.Serializer):
    """The whole catalogue: items, and which protection model includes or excludes which item (E2)."""

    items = CatalogItemSerializer(many=True)
    rules = ModelRuleSerializer(many=True)


# --- a company's licensing --------------------------------------------------------------------------


class CompanyRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class PoolSerializer(serializers.Serializer):
    """L2: where the company's endpoints take their seats. A pool owned by a company outside the
    caller's view (C6) is shown without its owner or its figures."""

    shared = serializers.BooleanField(help_text="True when the company has no reservation and draws from "
                                                "a shared pool (L2).")
    in_view = serializers.BooleanField(help_text="Whether the pool's owner is in the caller's view.")
    owner = CompanyRefSerializer(allow_null=True)
    capacity = serializers.IntegerField(allow_null=True, help_text="Null: no limit (or not in view).")
    used = serializers.IntegerField(allow_null=True, help_text="Seats held by licensed endpoints.")
    reserved_below = serializers.IntegerField(allow_null=True,
                                              help_text="Seats carved out by reservations below (L3).")
    free = serializers.IntegerField(allow_null=True)


class SeatCountsSerializer(serializers.Serializer):
    licensed = serializers.IntegerField()
    trial = serializers.IntegerField()
    expired = serializers.IntegerField()


class TrialEndingSerializer(serializers.Serializer):
    trial_ends_on = serializers.DateField()
    endpoints = serializers.IntegerField()


class SubscriptionSerializer(serializers.Serializer):
    end_date = serializers.DateField(allow_null=True, help_text="The company's own end date (S1); null: "
                                                                "it inherits.")
    effective_end_date = serializers.DateField(allow_null=True, help_text="Own or inherited (S1); null: "
                                                                          "no end date.")
    inherited = serializers.BooleanField()
    inherited_from = CompanyRefSerializer(allow_null=True, help_text="Whose end date it is, when that "
                                                                     "company is in the caller's view.")
    auto_renew = serializers.BooleanField()
    renew_months = serializers.IntegerField(help_text="S3: months added at each renewal.")


class CompanyLicensingSerializer(serializers.Serializer):
    """One company's licensing, as its Licensing page shows it."""

    company = CompanyRefSerializer()
    license_type = serializers.CharField(help_text="S5: monthly (usage-billed).")
    license_key = serializers.CharField(help_text="S5: shown in reports.")
    reserved_seats = serializers.IntegerField(allow_null=True, help_text="L1; null: shared pool (L2).")
    available_to_reserve = serializers.IntegerField(
        allow_null=True, help_text="L3: the most the company can reserve now; null: no limit.")
    minimum_usage = serializers.IntegerField(allow_null=True, help_text="L6: monthly billing floor.")
    pool = PoolSerializer()
    seats = SeatCountsSerializer(help_text="This company's endpoints by seat state.")
    trials_ending = TrialEndingSerializer(many=True, help_text="Trial endpoints by the last day of their "
                                                               "trial (L4), soonest first.")
    subscription = SubscriptionSerializer()


class CompanyLicensingRowSerializer(serializers.Serializer):
    """One company of the licensing overview."""

    company = CompanyRefSerializer()
    type = serializers.CharField()
    reserved_seats = serializers.IntegerField(allow_null=True)
    minimum_usage = serializers.IntegerField(allow_null=True)
    end_date = serializers.DateField(allow_null=True, help_text="Own end date; null: inherited or none.")
    effective_end_date = serializers.DateField(allow_null=True)
    auto_renew = serializers.BooleanField()
    seats = SeatCountsSerializer()


class LicenseUpdateSerializer(StrictInputSerializer):
    # Every field is optional; only those given change (the same service as the Licensing page).

    reserved_seats = serializers.IntegerField(
        allow_null=True, max_value=MAX_SEATS, error_messages={"max_value": "Reserved seats: at most {max_value}."},
        help_text="L1/L3; null: back to the shared pool (L2).")
    minimum_usage = serializers.IntegerField(
        allow_null=True, max_value=MAX_SEATS, error_messages={"max_value": "Minimum usage: at most {max_value}."},
        help_text="L6; null: none.")
    end_date = serializers.DateField(allow_null=True, help_text="S1; null: inherit the parent's.")
    auto_renew = serializers.BooleanField(help_text="S3; needs an end date.")
    renew_months = serializers.IntegerField(help_text="S3: 1 to 120.")
    own_use = serializers.ListField(child=serializers.CharField(), help_text="Catalogue keys (E1-E3, E5-E7).")
    resell = serializers.ListField(child=serializers.CharField(), help_text="Catalogue keys; partners "
                                                                           "only (E3-E5).")


class TrialSerializer(serializers.ModelSerializer):
    class Meta:
        model = SeatAssignment
        fields = ["endpoint_id", "first_seen_at", "trial_ends_on"]
        read_only_fields = fields


# --- entitlements (E1-E7) ---------------------------------------------------------------------------


class SelectionSerializer(serializers.Serializer):
    """A company's selection for one purpose."""

    company = CompanyRefSerializer()
    purpose = serializers.CharField()
    items = serializers.ListField(child=serializers.CharField(), help_text="Keys chosen and stored.")
    included = serializers.ListField(child=serializers.CharField(),
                                     help_text="Keys the chosen protection model includes (E2).")
    excluded = serializers.ListField(child=serializers.CharField(),
                                     help_text="Keys the chosen protection model excludes (E2).")
    effective = serializers.ListField(child=serializers.CharField(), help_text="items + included.")
    available = serializers.ListField(
        child=serializers.CharField(), allow_null=True,
        help_text="What the parent resells, so what may be chosen (E3); null: everything, or the parent is "
                  "outside the caller's view.")


class SelectionInputSerializer(StrictInputSerializer):
    # The whole selection; it replaces the current one.

    items = serializers.ListField(child=serializers.CharField(), allow_empty=True,
                                  help_text="Catalogue keys (GET /api/v1/catalogue/).")


# --- MDR contact details (E5, E6) -----------------------------------------------------------------


class MdrContactSerializer(serializers.Serializer):
    primary_name = serializers.CharField(allow_blank=True)
    primary_email = serializers.CharField(allow_blank=True)
    primary_phone = serializers.CharField(allow_blank=True)
    escalation_name = serializers.CharField(allow_blank=True)
    escalation_email = serializers.CharField(allow_blank=True)
    escalation_phone = serializers.CharField(allow_blank=True)
    complete = serializers.SerializerMethodField(help_text="E5: every field filled in.")
    missing = serializers.SerializerMethodField(help_text="The fields still empty.")

    @extend_schema_field(serializers.BooleanField())
    def get_complete(self, contact: MdrContact) -> bool:
        return contact.is_complete

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_missing(self, contact: MdrContact) -> list[str]:
        return contact.missing


class MdrContactInputSerializer(StrictInputSerializer):
    # The fields to change; an empty string clears one.

    primary_name = serializers.CharField(allow_blank=True, max_length=200)
    primary_email = serializers.CharField(allow_blank=True, max_length=254)
    primary_phone = serializers.CharField(allow_blank=True, max_length=40)
    escalation_name = serializers.CharField(allow_blank=True, max_length=200)
    escalation_email = serializers.CharField(allow_blank=True, max_length=254)
    escalation_phone = serializers.CharField(allow_blank=True, max_length=40)
