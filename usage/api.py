"""REST API for monthly usage (/api/v1/): getMonthlyUsage (R7) and the list of months.

Thin: parse, one access helper, one selector, render. The figures come from
usage.month_selectors.usage_month_detail, built on the report's own selector (usage_totals), so the
API shows what the Monthly License Usage report shows. Company-level figures only: C3 lets a partner
see them for a company without assist, C2 for a reseller-only partner; nothing here lists endpoints.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response

from companies.models import ApiKeyScope, Company
from companies.selectors import access_company, company_path_for
from gz_console.api import CompanyScopedAPIView, DetailSerializer, ErrorsSerializer

from .month_selectors import FIGURE_LABELS, PRODUCT_TYPES, usage_month_detail, usage_month_parse, usage_months
from .selectors import NOT_ENABLED

NOT_FOUND = OpenApiResponse(DetailSerializer, description="Missing, or not visible to the caller (C6).")
BAD_INPUT = OpenApiResponse(ErrorsSerializer, description="Refused; the messages name the field (X2).")
FORBIDDEN = OpenApiResponse(DetailSerializer, description="The key lacks the 'usage' scope.")

FIGURE_SCHEMA = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "enum": [NOT_ENABLED]}]}


@extend_schema_field(FIGURE_SCHEMA)
class FigureField(serializers.Field):
    def to_representation(self, value):
        return value


@extend_schema_field({"oneOf": [{"type": "object", "additionalProperties": {"type": "integer"}},
                                {"type": "string", "enum": [NOT_ENABLED]}]})
class RetentionField(serializers.Field):
    def to_representation(self, value):
        return value


class UsageCompanySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    type = serializers.CharField()
    license_key = serializers.CharField()
    path = serializers.ListField(child=serializers.CharField(),
                                 help_text="Names from the caller's own company down to this one (H3, C6).")


class UsageFiguresSerializer(serializers.Serializer):
    """Every figure of the report: a count, or "Not enabled" for an add-on none of the summed
    companies has (U13). sve_vdi_hours is hours rounded up per company and month (U7)."""

    def get_fields(self):
        return {key: FigureField(help_text=label) for key, label in FIGURE_LABELS.items()}


@extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"},
                      "description": "Figure -> change recorded after the month was finalized."})
class AdjustmentFiguresField(serializers.Field):
    def to_representation(self, value):
        return value


class LateAdjustmentsSerializer(serializers.Serializer):
    month = serializers.CharField(help_text="The latest finalized month the late data belongs to (YYYY-MM).")
    months = serializers.ListField(child=serializers.CharField(), help_text=(
        "Every finalized month the late data belongs to (YYYY-MM): usually the previous month; older months "
        "when data for them arrived after the previous month's report was made."))
    figures = AdjustmentFiguresField()


class MonthlyUsageSerializer(serializers.Serializer):
    company = UsageCompanySerializer()
    month = serializers.CharField(help_text="YYYY-MM, UTC.")
    status = serializers.ChoiceField(choices=["open", "awaiting close", "finalized"],
                                     help_text="open: the current month, figures grow as telemetry arrives; "
                                               "finalized: frozen (U12).")
    finalized_at = serializers.DateTimeField(allow_null=True)
    computed_at = serializers.DateTimeField(allow_null=True, help_text="When the company's own row was last "
                                                                       "rolled up.")
    scope = serializers.ChoiceField(choices=["subtree", "company"],
                                    help_text="subtree: the company and every company below it summed (U13).")
    product_type = serializers.CharField(allow_blank=True, help_text="Empty: every product type (U11).")
    companies = serializers.IntegerField(help_text="Company rows summed.")
    figures = UsageFiguresSerializer()
    data_retention = RetentionField(help_text="Endpoints charged per Data Retention tier (U8).")
    reserved_seats = serializers.IntegerField(allow_null=True)
    minimum_usage = serializers.IntegerField(allow_null=True)
    billed_endpoint_usage = serializers.IntegerField(
        allow_null=True, help_text="L6: max(minimum usage, endpoint usage); null for a subtree sum.")
    subscription_end_date = serializers.DateField(allow_null=True)
    subscription_auto_renewal = serializers.BooleanField()
    late_adjustments = LateAdjustmentsSerializer(
        help_text="U12: changes to the previous, finalized month that arrived after it was closed.")


class UsageMonthSerializer(serializers.Serializer):
    month = serializers.CharField(help_text="YYYY-MM")
    finalized = serializers.BooleanField()


class UsageMonthListSerializer(serializers.Serializer):
    company = UsageCompanySerializer()
    months = UsageMonthSerializer(many=True, help_text="Newest first; the current month is always listed.")


class UsageQuerySerializer(serializers.Serializer):
    """Options of getMonthlyUsage (the report's options, R1)."""

    scope = serializers.ChoiceField(choices=["subtree", "company"], required=False,
                                    help_text="Default: subtree for a partner, company for a customer.")
    product_type = serializers.ChoiceField(choices=PRODUCT_TYPES, required=False,
                                           help_text="Only companies of this product type (U11).")


def _company_json(company: Company, viewer: Company) -> dict:
    return {"id": company.pk, "name": company.name, "type": company.type, "license_key": company.license_key,
            "path": [c.name for c in company_path_for(company=company, viewer=viewer)]}


COMPANY_ID = OpenApiParameter("company_id", OpenApiTypes.INT, OpenApiParameter.PATH,
                              description="A company in the caller's subtree.")
MONTH = OpenApiParameter("month", OpenApiTypes.STR, OpenApiParameter.PATH, description="YYYY-MM (UTC).")


@extend_schema(tags=["usage"])
class UsageViewSet(CompanyScopedAPIView):
    """Monthly usage of a company in the caller's subtree (C6). Readable by every role (A2: reporters
    work with reports) and by API keys with the 'usage' scope."""

    queryset = Company.objects.all()
    required_scope = ApiKeyScope.USAGE
    open_actions = frozenset({"list", "retrieve"})

    @extend_schema(operation_id="listUsageMonths", summary="Months with usage for a company",
                   parameters=[COMPANY_ID],
                   responses={200: UsageMonthListSerializer, 403: FORBIDDEN, 404: NOT_FOUND})
    def list(self, request, company_id=None):
        company = access_company(self.actor, company_id)
        months = usage_months(company=company, viewer=self.caller_company)
        return Response({"company": _company_json(company, self.caller_company),
                         "months": [{"month": f"{m['month']:%Y-%m}", "finalized": m["finalized"]} for m in months]})

    @extend_schema(operation_id="getMonthlyUsage", summary="A company's usage for a month (R7)",
                   parameters=[COMPANY_ID, MONTH, UsageQuerySerializer],
                   description="The figures of the Monthly License Usage report for the company and month. "
                               "A partner's figures are the sum of its subtree (U13) unless scope=company.",
                   responses={200: MonthlyUsageSerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    def retrieve(self, request, company_id=None, month=None):
        company = access_company(self.actor, company_id)
        options = self.parse_query(UsageQuerySerializer)
        month_start = usage_month_parse(month)
        scope = options.get("scope")
        detail = usage_month_detail(company=company, month=month_start, viewer=self.caller_company,
                                    product_type=options.get("product_type", ""),
                                    subtree=None if scope is None else scope == "subtree")
        late = detail["late_adjustments"]
        return Response({
            "company": _company_json(company, self.caller_company),
            "month": f"{month_start:%Y-%m}",
            "status": detail["status"],
            "finalized_at": detail["finalized_at"],
            "computed_at": detail["computed_at"],
            "scope": "subtree" if detail["subtree"] else "company",
            "product_type": detail["product_type"],
            "companies": detail["companies"],
            "figures": detail["figures"],
            "data_retention": detail["data_retention"],
            "reserved_seats": detail["reserved_seats"],
            "minimum_usage": detail["minimum_usage"],
            "billed_endpoint_usage": detail["billed_endpoint_usage"],
            "subscription_end_date": detail["end_date"],
            "subscription_auto_renewal": detail["auto_renew"],
            "late_adjustments": {"month": f"{late['month']:%Y-%m}", "months": [f"{m:%Y-%m}" for m in late["months"]],
                                 "figures": late["figures"]},
        })
