"""X1: the audit log. Every service that changes companies, reservations, subscriptions,
entitlements, users or integrations records an event here, in the same transaction."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db.models import QuerySet
from django.db.models.fields.files import FieldFile
from django.forms.models import model_to_dict

from .models import AuditEvent, Company, User

SECRET_FIELDS = {"password", "totp_secret", "key_hash", "private_key", "token_hash"}
# X1: the API key a request runs under. Services record a key's changes with no person (actor None);
# the event names the key instead of "system". Set per request by the REST and JSON-RPC front doors.
_API_KEY_LABEL: ContextVar[str | None] = ContextVar("audit_api_key_label", default=None)


def api_key_label(key) -> str:
    return f"API key {key.prefix} ({key.name})"[:254]


@contextmanager
def audit_as_api_key(key) -> Iterator[None]:
    """Changes recorded without a person inside this block name `key` (None: "system")."""
    token = _API_KEY_LABEL.set(api_key_label(key) if key is not None else None)
    try:
        yield
    finally:
        _API_KEY_LABEL.reset(token)


def audit_api_key_set(key) -> None:
    """The same, for a caller that cannot wrap a block (DRF authenticates inside dispatch); the
    caller resets by leaving an audit_as_api_key(None) block around it."""
    _API_KEY_LABEL.set(api_key_label(key))


def _jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, FieldFile):
        return value.name or ""
    return str(value)


def snapshot(instance, fields: list[str] | None = None) -> dict:
    """The audited state of a model instance; secrets never enter the log."""
    data = model_to_dict(instance, fields=fields)
    return {k: _jsonable(v) for k, v in data.items() if k not in SECRET_FIELDS}


def audit_record(*, actor: User | None, company: Company, action: str, obj, before: dict | None = None,
                 after: dict | None = None, lineage: str | None = None) -> AuditEvent | None:
    """Record a change; a change that changed nothing is not recorded. The event keeps the
    company's lineage (or `lineage`, a move's old place): who may read it is decided by the tree as
    it was, not as it is later (audit_events_visible)."""
    if before is not None and after is not None:
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        if not changed:
            return None
        before = {k: before.get(k) for k in sorted(changed)}
        after = {k: after.get(k) for k in sorted(changed)}
    return AuditEvent.objects.create(
        company=company,
        lineage=lineage or company.lineage,
        actor=actor,
        actor_label=actor.email if actor is not None else (_API_KEY_LABEL.get() or "system"),
        action=action,
        object_type=obj._meta.model_name if hasattr(obj, "_meta") else str(type(obj).__name__),
        object_id=str(getattr(obj, "pk", "")),
        object_label=str(obj)[:255],
        before=before,
        after=after,
    )


def audit_events_visible(*, viewer_company: Company, company: Company | None = None) -> QuerySet[AuditEvent]:
    """Events the viewer may read: those of its own company and of companies below it, recorded
    while the viewer was the company or above it (C6: a partner a company moved under does not read
    its earlier history, nor the old partner's people; the old partner keeps its own "moved out")."""
    events = AuditEvent.objects.filter(company__lineage__startswith=viewer_company.lineage,
                                       lineage__contains=f"/{viewer_company.pk}/")
    if company is not None:
        events = events.filter(company=company)
    return events.select_related("company")
