"""A small client for the ConnectWise PSA (Manage) REST API, version 3.0.

Authentication is HTTP Basic of "companyId+publicKey:privateKey" plus the clientId header on every
request. Lists are paged with `page` (from 1) and `pageSize`; filters use the `conditions` syntax
(`type/name="Managed Security" and company/id=250`). A 429 answer is retried after its Retry-After
(capped so a page or a worker is never held for long); every other failure raises PsaError, which
says whether trying again later may help.
"""

import base64
import datetime as dt
import email.utils
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

API_ROOT = "/v4_6_release/apis/3.0"
PAGE_SIZE = 100
MAX_PAGES = 50
ANSWER_LIMIT = 500
# B4: every 429 costs at least this long (a Retry-After of 0 or a past date would otherwise loop at full
# speed), and a call gives up after this many requests however short the waits were
MIN_RETRY_DELAY = 1.0
MAX_ATTEMPTS = 6


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed: its target was never checked against private addresses, and urllib
    would send the Authorization header along. The 3xx surfaces as an HTTPError instead."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_RefuseRedirects)


class PsaError(Exception):
    """The PSA did not do what was asked. `status` is None when it could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.status = status
        self.retryable = retryable

    @property
    def answer(self) -> str:
        prefix = f"ConnectWise answered {self.status}: " if self.status else ""
        return f"{prefix}{self}"[:ANSWER_LIMIT]


@dataclass(frozen=True)
class Credentials:
    site: str
    company_id: str
    public_key: str
    private_key: str
    client_id: str


def quote_condition(value: str) -> str:
    """A string literal for `conditions`: double-quoted, with inner quotes and backslashes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def api_base(site: str) -> str:
    site = site.rstrip("/")
    return site if "/apis/3.0" in site else site + API_ROOT


class ConnectWiseClient:
    def __init__(self, credentials: Credentials, *, timeout: float = 20.0, max_wait_seconds: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, max_attempts: int | None = None,
                 min_retry_delay: float | None = None):
        self.credentials = credentials
        self.base = api_base(credentials.site)
        self.timeout = timeout
        # the total time 429 answers may keep one call waiting; past it the call fails (retryable)
        self.max_wait_seconds = max_wait_seconds
        self.sleep = sleep
        self.max_attempts = MAX_ATTEMPTS if max_attempts is None else max_attempts
        self.min_retry_delay = MIN_RETRY_DELAY if min_retry_delay is None else min_retry_delay
        self.last_status: int | None = None

    # --- transport ----------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        c = self.credentials
        token = base64.b64encode(f"{c.company_id}+{c.public_key}:{c.private_key}".encode()).decode()
        return {"Authorization": f"Basic {token}", "clientId": c.client_id, "Accept": "application/json",
                "Content-Type": "application/json"}

    def request(self, method: str, path: str, *, params: dict | None = None, body=None):
        url = self.base + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        waited, attempts = 0.0, 0
        while True:
            attempts += 1
            req = urllib.request.Request(url, data=data, method=method, headers=self._headers())  # noqa: S310
            try:
                with _OPENER.open(req, timeout=self.timeout) as response:
                    self.last_status = response.status
                    raw = response.read()
                    return json.loads(raw) if raw else None
            except urllib.error.HTTPError as error:
                self.last_status = error.code
                text = _error_text(error)
                if error.code == 429:
                    delay = max(retry_after_seconds(error.headers.get("Retry-After")), self.min_retry_delay)
                    if attempts >= self.max_attempts or waited + delay > self.max_wait_seconds:
                        raise PsaError(f"too many requests ({attempts} tries); retry after {delay:g} s",
                                      status=429) from None
                    logger.info("connectwise.throttled", extra={"path": path, "retry_after": delay})
                    self.sleep(delay)
                    waited += delay
                    continue
                if 300 <= error.code < 400:
                    target = error.headers.get("Location") or "another address"
                    raise PsaError(f"ConnectWise sent a redirect to {target}; redirects are not followed. Enter the "
                                   "site's final address.", status=error.code, retryable=False) from None
                # B4: network, 4xx and 5xx failures alike are retried with back-off (bounded by the task)
                raise PsaError(text, status=error.code) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
                self.last_status = None
                reason = getattr(error, "reason", error)
                raise PsaError(f"ConnectWise could not be reached at {self.credentials.site}: {reason}") from None
            except ValueError:
                raise PsaError("ConnectWise answered with something that is not JSON.",
                               status=self.last_status) from None

    def get_all(self, path: str, *, conditions: str = "", page_size: int = PAGE_SIZE) -> list[dict]:
        """Every page of a list (stops at a short page)."""
        rows: list[dict] = []
        for page in range(1, MAX_PAGES + 1):
            params = {"page": page, "pageSize": page_size}
            if conditions:
                params["conditions"] = conditions
            batch = self.request("GET", path, params=params) or []
            rows.extend(batch)
            if len(batch) < page_size:
                break
        return rows

    # --- endpoints ----------------------------------------------------------------------------------

    def system_info(self) -> dict:
        """The authentication check: who answers, and which version."""
        return self.request("GET", "/system/info") or {}

    def companies(self, *, identifier: str) -> list[dict]:
        return self.get_all("/company/companies", conditions=f"identifier={quote_condition(identifier)}")

    def agreements(self, *, company_ref: int, type_name: str) -> list[dict]:
        """Open agreements of the company whose type name matches as the PSA compares (it ignores case;
        the caller compares exactly)."""
        return self.get_all("/finance/agreements", conditions=(
            f"company/id={int(company_ref)} and type/name={quote_condition(type_name)} and cancelledFlag=false"))

    def agreements_of_company(self, *, company_ref: int) -> list[dict]:
        return self.get_all("/finance/agreements",
                            conditions=f"company/id={int(company_ref)} and cancelledFlag=false")

    def products(self, *, identifier: str) -> list[dict]:
        return self.get_all("/procurement/catalog", conditions=f"identifier={quote_condition(identifier)}")

    def additions(self, *, agreement_ref: int, description: str) -> list[dict]:
        return self.get_all(f"/finance/agreements/{int(agreement_ref)}/additions",
                            conditions=f"description={quote_condition(description)}")

    def addition_create(self, *, agreement_ref: int, product_ref: int, quantity: int, effective_date: dt.date,
                        cancelled_date: dt.date, description: str) -> dict:
        """An addition is billed on every invoice from its effective date to its cancelled date: a
        month's addition runs from the month's first day to its last, so each invoice bills its month."""
        return self.request("POST", f"/finance/agreements/{int(agreement_ref)}/additions", body={
            "product": {"id": int(product_ref)},
            "quantity": quantity,
            "billCustomer": "Billable",
            "effectiveDate": psa_date(effective_date),
            "cancelledDate": psa_date(cancelled_date),
            "description": description,
        }) or {}

    def addition_update(self, *, agreement_ref: int, addition_ref: int, quantity: int,
                        cancelled_date: dt.date | None = None) -> dict:
        """The quantity, and (given) the cancelled date again, so an addition never stays open-ended."""
        operations = [{"op": "replace", "path": "quantity", "value": quantity}]
        if cancelled_date is not None:
            operations.append({"op": "replace", "path": "cancelledDate", "value": psa_date(cancelled_date)})
        return self.request("PATCH", f"/finance/agreements/{int(agreement_ref)}/additions/{int(addition_ref)}",
                            body=operations) or {}


def psa_date(day: dt.date) -> str:
    """ConnectWise dates are ISO 8601 in UTC: 2026-11-30T00:00:00Z."""
    return f"{day.isoformat()}T00:00:00Z"


def retry_after_seconds(value: str | None, *, default: float = 5.0) -> float:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _error_text(error: urllib.error.HTTPError) -> str:
    """ConnectWise errors are JSON with `message` (and `errors` for validation)."""
    try:
        raw = error.read().decode("utf-8", "replace")
    except OSError:
        raw = ""
    try:
        payload = json.loads(raw)
    except ValueError:
        return (raw or error.reason or "no message")[:ANSWER_LIMIT]
    if isinstance(payload, dict):
        parts = [str(payload.get("message") or payload.get("code") or "")]
        for item in payload.get("errors") or []:
            if isinstance(item, dict) and item.get("message"):
                parts.append(str(item["message"]))
        return " ".join(p for p in parts if p)[:ANSWER_LIMIT] or raw[:ANSWER_LIMIT]
    return raw[:ANSWER_LIMIT]
