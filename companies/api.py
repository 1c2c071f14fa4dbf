"""REST API for companies, accounts and API keys (/api/v1/). Thin: parse, one access helper and one
service, render. The rules are the services' (companies.services) and the visibility rules are
companies.access's; the foundation (callers, scopes, scoping, errors) is gz_console.api."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from gz_console.api import (
    SESSION_ONLY,
    CompanyScopedAPIView,
    DetailSerializer,
    ErrorsSerializer,
    ServiceChoiceField,
    StrictInputSerializer,
)

from .access import access_company_accounts, access_managed_company, access_user
from .models import ApiKey, ApiKeyScope, Company, CompanyStatus, CompanyType, FieldOfActivity, Role, User
from .selectors import access_company, company_list, company_paths
from .services import (
    PrimaryAccount,
    api_key_create,
    api_key_revoke,
    company_create,
    company_move,
    company_set_assist,
    company_set_status,
    company_set_two_factor,
    company_update,
    user_invite,
    user_reset_two_factor,
    user_set_active,
    user_update,
)

NOT_FOUND = OpenApiResponse(DetailSerializer, description="Missing, or not visible to the caller (C6).")
BAD_INPUT = OpenApiResponse(ErrorsSerializer, description="Refused; the messages name the field (X2).")
FORBIDDEN = OpenApiResponse(DetailSerializer, description="The caller's role or the key's scope does not "
                                                          "allow this.")


# --- companies ---------------------------------------------------------------------------------------

class CompanySerializer(serializers.ModelSerializer):
    parent = serializers.SerializerMethodField(
        help_text="The parent's id; null for the caller's own company.")
    path = serializers.SerializerMethodField(
        help_text="Names from the caller's own company down to this one.")

    class Meta:
        model = Company
        fields = ["id", "name", "type", "parent", "path", "status", "country", "field_of_activity", "address",
                  "phone", "manages_security", "partner_can_assist", "license_key", "enforce_two_factor"]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_parent(self, company: Company) -> int | None:
        # the caller's own parent lies outside its view (C6)
        return None if company.pk == self.context["viewer"].pk else company.parent_id

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_path(self, company: Company) -> list[str]:
        return self.context["paths"][company.pk]


class CompanyFilterSerializer(serializers.Serializer):
    """Filters of the company list."""

    type = serializers.ChoiceField(choices=CompanyType.choices, required=False)
    status = serializers.ChoiceField(choices=CompanyStatus.choices, required=False)
    assist = serializers.ChoiceField(choices=["on", "off"], required=False,
                                     help_text="Whether the company lets its partner assist (C3).")
    search = serializers.CharField(required=False, allow_blank=True, help_text="Part of the company name.")
    parent = serializers.IntegerField(required=False, help_text="Only the direct children of this company.")


class PrimaryAccountSerializer(StrictInputSerializer):
    """A1: the first account of a new company, a company administrator; it gets an invitation."""

    full_name = serializers.CharField(allow_blank=True)
    email = serializers.CharField(allow_blank=True)
    timezone = serializers.CharField(default="UTC")
    language = ServiceChoiceField(choices=settings.LANGUAGES, default="en")


class CompanyCreateSerializer(StrictInputSerializer):
    """A new company under a partner (H1, H2)."""

    parent = serializers.IntegerField(required=False, help_text="Default: the caller's own company.")
    name = serializers.CharField(allow_blank=True)
    type = ServiceChoiceField(choices=CompanyType.choices)
    country = serializers.CharField(allow_blank=True, default="", help_text="ISO 3166-1 alpha-2.")
    field_of_activity = ServiceChoiceField(choices=FieldOfActivity.choices, allow_blank=True, default="")
    address = serializers.CharField(allow_blank=True, default="")
    phone = serializers.CharField(allow_blank=True, default="")
    manages_security = serializers.BooleanField(
        default=True, help_text="C1: always on for customers; off makes a partner reseller-only.")
    partner_can_assist = serializers.BooleanField(default=True)
    enforce_two_factor = serializers.BooleanField(default=False)
    primary_account = PrimaryAccountSerializer(
        required=False, allow_null=True,
        help_text="A1: the first company administrator; required when partner_can_assist is false.")


class CompanyUpdateSerializer(StrictInputSerializer):
    """Details to change; type, place in the tree, status, assist and two-factor have their own actions."""

    name = serializers.CharField(allow_blank=True)
    country = serializers.CharField(allow_blank=True)
    field_of_activity = ServiceChoiceField(choices=FieldOfActivity.choices, allow_blank=True)
    address = serializers.CharField(allow_blank=True)
    phone = serializers.CharField(allow_blank=True)
    manages_security = serializers.BooleanField()


class SuspendSerializer(StrictInputSerializer):
    """Why the company is suspended."""

    reason = serializers.CharField(allow_blank=True, default="", help_text="Kept in the audit log.")


class MoveSerializer(StrictInputSerializer):
    """The new partner."""

    parent = serializers.IntegerField(help_text="The new partner, inside the caller's view.")


class TwoFactorSerializer(StrictInputSerializer):
    """Whether all of the company's users must use two-factor authentication."""

    enforce = serializers.BooleanField()


@extend_schema(tags=["companies"])
@extend_schema_view(
    list=extend_schema(summary="Companies below the caller's company", parameters=[CompanyFilterSerializer]),
    retrieve=extend_schema(summary="A company in the caller's view", responses={200: CompanySerializer,
                                                                                404: NOT_FOUND}),
    create=extend_schema(summary="Create a company under a partner in the caller's view",
                         request=CompanyCreateSerializer,
                         responses={201: CompanySerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND}),
    partial_update=extend_schema(summary="Edit a company's details (H2)", request=CompanyUpdateSerializer,
                                 responses={200: CompanySerializer, 400: BAD_INPUT, 403: FORBIDDEN,
                                            404: NOT_FOUND}),
)
class CompanyViewSet(CompanyScopedAPIView):
    """Companies of the caller's subtree (C6). Editing, suspending and moving are for administrators
    of a partner above the company; assist and two-factor also for the company's own."""

    queryset = Company.objects.all()
    serializer_class = CompanySerializer
    required_scope = ApiKeyScope.COMPANIES
    open_actions = frozenset({"list", "retrieve"})
    # C4: letting the partner assist again is for the company's own users, and a key is not a user
    user_only_actions = frozenset({"assist_on"})

    def access_object(self, lookup):
        if self.action == "retrieve":
            return access_company(self.actor, lookup)
        if self.action in {"assist_off", "assist_on", "two_factor"}:
            # the company itself (My Company) or its partner on its behalf (A3, C3)
            company = access_company(self.actor, lookup)
            if company.pk == self.actor.company_id:
                return company
        return access_managed_company(self.actor, lookup)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "viewer": self.caller_company}

    def _render(self, companies: list[Company], many: bool = False):
        # H3 paths cut to the caller's view (C6), one query for a whole page
        paths = company_paths(companies=companies, viewer=self.caller_company)
        context = {**self.get_serializer_context(),
                   "paths": {pk: [c.name for c in path] for pk, path in paths.items()}}
        return CompanySerializer(companies if many else companies[0], many=many, context=context).data

    def list(self, request):
        filters = self.parse_query(CompanyFilterSerializer)
        parent_id = filters.pop("parent", None)
        # the same selector as the Companies page: the caller's subtree below it
        companies = company_list(viewer=self.caller_company, **filters)
        if parent_id is not None:
            companies = companies.filter(parent=access_company(self.actor, parent_id))
        page = self.paginate_queryset(companies)
        return self.get_paginated_response(self._render(page, many=True))

    def retrieve(self, request, pk=None):
        return Response(self._render([self.get_object()]))

    def create(self, request):
        data = self.parse_input(CompanyCreateSerializer)
        parent_id = data.pop("parent", self.caller_company.pk)
        # under the caller's own company, or under a partner it manages
        parent = (self.caller_company if parent_id == self.caller_company.pk
                  else access_managed_company(self.actor, parent_id))
        primary = data.pop("primary_account", None)
        company = company_create(actor=self.audit_actor, parent=parent,
                                 primary_account=PrimaryAccount(**primary) if primary else None, **data)
        return Response(self._render([company]), status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        company = self.get_object()
        changes = self.parse_input(CompanyUpdateSerializer, partial=True)
        return Response(self._render([company_update(actor=self.audit_actor, company=company, **changes)]))

    @extend_schema(summary="Suspend a company (H4)", request=SuspendSerializer,
                   responses={200: CompanySerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"])
    def suspend(self, request, pk=None):
        company = self.get_object()
        reason = self.parse_input(SuspendSerializer)["reason"]
        return Response(self._render([company_set_status(actor=self.audit_actor, company=company,
                                                         status=CompanyStatus.SUSPENDED, reason=reason)]))

    @extend_schema(summary="Reactivate a suspended company (H4)", request=None,
                   responses={200: CompanySerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"])
    def reactivate(self, request, pk=None):
        company = self.get_object()
        return Response(self._render([company_set_status(actor=self.audit_actor, company=company,
                                                         status=CompanyStatus.ACTIVE)]))

    @extend_schema(summary="Move a company under another partner (H5)", request=MoveSerializer,
                   responses={200: CompanySerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"])
    def move(self, request, pk=None):
        company = self.get_object()
        new_parent = access_company(self.actor, self.parse_input(MoveSerializer)["parent"])
        return Response(self._render([company_move(actor=self.audit_actor, company=company,
                                                   new_parent=new_parent)]))

    @extend_schema(summary="Stop the partner assisting with security management (C3)", request=None,
                   responses={200: CompanySerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"], url_path="assist-off")
    def assist_off(self, request, pk=None):
        company = self.get_object()
        return Response(self._render([company_set_assist(actor=self.audit_actor, company=company, on=False)]))

    @extend_schema(summary="Let the partner assist again (C4: the company's own users only)", request=None,
                   auth=SESSION_ONLY,
                   responses={200: CompanySerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"], url_path="assist-on")
    def assist_on(self, request, pk=None):
        company = self.get_object()
        return Response(self._render([company_set_assist(actor=request.user, company=company, on=True)]))

    @extend_schema(summary="Enforce two-factor authentication for the company's users (A3)",
                   request=TwoFactorSerializer,
                   responses={200: CompanySerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"], url_path="two-factor")
    def two_factor(self, request, pk=None):
        company = self.get_object()
        enforce = self.parse_input(TwoFactorSerializer)["enforce"]
        return Response(self._render([company_set_two_factor(actor=self.audit_actor, company=company,
                                                             enforce=enforce)]))


# --- accounts ----------------------------------------------------------------------------------------

class AccountSerializer(serializers.ModelSerializer):
    two_factor_enrolled = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "email", "full_name", "company", "role", "timezone", "language", "is_active",
                  "two_factor_enrolled", "date_joined"]
        read_only_fields = fields

    def get_two_factor_enrolled(self, user: User) -> bool:
        return user.totp_confirmed_at is not None


class AccountFilterSerializer(serializers.Serializer):
    """Whose accounts to list."""

    company = serializers.IntegerField(required=False, help_text="Default: the caller's own company.")


class AccountCreateSerializer(StrictInputSerializer):
    """A new account; it gets an email with a link to set its password."""

    company = serializers.IntegerField(required=False, help_text="Default: the caller's own company.")
    email = serializers.CharField(allow_blank=True)
    full_name = serializers.CharField(allow_blank=True)
    role = ServiceChoiceField(choices=Role.choices, default=Role.REPORTER)
    timezone = serializers.CharField(default="UTC")
    language = ServiceChoiceField(choices=settings.LANGUAGES, default="en")


class AccountUpdateSerializer(StrictInputSerializer):
    """Account details to change; the email address stays."""

    full_name = serializers.CharField(allow_blank=True)
    role = ServiceChoiceField(choices=Role.choices)
    timezone = serializers.CharField()
    language = ServiceChoiceField(choices=settings.LANGUAGES)


@extend_schema(tags=["accounts"])
@extend_schema_view(
    list=extend_schema(summary="Accounts of a company the caller manages (C5)",
                       parameters=[AccountFilterSerializer],
                       responses={200: AccountSerializer(many=True), 403: FORBIDDEN, 404: NOT_FOUND}),
    retrieve=extend_schema(summary="An account the caller manages",
                           responses={200: AccountSerializer, 403: FORBIDDEN, 404: NOT_FOUND}),
    create=extend_schema(summary="Invite an account (A1, C5); it gets an email to set its password",
                         request=AccountCreateSerializer, auth=SESSION_ONLY,
                         responses={201: AccountSerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND}),
    partial_update=extend_schema(summary="Edit an account", request=AccountUpdateSerializer,
                                 auth=SESSION_ONLY,
                                 responses={200: AccountSerializer, 400: BAD_INPUT, 403: FORBIDDEN,
                                            404: NOT_FOUND}),
)
class AccountViewSet(CompanyScopedAPIView):
    """User accounts of the caller's company, and of companies below it with assist on (C5).
    Company administrators only (A2). An API key reads accounts; changing them needs a signed-in
    administrator (A4)."""

    queryset = User.objects.select_related("company")
    serializer_class = AccountSerializer
    company_field = "company"
    required_scope = ApiKeyScope.COMPANIES
    # these services compare the actor with the account (no self-lock-out): they need a person. And a
    # key never creates accounts or resets another account's two-factor: an invited administrator
    # could mint keys of every scope, and a reset lets whoever holds the password enrol a new device
    # (A4; docs/decisions.md)
    user_only_actions = frozenset({"partial_update", "activate", "deactivate", "create", "reset_two_factor"})

    def access_object(self, lookup):
        return access_user(self.actor, lookup)

    def list(self, request):
        company_id = self.parse_query(AccountFilterSerializer).get("company", self.caller_company.pk)
        company = access_company_accounts(self.actor, company_id)
        accounts = self.get_queryset().filter(company=company).order_by("full_name", "email")
        page = self.paginate_queryset(accounts)
        return self.get_paginated_response(AccountSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(AccountSerializer(self.get_object()).data)

    def create(self, request):
        data = self.parse_input(AccountCreateSerializer)
        company = access_company_accounts(self.actor, data.pop("company", self.caller_company.pk))
        user = user_invite(actor=request.user, company=company, **data)
        return Response(AccountSerializer(user).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        user = self.get_object()
        changes = self.parse_input(AccountUpdateSerializer, partial=True)
        return Response(AccountSerializer(user_update(actor=request.user, user=user, **changes)).data)

    @extend_schema(summary="Deactivate an account; its sessions end", request=None, auth=SESSION_ONLY,
                   responses={200: AccountSerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"])
    def deactivate(self, request, pk=None):
        user = self.get_object()
        return Response(AccountSerializer(user_set_active(actor=request.user, user=user, active=False)).data)

    @extend_schema(summary="Activate an account again", request=None, auth=SESSION_ONLY,
                   responses={200: AccountSerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"])
    def activate(self, request, pk=None):
        user = self.get_object()
        return Response(AccountSerializer(user_set_active(actor=request.user, user=user, active=True)).data)

    @extend_schema(summary="Reset two-factor authentication; the user enrols again at the next sign-in",
                   request=None, auth=SESSION_ONLY,
                   responses={200: AccountSerializer, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"], url_path="reset-two-factor")
    def reset_two_factor(self, request, pk=None):
        user = self.get_object()
        return Response(AccountSerializer(user_reset_two_factor(actor=request.user, user=user)).data)


# --- API keys ----------------------------------------------------------------------------------------

class ApiKeySerializer(serializers.ModelSerializer):
    """Never the secret: only its first characters, to recognise the key."""

    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiKeyScope.choices), read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyCreatedSerializer(ApiKeySerializer):
    """A new key, with its secret: the only time the secret is shown."""

    secret = serializers.SerializerMethodField(help_text="Shown this once; only its hash is kept (A4).")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]
        read_only_fields = fields

    def get_secret(self, key: ApiKey) -> str:
        return self.context["secret"]


class ApiKeyCreateSerializer(StrictInputSerializer):
    """A new key of the caller's own company, with what it may reach (A4)."""

    name = serializers.CharField(allow_blank=True)
    scopes = serializers.ListField(child=ServiceChoiceField(choices=ApiKeyScope.choices), allow_empty=True)


@extend_schema(tags=["api-keys"], auth=SESSION_ONLY)
@extend_schema_view(
    list=extend_schema(summary="API keys of the caller's company (A4)",
                       responses={200: ApiKeySerializer(many=True), 403: FORBIDDEN}),
    create=extend_schema(summary="Create an API key; the answer carries its secret, once",
                         request=ApiKeyCreateSerializer,
                         responses={201: ApiKeyCreatedSerializer, 400: BAD_INPUT, 403: FORBIDDEN}),
)
class ApiKeyViewSet(CompanyScopedAPIView):
    """API keys of the caller's own company, managed by its administrators from a session: a key
    cannot create or revoke keys (no scope opens these routes)."""

    queryset = ApiKey.objects.select_related("company")
    serializer_class = ApiKeySerializer
    company_field = "company"
    required_scope = None

    def safely_get_queryset(self, queryset):
        # keys belong to one company; a partner does not see the keys of companies below it
        return queryset.filter(company_id=self.caller_company.pk).order_by("-created_at", "-id")

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ApiKeySerializer(page, many=True).data)

    def create(self, request):
        data = self.parse_input(ApiKeyCreateSerializer)
        key, secret = api_key_create(actor=request.user, company=self.caller_company, **data)
        return Response(ApiKeyCreatedSerializer(key, context={"secret": secret}).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(summary="Revoke an API key; it stops working at once", request=None,
                   responses={200: ApiKeySerializer, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        key = self.get_object()
        return Response(ApiKeySerializer(api_key_revoke(actor=request.user, key=key)).data)
