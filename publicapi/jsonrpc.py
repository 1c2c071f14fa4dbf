"""The JSON-RPC 2.0 front door: envelope, authentication, scopes, errors, dispatch.

One view per API (``/api/v1.0/jsonrpc/<api>``). A request is a JSON-RPC 2.0 envelope
``{"id", "jsonrpc": "2.0", "method", "params"}`` sent by POST with HTTP Basic authentication: the
API key (A4) as the user name and an empty password.

HTTP status codes, as the original API uses them (docs/jsonrpc-api.md):
- 401 with a -32000 "Invalid API key" error when the key is missing, unknown, revoked, or its
  company is suspended;
- 403 with a -32000 error when the key lacks the API's scope;
- 405 for anything but POST;
- 200 for every answer past authentication, errors included (-32700, -32600, -32601, -32602,
  -32000): the JSON-RPC error object carries the outcome.

Methods are plain functions registered with ``@rpc_method``; they take the ``RpcContext`` and the
params object and call the same services and access helpers as the REST API. A method never
decides visibility itself: lookups go through companies.access (``access_*``), and the one error
for a missing or foreign id is ``not_found`` (C6).
"""

import base64
import binascii
import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from companies.audit import audit_as_api_key
from companies.models import ApiKey, ApiKeyScope
from companies.services import api_key_authenticate
from gz_console.api import ApiKeyPrincipal
from gz_console.text import text_unstorable
from usage.month_selectors import usage_month_parse
from usage.rollups import month_start

logger = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_ERROR = -32000

MESSAGES = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    SERVER_ERROR: "Server error",
}
MAX_BODY_BYTES = 1_000_000


class RpcError(Exception):
    """An error answered as a JSON-RPC error object; ``details`` goes to ``error.data.details``."""

    def __init__(self, code: int, details: str, *, http_status: int = 200, message: str | None = None):
        super().__init__(details)
        self.code = code
        self.details = details
        self.http_status = http_status
        self.message = message or MESSAGES[code]


def invalid_param(name: str, problem: str) -> RpcError:
    """-32602 naming the parameter (X2)."""
    return RpcError(INVALID_PARAMS, f"Invalid parameter '{name}': {problem}")


# ASCII only: str.isdigit() and \d also take "²" or "١", which int() refuses or reads as a number
ASCII_NUMBER = re.compile(r"[ \t\r\n]*([0-9]+)[ \t\r\n]*")
MONTH_FORMAT = re.compile(r"([0-9]{2})/([0-9]{4})")


def ascii_int(value: str) -> int | None:
    """The number a string of ASCII digits (surrounding blanks allowed) spells, else None."""
    match = ASCII_NUMBER.fullmatch(value)
    if match is None:
        return None
    try:
        return int(match.group(1))
    except ValueError:  # more digits than int() reads (sys.get_int_max_str_digits)
        return None


@dataclass
class RpcContext:
    request: HttpRequest
    api_key: ApiKey
    actor: ApiKeyPrincipal  # what the companies.access helpers take: company, company_id, role

    @property
    def company(self):
        return self.api_key.company


@dataclass(frozen=True)
class RpcMethod:
    api: str
    name: str
    func: Callable[[RpcContext, dict], Any]
    scopes: tuple[str, ...]  # any one of them opens the method; () = any valid key
    not_found: str  # the error detail for a missing or foreign id
    versions: tuple[str, ...]


REGISTRY: dict[tuple[str, str, str], RpcMethod] = {}
# the original API name -> the A4 scopes that open it (any one); general is open to every key
API_SCOPES: dict[str, tuple[str, ...]] = {
    "general": (),
    "companies": (ApiKeyScope.COMPANIES,),
    "network": (ApiKeyScope.COMPANIES,),
    "packages": (ApiKeyScope.COMPANIES,),
    # the usage scope opens the usage figures (getMonthlyUsage*), not the subscriptions
    "licensing": (ApiKeyScope.LICENSING, ApiKeyScope.USAGE),
    "reports": (ApiKeyScope.REPORTS,),
}


def rpc_method(api: str, name: str, *, scopes: Iterable[str] | None = None, not_found: str = "Company not found.",
               versions: Iterable[str] = ("v1.0",)):
    def register(func):
        method = RpcMethod(api=api, name=name, func=func,
                           scopes=tuple(API_SCOPES[api] if scopes is None else scopes),
                           not_found=not_found, versions=tuple(versions))
        for version in method.versions:
            REGISTRY[(version, api, name)] = method
        return func

    return register


# --- params ------------------------------------------------------------------------------------------------

class Params:
    """Typed reads of the params object; each bad value answers -32602 naming the parameter."""

    def __init__(self, raw: dict, *, allowed: Iterable[str]):
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise invalid_param(unknown[0], f"unknown parameter; this method accepts: {', '.join(allowed)}.")
        self.raw = raw

    def __contains__(self, name: str) -> bool:
        return name in self.raw

    def string(self, name: str, *, required: bool = False, default: str | None = None,
               max_length: int | None = None) -> str | None:
        if name not in self.raw or self.raw[name] is None:
            if required:
                raise invalid_param(name, "required.")
            return default
        value = self.raw[name]
        if not isinstance(value, str):
            raise invalid_param(name, "must be a string.")
        if problem := text_unstorable(value):
            # PostgreSQL text cannot hold it: refused here, naming the parameter, not a 500 later
            raise invalid_param(name, problem)
        if max_length is not None and len(value) > max_length:
            raise invalid_param(name, f"at most {max_length} characters.")
        return value

    def integer(self, name: str, *, required: bool = False, default: int | None = None,
                minimum: int | None = None, maximum: int | None = None) -> int | None:
        if name not in self.raw or self.raw[name] is None:
            if required:
                raise invalid_param(name, "required.")
            return default
        value = self.raw[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid_param(name, "must be an integer.")
        if minimum is not None and value < minimum or maximum is not None and value > maximum:
            bounds = f"from {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise invalid_param(name, f"must be {bounds}.")
        return value

    def boolean(self, name: str, *, default: bool | None = None) -> bool | None:
        if name not in self.raw or self.raw[name] is None:
            return default
        value = self.raw[name]
        if not isinstance(value, bool):
            raise invalid_param(name, "must be true or false.")
        return value

    def obj(self, name: str) -> dict | None:
        if name not in self.raw or self.raw[name] is None:
            return None
        value = self.raw[name]
        if not isinstance(value, dict):
            raise invalid_param(name, "must be an object.")
        return value

    def id(self, name: str, *, required: bool = False) -> int | None:
        """A company id: the original sends ids as strings; ours are integers, accepted either way."""
        if name not in self.raw or self.raw[name] in (None, ""):
            if required:
                raise invalid_param(name, "required.")
            return None
        value = self.raw[name]
        if isinstance(value, bool):
            raise invalid_param(name, "must be an id (a string or an integer).")
        if isinstance(value, int):
            return value
        number = ascii_int(value) if isinstance(value, str) else None
        if number is None:
            raise invalid_param(name, "must be an id (a string or an integer).")
        return number

    def month(self, name: str) -> dt.date:
        """"mm/yyyy"; the default is the current month (UTC). The range is the REST API's
        (usage_month_parse): from 01/2000 up to the current month."""
        raw = self.string(name)
        if raw is None:
            return month_start(timezone.now())
        match = MONTH_FORMAT.fullmatch(raw)
        if match is None:
            raise invalid_param(name, f"{raw!r} is not a month in the format mm/yyyy.")
        month, year = int(match.group(1)), int(match.group(2))
        current = month_start(timezone.now())
        try:
            return usage_month_parse(f"{year:04d}-{month:02d}", field=name, today=current)
        except (ValidationError, ValueError, OverflowError):
            pass
        if 1 <= month <= 12 and (year, month) > (current.year, current.month):
            raise invalid_param(name, f"{raw} has not started yet: usage exists up to {current:%m/%Y}.")
        raise invalid_param(name, f"{raw!r} is not a month in the format mm/yyyy, from 01/2000 up to "
                                  f"{current:%m/%Y}.")


def date_param(name: str, value: Any) -> dt.date | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise invalid_param(name, "must be a date string (YYYY-MM-DD).")
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise invalid_param(name, f"{value!r} is not a date (YYYY-MM-DD).") from None


def service_errors(error: ValidationError, names: dict[str, str]) -> RpcError:
    """A service's ValidationError as -32602, naming the original API's parameter (X2)."""
    if hasattr(error, "error_dict"):
        field, messages = next(iter(error.message_dict.items()))
        return invalid_param(names.get(field, field), " ".join(messages))
    return RpcError(INVALID_PARAMS, " ".join(error.messages))


# --- the view ----------------------------------------------------------------------------------------------

def _envelope(request_id: Any, *, result: Any = None, error: RpcError | None = None) -> dict:
    body: dict[str, Any] = {"id": request_id, "jsonrpc": "2.0"}
    if error is None:
        body["result"] = result
    else:
        body["error"] = {"code": error.code, "message": error.message, "data": {"details": error.details}}
    return body


def _authenticate(request: HttpRequest) -> ApiKey:
    """HTTP Basic: the API key as the user name, an empty password (the original API's scheme)."""
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise RpcError(SERVER_ERROR, "Invalid API key: send it with HTTP Basic authentication, the key as the "
                                     "user name and an empty password.", http_status=401)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise RpcError(SERVER_ERROR, "Invalid API key.", http_status=401) from None
    raw_key = decoded.split(":", 1)[0]
    key = api_key_authenticate(raw_key) if raw_key else None
    if key is None:
        raise RpcError(SERVER_ERROR, "Invalid API key, or the key was revoked.", http_status=401)
    return key


def _parse(request: HttpRequest) -> dict:
    if len(request.body) > MAX_BODY_BYTES:
        raise RpcError(INVALID_REQUEST, f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    try:
        payload = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise RpcError(PARSE_ERROR, "The request body is not valid JSON.") from None
    if isinstance(payload, list):
        raise RpcError(INVALID_REQUEST, "Batch requests are not supported; send one request per call.")
    if not isinstance(payload, dict):
        raise RpcError(INVALID_REQUEST, "The request must be a JSON object.")
    return payload


def _check_envelope(payload: dict) -> tuple[str, dict]:
    if payload.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, "'jsonrpc' must be \"2.0\".")
    request_id = payload.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, str | int)):
        raise RpcError(INVALID_REQUEST, "'id' must be a string, a number or null.")
    method = payload.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, "'method' must be a non-empty string.")
    params = payload.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_REQUEST, "'params' must be an object (named parameters).")
    return method, params


def _respond(body: dict, status: int) -> HttpResponse:
    return JsonResponse(body, status=status)


@csrf_exempt
def jsonrpc_view(request: HttpRequest, version: str, api: str) -> HttpResponse:
    if api not in API_SCOPES or not any(key[:2] == (version, api) for key in REGISTRY):
        return _respond(_envelope(None, error=RpcError(METHOD_NOT_FOUND, f"There is no {api} API in {version}.")),
                        404)
    if request.method != "POST":
        response = _respond(_envelope(None, error=RpcError(INVALID_REQUEST, "Send requests with POST.")), 405)
        response["Allow"] = "POST"
        return response
    seen: dict[str, Any] = {"id": None}
    try:
        result = _handle(request, version, api, seen)
        return _respond(_envelope(seen["id"], result=result), 200)
    except RpcError as error:
        return _respond(_envelope(seen["id"], error=error), error.http_status)
    finally:
        connection.set_schema_to_public()


def _handle(request: HttpRequest, version: str, api: str, seen: dict) -> Any:
    """Authenticate, check the scope, read the envelope and call the method; `seen` gets the
    request's id as soon as it is known, so errors after that answer with it."""
    key = _authenticate(request)
    scopes = API_SCOPES[api]
    if scopes and not set(scopes) & set(key.scopes):
        raise RpcError(SERVER_ERROR, f"This API key does not have access to the {api} API "
                                     f"(it needs the '{scopes[0]}' scope).", http_status=403)
    payload = _parse(request)
    seen["id"] = payload.get("id") if isinstance(payload.get("id"), str | int) else None
    method_name, params = _check_envelope(payload)
    method = REGISTRY.get((version, api, method_name))
    if method is None:
        raise RpcError(METHOD_NOT_FOUND, f"The {api} API ({version}) has no method {method_name!r}.")
    if method.scopes and not set(method.scopes) & set(key.scopes):
        raise RpcError(SERVER_ERROR, f"This API key does not have access to {method_name} "
                                     f"(it needs the '{method.scopes[0]}' scope).", http_status=403)
    context = RpcContext(request=request, api_key=key, actor=ApiKeyPrincipal(key))
    return _call(method, context, params)


def _report_file(request: HttpRequest, file_id: int, fmt: str):
    from reports.delivery import access_report_file

    from .methods.reports import key_user

    key = _authenticate(request)
    if ApiKeyScope.REPORTS not in key.scopes:
        raise RpcError(SERVER_ERROR, "This API key does not have access to the reports API.", http_status=403)
    if fmt not in ("csv", "pdf"):
        raise Http404
    context = RpcContext(request=request, api_key=key, actor=ApiKeyPrincipal(key))
    return access_report_file(key_user(context), file_id)


def report_download_view(request: HttpRequest, file_id: int, fmt: str) -> HttpResponse:
    """GET a report file named by getDownloadLinks, with the same HTTP Basic key (reports scope);
    a missing and a foreign report answer the same 404 (C6)."""
    from django.http import FileResponse

    try:
        item = _report_file(request, file_id, fmt)
    except RpcError as error:
        return _respond(_envelope(None, error=error), error.http_status if error.http_status != 200 else 403)
    except Http404:
        return _respond(_envelope(None, error=RpcError(SERVER_ERROR, "Report not found.")), 404)
    finally:
        connection.set_schema_to_public()
    if fmt == "csv":
        return FileResponse(item.csv_file.open("rb"), as_attachment=True, filename=item.csv_name,
                            content_type="text/csv; charset=utf-8")
    return FileResponse(item.pdf_file.open("rb"), as_attachment=True, filename=item.pdf_name,
                        content_type="application/pdf")


def _call(method: RpcMethod, context: RpcContext, params: dict) -> Any:
    try:
        # a method's writes are all-or-nothing (X2): one transaction around the whole call; the
        # audit log names the key for changes made without a person (X1)
        with transaction.atomic(), audit_as_api_key(context.api_key):
            return method.func(context, params)
    except Http404:
        # the same answer for a missing and a foreign id (C6): the body never says which
        raise RpcError(SERVER_ERROR, method.not_found) from None
    except ValidationError as error:
        raise service_errors(error, {}) from None
