"""A local ConnectWise PSA (Manage) REST API for the tests: the endpoints the sync uses, from the
published API reference, with its authentication, `conditions` filtering (compared without regard
to case, as the PSA's database does), `page`/`pageSize` paging, agreement additions (POST to create,
PATCH with JSON Patch to change the quantity), and 429/500 answers on demand. An addition is on
every invoice from its effectiveDate to its cancelledDate (open-ended without one): `billed_in`
says which additions an agreement's invoice for a month carries. Everything it
receives is recorded so tests can assert on what was sent."""

import base64
import datetime as dt
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "/v4_6_release/apis/3.0"
DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")  # ConnectWise dates: ISO 8601, UTC
CONDITION = re.compile(r'\s*([\w/]+)\s*(=|!=)\s*("(?:[^"\\]|\\.)*"|\d+|true|false)\s*', re.IGNORECASE)


def parse_conditions(text: str) -> list[tuple[str, str, object]]:
    """`a/b="x" and c=1 and d=false` -> [(path, op, value)]; only `and` is used by the client."""
    clauses = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if text.strip() else []:
        match = CONDITION.fullmatch(part)
        if not match:
            raise ValueError(f"cannot parse condition {part!r}")
        path, op, raw = match.groups()
        if raw.startswith('"'):
            value: object = re.sub(r"\\(.)", r"\1", raw[1:-1])
        elif raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            value = int(raw)
        clauses.append((path, op, value))
    return clauses


def _lookup(row: dict, path: str):
    value: object = row
    for key in path.split("/"):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def matches(row: dict, clauses) -> bool:
    for path, op, wanted in clauses:
        value = _lookup(row, path)
        if isinstance(wanted, str) and isinstance(value, str):
            equal = value.lower() == wanted.lower()  # the PSA compares strings without case
        else:
            equal = value == wanted
        if equal != (op == "="):
            return False
    return True


@dataclass
class Received:
    method: str
    path: str
    query: dict
    body: object
    headers: dict


@dataclass
class Fault:
    method: str
    path_prefix: str
    status: int
    retry_after: str | None = None
    # the request is carried out and then answered with the error (an answer lost on the way)
    after_effect: bool = False
    location: str | None = None  # a redirect's target (3xx)


@dataclass
class FakeConnectWise:
    company_id: str = "gzmsp"
    public_key: str = "pub-key-123"
    private_key: str = "priv-key-456"
    client_id: str = "client-789"
    companies: list[dict] = field(default_factory=list)
    agreements: list[dict] = field(default_factory=list)
    products: list[dict] = field(default_factory=list)
    additions: dict[int, list[dict]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    next_id: int = 1000
    url: str = ""

    def __post_init__(self):
        self.lock = threading.Lock()

    # --- set-up helpers --------------------------------------------------------------------------------

    def add_company(self, identifier: str, name: str | None = None) -> dict:
        row = {"id": self._id(), "identifier": identifier, "name": name or identifier}
        self.companies.append(row)
        return row

    def add_agreement(self, company: dict, type_name: str, name: str | None = None, status: str = "Active") -> dict:
        row = {"id": self._id(), "name": name or f"{company['name']} {type_name}",
               "type": {"id": 7, "name": type_name},
               "company": {"id": company["id"], "identifier": company["identifier"], "name": company["name"]},
               "agreementStatus": status, "cancelledFlag": status == "Cancelled"}
        self.agreements.append(row)
        self.additions[row["id"]] = []
        return row

    def add_product(self, identifier: str) -> dict:
        row = {"id": self._id(), "identifier": identifier, "description": identifier}
        self.products.append(row)
        return row

    def fail(self, method: str, path_prefix: str, status: int, *, times: int = 1, retry_after: str | None = None,
             after_effect: bool = False, location: str | None = None) -> None:
        for _ in range(times):
            self.faults.append(Fault(method, path_prefix, status, retry_after, after_effect, location))

    def calls(self, method: str, path_part: str = "") -> list[Received]:
        return [r for r in self.received if r.method == method and path_part in r.path]

    def billed_in(self, agreement_id: int, month: dt.date) -> list[dict]:
        """The additions the agreement's invoice for `month` bills: effective by the month's end and not
        cancelled before it starts."""
        following = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        billed = []
        for row in self.additions[agreement_id]:
            effective = _day(row.get("effectiveDate")) or dt.date.min
            cancelled = _day(row.get("cancelledDate")) or dt.date.max
            if effective < following and cancelled >= month:
                billed.append(row)
        return billed

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    # --- the API ---------------------------------------------------------------------------------------

    def authorized(self, headers) -> bool:
        expected = base64.b64encode(f"{self.company_id}+{self.public_key}:{self.private_key}".encode()).decode()
        return headers.get("Authorization") == f"Basic {expected}" and headers.get("clientId") == self.client_id

    def handle(self, method: str, path: str, query: dict, body, headers) -> tuple[int, object, dict]:
        with self.lock:
            self.received.append(Received(method, path, query, body, {k.lower(): v for k, v in headers.items()}))
            fault = next((f for f in self.faults if f.method == method and path.startswith(API + f.path_prefix)),
                         None)
            if fault is not None:
                self.faults.remove(fault)
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                if fault.location:
                    extra["Location"] = fault.location
                if fault.after_effect:
                    self._route(method, path, query, body)
                return fault.status, {"code": "Fault", "message": f"Injected {fault.status}"}, extra
            if not self.authorized(headers):
                return 401, {"code": "Unauthorized", "message": "Authentication failed"}, {}
            return self._route(method, path, query, body)

    def _page(self, rows: list[dict], query: dict) -> list[dict]:
        try:
            clauses = parse_conditions(query.get("conditions", ""))
        except ValueError as error:
            raise BadRequest(str(error)) from None
        rows = [r for r in rows if matches(r, clauses)]
        page = int(query.get("page", 1))
        size = min(int(query.get("pageSize", 25)), 1000)
        return rows[(page - 1) * size: page * size]

    def _route(self, method: str, path: str, query: dict, body) -> tuple[int, object, dict]:
        rel = path[len(API):] if path.startswith(API) else path
        try:
            if method == "GET" and rel == "/system/info":
                return 200, {"version": "v2025.1.12345", "isCloud": True, "serverTimeZone": "UTC"}, {}
            if method == "GET" and rel == "/company/companies":
                return 200, self._page(self.companies, query), {}
            if method == "GET" and rel == "/finance/agreements":
                return 200, self._page(self.agreements, query), {}
            if method == "GET" and rel == "/procurement/catalog":
                return 200, self._page(self.products, query), {}
            match = re.fullmatch(r"/finance/agreements/(\d+)/additions(?:/(\d+))?", rel)
            if match:
                return self._additions(method, int(match[1]), match[2] and int(match[2]), query, body)
        except BadRequest as error:
            return 400, {"code": "InvalidObject", "message": str(error)}, {}
        return 404, {"code": "NotFound", "message": f"No route {method} {rel}"}, {}

    def _additions(self, method, agreement_id, addition_id, query, body):
        if agreement_id not in self.additions:
            return 404, {"code": "NotFound", "message": "Agreement not found"}, {}
        rows = self.additions[agreement_id]
        if method == "GET" and addition_id is None:
            return 200, self._page(rows, query), {}
        if method == "POST" and addition_id is None:
            if not isinstance(body, dict) or not (body.get("product") or {}).get("id") or not body.get("billCustomer"):
                return 400, {"code": "InvalidObject", "message": "product and billCustomer are required",
                             "errors": [{"code": "NullObject", "message": "product is required"}]}, {}
            if problem := _dates_problem(body):
                return 400, {"code": "InvalidObject", "message": problem}, {}
            row = {**body, "id": self._id(), "agreementId": agreement_id}
            rows.append(row)
            return 201, row, {}
        row = next((r for r in rows if r["id"] == addition_id), None)
        if row is None:
            return 404, {"code": "NotFound", "message": "Addition not found"}, {}
        if method == "PATCH":
            for op in body:
                if op.get("op") != "replace":
                    return 400, {"code": "InvalidObject", "message": "only replace is supported"}, {}
            changed = {**row, **{op["path"].strip("/"): op["value"] for op in body}}
            if problem := _dates_problem(changed):
                return 400, {"code": "InvalidObject", "message": problem}, {}
            row.update(changed)
            return 200, row, {}
        return 405, {"code": "MethodNotAllowed", "message": method}, {}


class BadRequest(Exception):
    pass


def _day(value) -> dt.date | None:
    return dt.date.fromisoformat(value[:10]) if value else None


def _dates_problem(row: dict) -> str | None:
    for key in ("effectiveDate", "cancelledDate"):
        value = row.get(key)
        if value is not None and not (isinstance(value, str) and DATE.fullmatch(value)):
            return f"{key} must be an ISO 8601 UTC date like 2026-11-30T00:00:00Z"
    if row.get("cancelledDate") and row.get("effectiveDate") and row["cancelledDate"] < row["effectiveDate"]:
        return "cancelledDate must not be before effectiveDate"
    return None


def serve(fake: FakeConnectWise):
    """Start the server on a free port; returns (server, thread). fake.url is its site address."""

    class Handler(BaseHTTPRequestHandler):
        def _do(self):
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            status, payload, extra = fake.handle(self.command, parts.path, query, body, self.headers)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = _do

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server, thread
