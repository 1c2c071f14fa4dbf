"""Agent protocol v1 (SPEC T1-T7), mounted at /api/agent/v1/. docs/agent-api.md is the guide for
agent builders; the wire format changes only by adding optional fields.

The views are thin and fast: the body is decoded with json.loads once (no DRF parsers, no
serializers on the hot path; the serializers below only document the wire format in the OpenAPI
schema), then one service call. Agents carry no session: the only way in is
`Authorization: Bearer <token>`, so there is no session authentication and no CSRF here.

Error bodies, stable for agents whatever the rest of the API does:
  400 {"errors": {"<field>": ["<message>"]}}   the body or a field is wrong (X2)
  401 {"detail": "<message>"}                   missing, unknown or revoked token, unknown endpoint
  413 {"detail": "<message>"}                   too many items in one request, or too large a body
"""

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from companies.models import Company
from licensing.models import SeatState

from .agent import (
    ENVIRONMENTS,
    MAILBOX_PRODUCTS,
    MAX_HEARTBEATS_PER_REQUEST,
    MAX_UPTIME_SECONDS,
    AgentAuthError,
    BatchTooLarge,
    agent_authenticate,
    agent_register,
    agent_seat,
    heartbeats_ingest,
    install_token_company,
    mailboxes_ingest,
    registration_validate,
)
from .modules import MODULE_BITS, SCAN_MODES, XDR_SENSOR_BITS
from .telemetry.models import MachineType, OsFamily, OsType

# --- who is calling --------------------------------------------------------------------------------------


class AgentCaller:
    """An install package (endpoint_id None) or a registered agent; never a console user."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, company: Company, endpoint_id=None):
        self.company = company
        self.endpoint_id = endpoint_id


class BearerAuthentication(BaseAuthentication):
    what = "token"

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="gz-agent"'  # makes DRF answer 401, not 403

    def bearer(self, request) -> str:
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationFailed(f"The {self.what} is missing: send the header "
                                       f"'Authorization: Bearer <{self.what}>'.")
        return token


class InstallTokenAuthentication(BearerAuthentication):
    """T1: the install token the install package carries names the company."""

    what = "install token"

    def authenticate(self, request):
        token = self.bearer(request)
        company = install_token_company(install_token=token)
        if company is None:
            raise AuthenticationFailed("The install token is unknown or was replaced: download a current "
                                       "install package from the console.")
        return AgentCaller(company), token


class AgentTokenAuthentication(BearerAuthentication):
    """The agent credential returned at registration names the company and the endpoint."""

    what = "agent token"

    def authenticate(self, request):
        found = agent_authenticate(token=self.bearer(request))
        if found is None:
            raise AuthenticationFailed("The agent token is unknown or revoked: register again with the "
                                       "install token.")
        return AgentCaller(*found), None


class InstallTokenScheme(OpenApiAuthenticationExtension):
    target_class = "usage.agent_api.InstallTokenAuthentication"
    name = "installToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "The company's install token, carried by the install package (T1)."}


class AgentTokenScheme(OpenApiAuthenticationExtension):
    target_class = "usage.agent_api.AgentTokenAuthentication"
    name = "agentToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "The agent token returned by /api/agent/v1/register."}


# --- the wire format, for the OpenAPI schema only ------------------------------------------------------


class AgentRegisterRequestSerializer(serializers.Serializer):
    hardware_id = serializers.CharField(max_length=200, help_text="Stable across reinstalls and reimages (T7).")
    hostname = serializers.CharField(max_length=255)
    os_family = serializers.ChoiceField(choices=OsFamily.choices)
    os_type = serializers.ChoiceField(choices=OsType.choices)
    machine_type = serializers.ChoiceField(choices=MachineType.choices)


class AgentSeatSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=SeatState.choices)
    trial_ends_at = serializers.DateField(allow_null=True, help_text="Last day of the trial; null unless trial.")


class AgentRegisteredSerializer(serializers.Serializer):
    endpoint_id = serializers.UUIDField()
    agent_token = serializers.CharField(help_text="Shown once; send it as 'Authorization: Bearer <token>'.")
    seat = AgentSeatSerializer()


class AgentHeartbeatSerializer(serializers.Serializer):
    id = serializers.UUIDField(help_text="Unique per heartbeat; resending it is safe (T4).")
    observed_at = serializers.DateTimeField(help_text="ISO 8601 with a time zone; at most 5 minutes ahead, "
                                                      "at most 35 days old (the late window).")
    os_family = serializers.ChoiceField(choices=OsFamily.choices)
    os_type = serializers.ChoiceField(choices=OsType.choices)
    machine_type = serializers.ChoiceField(choices=MachineType.choices)
    container_host = serializers.BooleanField()
    modules = serializers.ListField(child=serializers.ChoiceField(choices=list(MODULE_BITS)))
    scan_mode = serializers.ChoiceField(choices=list(SCAN_MODES))
    uptime_seconds = serializers.IntegerField(min_value=0, max_value=MAX_UPTIME_SECONDS)
    xdr_sensors = serializers.ListField(child=serializers.ChoiceField(choices=list(XDR_SENSOR_BITS)))


class AgentHeartbeatBatchSerializer(serializers.Serializer):
    heartbeats = AgentHeartbeatSerializer(many=True, help_text=f"At most {MAX_HEARTBEATS_PER_REQUEST}.")


class AgentRejectedSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position in the batch, from 0.")
    id = serializers.CharField(allow_null=True)
    error = serializers.CharField(help_text="Names the field, e.g. \"modules: unknown module key 'foo'.\"")


class AgentHeartbeatResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Heartbeats stored by this request.")
    duplicates = serializers.IntegerField(help_text="Valid heartbeats already stored, or repeated in the batch.")
    rejected = AgentRejectedSerializer(many=True)
    seat = AgentSeatSerializer()


class AgentMailboxSerializer(serializers.Serializer):
    id = serializers.CharField(max_length=200)
    primary = serializers.BooleanField()
    object_class = serializers.CharField(max_length=64, required=False, allow_blank=True)
    emails_sent = serializers.IntegerField(min_value=0, required=False, default=0)
    emails_received = serializers.IntegerField(min_value=0, required=False, default=0)


class AgentMailboxReportSerializer(serializers.Serializer):
    observed_at = serializers.DateTimeField()
    environment = serializers.ChoiceField(choices=list(ENVIRONMENTS))
    product = serializers.ChoiceField(choices=list(MAILBOX_PRODUCTS))
    mailboxes = AgentMailboxSerializer(many=True)


class AgentMailboxesStoredSerializer(serializers.Serializer):
    stored = serializers.IntegerField()


class AgentErrorsSerializer(serializers.Serializer):
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class AgentDetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


BAD_INPUT = OpenApiResponse(AgentErrorsSerializer, description="Malformed JSON or a wrong field; the key "
                                                               "names it (X2).")
UNAUTHORIZED = OpenApiResponse(AgentDetailSerializer, description="Missing, unknown or revoked token.")
TOO_LARGE = OpenApiResponse(AgentDetailSerializer, description="Too many items, or a body over the upload limit.")
SEAT_EXAMPLE = {"state": "trial", "trial_ends_at": "2026-11-30"}
HEARTBEAT_EXAMPLE = {
    "id": "0b6f4c8e-1f7a-4a53-9d52-0c5b7f3a9e11", "observed_at": "2026-10-05T12:00:00Z", "os_family": "linux",
    "os_type": "server", "machine_type": "virtual", "container_host": False,
    "modules": ["antimalware", "edr"], "scan_mode": "central", "uptime_seconds": 900, "xdr_sensors": ["network"]}


# --- the views -------------------------------------------------------------------------------------------


class PayloadTooLarge(Exception):
    pass


def json_body(request) -> Any:
    try:
        body = request.body
    except RequestDataTooBig as error:
        limit = filesizeformat(settings.DATA_UPLOAD_MAX_MEMORY_SIZE).replace("\xa0", " ")
        raise PayloadTooLarge(f"The body is larger than {limit}: send smaller batches.") from error
    try:
        return json.loads(body)
    except ValueError as error:
        raise ValidationError({"body": f"malformed JSON: {error}."}) from error
    except RecursionError as error:
        raise ValidationError({"body": "malformed JSON: nested too deeply."}) from error


class AgentView(APIView):
    """Bearer token only; JSON in and out; errors in the stable agent shapes (module docstring)."""

    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]
    parser_classes: list = []  # the body is decoded once, in json_body

    def get_exception_handler(self):
        return exception_handler  # DRF's own: a settings change elsewhere never alters the wire format

    def handle_exception(self, exc):
        if isinstance(exc, ValidationError):
            return Response({"errors": exc.message_dict}, status=status.HTTP_400_BAD_REQUEST)
        if isinstance(exc, BatchTooLarge | PayloadTooLarge):
            return Response({"detail": str(exc)}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        if isinstance(exc, AgentAuthError):
            exc = AuthenticationFailed(str(exc))
        return super().handle_exception(exc)


class RegisterView(AgentView):
    authentication_classes = [InstallTokenAuthentication]

    @extend_schema(
        operation_id="agent_register", tags=["agent"], summary="Register an endpoint (T1, T7)",
        request=AgentRegisterRequestSerializer,
        responses={201: AgentRegisteredSerializer, 200: AgentRegisteredSerializer, 400: BAD_INPUT,
                   401: UNAUTHORIZED, 413: TOO_LARGE},
        description="201 for a new machine; 200 for a known hardware id, which keeps its endpoint id and its "
                    "seat and gets a new agent token (the previous one stops working).",
        examples=[
            OpenApiExample("Registration", request_only=True, value={
                "hardware_id": "4C4C4544-0042-3510-8051-B4C04F4E3732", "hostname": "web-01",
                "os_family": "windows", "os_type": "workstation", "machine_type": "physical"}),
            OpenApiExample("Registered", response_only=True, status_codes=["201", "200"], value={
                "endpoint_id": "5d0c3f0e-8f1e-4a47-9a43-3c2b9b0f1d2a", "agent_token": "q1Xb...<43 characters>",
                "seat": SEAT_EXAMPLE}),
        ],
    )
    def post(self, request):
        fields = registration_validate(json_body(request))
        created, endpoint_id, agent_token, seat = agent_register(install_token=request.auth, **fields)
        return Response({"endpoint_id": str(endpoint_id), "agent_token": agent_token, "seat": seat.as_json()},
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class HeartbeatsView(AgentView):
    @extend_schema(
        operation_id="agent_heartbeats", tags=["agent"], summary="Send heartbeats (T2-T6)",
        request=AgentHeartbeatBatchSerializer,
        responses={200: AgentHeartbeatResultSerializer, 400: AgentHeartbeatResultSerializer, 401: UNAUTHORIZED,
                   413: TOO_LARGE},
        description=f"At most {MAX_HEARTBEATS_PER_REQUEST} heartbeats per request. Each heartbeat is checked on "
                    "its own: the valid ones are stored before the answer, the others are listed in `rejected`. "
                    "The answer is 200 when the batch is empty or any heartbeat was valid, 400 (same body) "
                    "when every heartbeat was rejected. `seat` is the endpoint's seat now (T5).",
        examples=[
            OpenApiExample("Batch", request_only=True, value={"heartbeats": [HEARTBEAT_EXAMPLE]}),
            OpenApiExample("Stored", response_only=True, status_codes=["200"], value={
                "accepted": 1, "duplicates": 0, "seat": {"state": "licensed", "trial_ends_at": None},
                "rejected": [{"index": 1, "id": "6a1d...", "error": "modules: unknown module key 'foo'."}]}),
            OpenApiExample("Too many", response_only=True, status_codes=["413"], value={
                "detail": "heartbeats: at most 1000 heartbeats per request, this one has 1500; send them in "
                          "smaller batches."}),
        ],
    )
    def post(self, request):
        payload = json_body(request)
        items = payload.get("heartbeats") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise ValidationError({"heartbeats": 'required: a list of heartbeats, {"heartbeats": [...]}.'})
        caller: AgentCaller = request.user
        now = timezone.now()
        result = heartbeats_ingest(company=caller.company, endpoint_id=caller.endpoint_id, items=items, now=now)
        seat = agent_seat(company=caller.company, endpoint_id=caller.endpoint_id, today=now.date())
        all_rejected = bool(items) and len(result.rejected) == len(items)
        return Response({"accepted": result.accepted, "duplicates": result.duplicates,
                         "rejected": result.rejected, "seat": seat.as_json()},
                        status=status.HTTP_400_BAD_REQUEST if all_rejected else status.HTTP_200_OK)


class MailboxesView(AgentView):
    @extend_schema(
        operation_id="agent_mailboxes", tags=["agent"], summary="Send the mailbox inventory (U14, U15)",
        request=AgentMailboxReportSerializer,
        responses={200: AgentMailboxesStoredSerializer, 400: BAD_INPUT, 401: UNAUTHORIZED, 413: TOO_LARGE},
        description="All or nothing: a report with an error stores nothing, and every error names its field "
                    "(`mailboxes[3].emails_sent`). Reports merge into the observed month: the latest flags win, "
                    "email counts add up.",
        examples=[OpenApiExample("Report", request_only=True, value={
            "observed_at": "2026-10-05T12:00:00Z", "environment": "cloud", "product": "email",
            "mailboxes": [{"id": "ann@example.com", "primary": True, "object_class": "user", "emails_sent": 3,
                           "emails_received": 10}]})],
    )
    def post(self, request):
        caller: AgentCaller = request.user
        stored = mailboxes_ingest(company=caller.company, payload=json_body(request))
        return Response({"stored": stored})
