"""The foundation of the REST API (/api/v1/), reused by every app's api.py.

Who is calling
    Two ways in, tried in this order on every API view:

    - An API key (A4): ``Authorization: Api-Key <secret>``. The secret is checked by
      ``companies.services.api_key_authenticate`` (hash lookup; revoked keys and keys of a
      suspended company are refused with 401). ``request.user`` becomes an ``ApiKeyPrincipal``:
      not a database user, but an object with the attributes the ``companies.access`` helpers read
      (``company``, ``company_id``, ``role``), acting with company-administrator rights of the
      key's company. ``request.auth`` is the ``ApiKey``. The request's tenant is the key's company,
      as it is the signed-in user's company for a session (companies.middleware).
    - The console session (DRF's SessionAuthentication, CSRF enforced for writes), so the console's
      own pages can call the API. ``request.user`` is the ``User``.

    Services record who changed what (X1) with a ``User`` or ``None``: a key is not a user, so
    views pass ``self.audit_actor``, which is ``None`` for a key; the audit log then names the key
    ("API key <prefix> (<name>)", companies.audit.audit_as_api_key), not "system".
    The few services that need a person (they compare the actor with the account being changed, or
    C4's "only the company's own users") are listed per view in ``user_only_actions`` and answer 403
    to a key. A key never manages keys: a key could otherwise mint a key with wider scopes.

What a caller may do
    ``ScopedPermission``: a key needs the view's ``required_scope`` among its scopes (A4:
    companies, licensing, usage, reports); a view without one is closed to keys. Actions not in
    the view's ``open_actions`` need a company administrator (A2). Which objects a caller may touch
    is not a permission question: every lookup by id goes through an ``access_<thing>`` helper
    that answers the same 404 for missing and not-yours (C6).

Scoping by default
    ``CompanyScopedAPIView`` scopes its queryset to the caller's company subtree. Subclasses cannot
    define ``get_queryset`` or ``get_object`` (TypeError at import time, like PostHog's
    TeamAndOrgViewSetMixin): they narrow the scoped queryset in ``safely_get_queryset`` and name
    their access helper in ``access_object``. The one loud way out is ``dangerously_get_queryset``.

Errors
    ``api_exception_handler``: a django ValidationError from a service, and a serializer's own
    errors, become 400 ``{"errors": {field: [messages]}}`` (X2); any Http404 becomes a plain
    ``{"detail": "Not found."}``, so the body never says what was looked for.
"""

from typing import Any, ClassVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection
from django.db.models import Model, QuerySet
from django.http import Http404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, serializers
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.generics import get_object_or_404
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback
from rest_framework.viewsets import GenericViewSet

from companies.audit import audit_api_key_set, audit_as_api_key
from companies.models import ApiKey, Company, Role, User
from companies.services import api_key_authenticate

API_KEY_KEYWORD = "Api-Key"
# OpenAPI security of a route closed to API keys
SESSION_ONLY = [{"cookieAuth": []}]


# --- who is calling ------------------------------------------------------------------------------------

class ApiKeyPrincipal:
    """The caller behind an API key: the key's company, with company-administrator rights."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    pk = None
    role = Role.COMPANY_ADMIN

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key

    @property
    def company(self) -> Company:
        return self.api_key.company

    @property
    def company_id(self) -> int:
        return self.api_key.company_id

    @property
    def scopes(self) -> list[str]:
        return list(self.api_key.scopes)

    def __str__(self) -> str:
        return f"API key {self.api_key.prefix}"


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key <secret>`` (A4). Without that header it steps aside, so session
    authentication can answer instead."""

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != API_KEY_KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                f"Send the key as: Authorization: {API_KEY_KEYWORD} <secret>.")
        try:
            raw = parts[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("The API key is not valid.") from None
        key = api_key_authenticate(raw)
        if key is None:
            raise exceptions.AuthenticationFailed("The API key is not valid, or it was revoked.")
        # the tenant of the request is the key's company, as the middleware does for a session
        request._request.tenant = key.company
        connection.set_tenant(key.company)
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request) -> str:
        # a WWW-Authenticate challenge turns "not signed in" into 401 rather than 403
        return API_KEY_KEYWORD


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "gz_console.api.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": f"`{API_KEY_KEYWORD} <secret>`: a company's API key (A4), shown once when "
                               "it is created. The key acts as a company administrator of its company, "
                               "within its scopes."}


# --- what a caller may do ------------------------------------------------------------------------------

class ScopedPermission(BasePermission):
    """API keys: the view's scope, and no user-only actions. Everyone: administrators for writes."""

    def has_permission(self, request, view) -> bool:
        caller = request.user
        if caller is None or not caller.is_authenticated:
            return False
        action = getattr(view, "action", None)
        if isinstance(caller, ApiKeyPrincipal):
            if action in view.user_only_actions or view.required_scope is None:
                raise exceptions.PermissionDenied(
                    "This action needs a signed-in user; an API key cannot do it.")
            if view.required_scope not in caller.scopes:
                raise exceptions.PermissionDenied(f"This API key lacks the '{view.required_scope}' scope.")
        if action not in view.open_actions and caller.role != Role.COMPANY_ADMIN:
            raise exceptions.PermissionDenied("Only company administrators can do this.")
        return True


# --- scoping by default --------------------------------------------------------------------------------

class CompanyScopedPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class CompanyScopedAPIView(GenericViewSet):
    """A viewset whose queryset is the caller's company subtree (C6), whatever the subclass does.

    Subclasses set ``queryset`` (unscoped; it is scoped here), ``company_field`` (the foreign key to
    the owning company, or None when the model is Company itself), ``required_scope``, and name
    their access helper in ``access_object``.
    """

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [ScopedPermission]
    pagination_class = CompanyScopedPagination
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]  # no browsable API: its HTML forms would be a second surface

    required_scope: ClassVar[str | None] = None
    company_field: ClassVar[str | None] = None
    # actions any role may call; the rest need a company administrator (A2)
    open_actions: ClassVar[frozenset[str]] = frozenset()
    # actions an API key may not call: they need a person (see the module docstring); document them
    # with @extend_schema(auth=SESSION_ONLY)
    user_only_actions: ClassVar[frozenset[str]] = frozenset()

    _SEALED = ("get_queryset", "get_object")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls._SEALED:
            # resolved through the MRO, so a mixin cannot slip its own in either
            if getattr(cls, name) is not getattr(CompanyScopedAPIView, name):
                raise TypeError(
                    f"{cls.__name__} must not define {name}(): CompanyScopedAPIView scopes every "
                    "queryset to the caller's company subtree. Narrow it in safely_get_queryset(), "
                    "look objects up in access_object(), or opt out loudly with dangerously_get_queryset()."
                )

    def get_exception_handler(self):
        return api_exception_handler

    # -- the caller ---------------------------------------------------------------------------------

    @property
    def actor(self) -> User | ApiKeyPrincipal:
        """The caller, as the companies.access helpers take it."""
        return self.request.user

    @property
    def caller_company(self) -> Company:
        return self.request.user.company

    @property
    def audit_actor(self) -> User | None:
        """The actor services record in the audit log: the user, or None for a key (the event then
        names the key: see dispatch)."""
        return self.request.user if isinstance(self.request.user, User) else None

    def dispatch(self, request, *args, **kwargs):
        # the key a request authenticates with is known only inside dispatch (initial); whatever
        # initial sets is undone here, so it never outlives the request on this thread
        with audit_as_api_key(None):
            return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if isinstance(request.user, ApiKeyPrincipal):
            audit_api_key_set(request.user.api_key)

    # -- the queryset -------------------------------------------------------------------------------

    def get_queryset(self) -> QuerySet:
        try:
            return self.dangerously_get_queryset()
        except NotImplementedError:
            pass
        lineage = "lineage" if self.company_field is None else f"{self.company_field}__lineage"
        scoped = self.queryset.filter(**{f"{lineage}__startswith": self.caller_company.lineage})
        return self.safely_get_queryset(scoped)

    def safely_get_queryset(self, queryset: QuerySet) -> QuerySet:
        """Narrow the already-scoped queryset (filters, ordering, select_related)."""
        return queryset

    def dangerously_get_queryset(self) -> QuerySet:
        """Return an unscoped queryset to bypass the company scoping. Say why where you do it."""
        raise NotImplementedError

    def parse_input(self, serializer_class: type[serializers.Serializer], *, partial: bool = False) -> dict:
        """The request body through its input serializer; bad input answers 400 naming the field."""
        serializer = serializer_class(data=self.request.data, partial=partial,
                                      context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def parse_query(self, serializer_class: type[serializers.Serializer]) -> dict:
        serializer = serializer_class(data=self.request.query_params, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    # -- lookups by id ------------------------------------------------------------------------------

    def get_object(self) -> Model:
        lookup_kwarg = self.lookup_url_kwarg or self.lookup_field
        obj = self.access_object(self.kwargs[lookup_kwarg])
        owner = obj if self.company_field is None else getattr(obj, self.company_field)
        if not owner.lineage.startswith(self.caller_company.lineage):
            # an access helper let something outside the subtree through: answer as for a missing id
            raise Http404
        self.check_object_permissions(self.request, obj)
        return obj

    def access_object(self, lookup: Any) -> Model:
        """The object named in the URL, or Http404. Override with the model's access_<thing> helper."""
        return get_object_or_404(self.get_queryset(), pk=lookup)


# --- errors ----------------------------------------------------------------------------------------------

def _errors_by_field(detail: Any) -> dict:
    if isinstance(detail, dict):
        return detail
    return {"non_field_errors": detail if isinstance(detail, list) else [detail]}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        set_rollback()
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return Response({"errors": errors}, status=400)
    if isinstance(exc, exceptions.ValidationError):
        set_rollback()
        return Response({"errors": _errors_by_field(exc.detail)}, status=400)
    if isinstance(exc, Http404):
        set_rollback()
        return Response({"detail": "Not found."}, status=404)
    return exception_handler(exc, context)


class ErrorsSerializer(serializers.Serializer):
    """400: what was wrong, by field (X2)."""

    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class DetailSerializer(serializers.Serializer):
    """401, 403 and 404: one message; a 404 never says what was looked for."""

    detail = serializers.CharField()


class StrictInputSerializer(serializers.Serializer):
    # An input serializer that refuses fields it does not know, naming them (X2), rather than
    # silently ignoring a typo or a field that changes through another action. (A comment, not a
    # docstring: the OpenAPI schema would show it as every subclass's description.)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                accepted = ", ".join(name for name, field in self.fields.items() if not field.read_only)
                raise serializers.ValidationError(
                    dict.fromkeys(unknown, [f"Unknown field here; this request accepts: {accepted}."]))
        return super().to_internal_value(data)


class ServiceChoiceField(serializers.ChoiceField):
    # Documents its choices in the OpenAPI schema but lets the service judge the value, so the API
    # answers with the same message as the console's pages.

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return data
