"""REST API for licensing (/api/v1/): the catalogue, each company's seats, trials and subscription,
own-use and reselling selections, and MDR contact details. Thin: parse, one access helper and one
service, render. The rules are the services' (licensing.seats, .subscriptions, .entitlements,
.services.license_update, the same as the Licensing page's); visibility is companies.access's; the
foundation (callers, scopes, scoping, errors) is gz_console.api.

Who may do what
    Every route needs the ``licensing`` scope on an API key. The catalogue is open to every role;
    the rest, like the Licensing page, is for company administrators (A2). A company's licensing is
    read by the company itself and the partners above it (C6); it is changed only by a partner
    above it (the company's own administrators get 403: their partner sets what they may use).
    Trial endpoints are an endpoint list, so they need the network to be visible (C1-C3). MDR
    contact details are a partner's own (My Company): readable by it and the partners above it,
    set only by its own administrators.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.exceptions import ValidationError
from django.db.models import Count, F, Q
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions
from rest_framework.decorators import action
from rest_framework.response import Response

from companies.access import access_company_network, access_managed_company, in_subtree
from companies.models import ApiKeyScope, Company, CompanyType
from companies.selectors import access_company
from gz_console.api import CompanyScopedAPIView, DetailSerializer, ErrorsSerializer

from .entitlements import entitlements_set, mdr_contact_set, selection_of, validate_resell
from .models import CatalogItem, License, MdrContact, ModelRule, Purpose, SeatAssignment, SeatState
from .serializers import (
    CatalogueSerializer,
    CompanyLicensingRowSerializer,
    CompanyLicensingSerializer,
    LicenseUpdateSerializer,
    MdrContactInputSerializer,
    MdrContactSerializer,
    SelectionInputSerializer,
    SelectionSerializer,
    TrialSerializer,
)
from .services import license_update, licensing_summary
from .views import parent_resell_keys

NOT_FOUND = OpenApiResponse(DetailSerializer, description="Missing, or not visible to the caller (C6).")
BAD_INPUT = OpenApiResponse(ErrorsSerializer, description="Refused by a rule; the messages name the field "
                                                          "and the rule (X2).")
FORBIDDEN = OpenApiResponse(DetailSerializer, description="The caller's role or the key's scope does not "
                                                          "allow this, or the company's licensing is set by "
                                                          "its partner.")

# what entitlements.validate_own_use names its refusals by: in the API they are on the field sent
OWN_USE_ERROR_KEYS = frozenset({"own_use", "product_type", "protection_model", "addons", "xdr_sensors",
                                "retention_tier", "services"})
RESELL_ERROR_KEYS = frozenset({"resell"})


@contextmanager
def errors_on(field_for: dict[str, str]) -> Iterator[None]:
    """Re-key a service's refusal onto the request's own field names, keeping every message."""
    try:
        yield
    except ValidationError as error:
        if not hasattr(error, "error_dict"):
            raise
        errors: dict[str, list[str]] = {}
        for key, messages in error.message_dict.items():
            errors.setdefault(field_for.get(key, key), []).extend(messages)
        raise ValidationError(errors) from error


def _ref(company: Company) -> dict:
    return {"id": company.pk, "name": company.name}


# --- the catalogue ----------------------------------------------------------------------------------

@extend_schema(tags=["licensing"])
class CatalogueViewSet(CompanyScopedAPIView):
    """The catalogue, read from the data the migrations load (E2): nothing is hard-coded here."""

    queryset = CatalogItem.objects.all()
    serializer_class = CatalogueSerializer
    required_scope = ApiKeyScope.LICENSING
    open_actions = frozenset({"read"})
    pagination_class = None

    def dangerously_get_queryset(self):
        # The catalogue is the same for every company and holds no company data: nothing to scope.
        return CatalogItem.objects.select_related("parent").prefetch_related("product_types").order_by(
            "kind", "rank", "name")

    @extend_schema(
        summary="The catalogue: product types, protection models, add-ons, services (E1, E2, E7)",
        description="The same for every company: items with their parent (XDR sensor categories, Data "
                    "Retention tiers), and which protection model includes or excludes which item.",
        responses={200: CatalogueSerializer, 403: FORBIDDEN})
    def read(self, request):
        # one document, not a paginated list: routed as GET catalogue/ in api_urls
        rules = ModelRule.objects.select_related("protection_model", "item").order_by(
            "protection_model__rank", "item__kind", "item__rank")
        return Response(CatalogueSerializer({"items": self.get_queryset(), "rules": rules}).data)


# --- a company's licensing --------------------------------------------------------------------------

@extend_schema(tags=["licensing"])
@extend_schema_view(
    list=extend_schema(summary="Seats and subscriptions of the caller's company and the companies below it",
                       responses={200: CompanyLicensingRowSerializer(many=True), 403: FORBIDDEN}),
    retrieve=extend_schema(
        summary="A company's licensing: reservation, pool, trials, subscription, minimum usage",
        description="L1-L4 and L6 (seats), S1, S3 and S5 (subscription, license type and key). A pool "
                    "or an end date owned by a company outside the caller's view is shown without that "
                    "company (C6).",
        responses={200: CompanyLicensingSerializer, 403: FORBIDDEN, 404: NOT_FOUND}),
    partial_update=extend_schema(
        summary="Change a company's reservation, minimum usage, subscription and selections",
        description="Only the fields sent change, in one transaction: the first rule that refuses "
                    "(L1, L3, L6, S1, S2, S3, E1-E7) rolls back everything and names its field. The same "
                    "service as the Licensing page; every change is in the audit log (X1).",
        request=LicenseUpdateSerializer,
        responses={200: CompanyLicensingSerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND}),
)
class LicensingViewSet(CompanyScopedAPIView):
    """Licensing of the companies in the caller's view, keyed by company id."""

    queryset = Company.objects.all()
    serializer_class = CompanyLicensingSerializer
    required_scope = ApiKeyScope.LICENSING

    MANAGE_ACTIONS = frozenset({"partial_update", "set_own_use", "set_reselling"})

    def access_object(self, lookup):
        if self.action == "trials":
            # an endpoint list: network data (C1-C3)
            return access_company_network(self.actor, lookup)
        company = access_company(self.actor, lookup)
        if self.action in self.MANAGE_ACTIONS:
            if company.pk == self.actor.company_id:
                raise exceptions.PermissionDenied(
                    "A company's licensing is set by its partner; it cannot change its own.")
            return access_managed_company(self.actor, lookup)
        if self.action == "set_mdr_contact" and company.pk != self.actor.company_id:
            raise exceptions.PermissionDenied(
                "MDR contact details are set by the partner itself, on its My Company page.")
        return company

    # -- reading ------------------------------------------------------------------------------------

    def list(self, request):
        companies = (self.get_queryset()
                     .annotate(lic_reserved=F("license__reserved_seats"), lic_minimum=F("license__minimum_usage"),
                               lic_end=F("license__end_date"), lic_renew=F("license__auto_renew"),
                               licensed=Count("seat_assignments",
                                              filter=Q(seat_assignments__state=SeatState.LICENSED)),
                               trial=Count("seat_assignments", filter=Q(seat_assignments__state=SeatState.TRIAL)),
                               expired=Count("seat_assignments",
                                             filter=Q(seat_assignments__state=SeatState.EXPIRED)))
                     .order_by("lineage"))
        page = self.paginate_queryset(companies)
        # S1 for the whole page in one query: each company's nearest dated company on its lineage
        lineage_ids = {int(p) for c in page for p in c.lineage.strip("/").split("/")}
        own_ends = dict(License.objects.filter(company_id__in=lineage_ids, end_date__isnull=False)
                        .values_list("company_id", "end_date"))
        rows = []
        for company in page:
            chain = [int(p) for p in reversed(company.lineage.strip("/").split("/"))]
            effective = next((own_ends[i] for i in chain if i in own_ends), None)
            rows.append({"company": _ref(company), "type": company.type, "reserved_seats": company.lic_reserved,
                         "minimum_usage": company.lic_minimum, "end_date": company.lic_end,
                         "effective_end_date": effective, "auto_renew": bool(company.lic_renew),
                         "seats": {"licensed": company.licensed, "trial": company.trial,
                                   "expired": company.expired}})
        return self.get_paginated_response(CompanyLicensingRowSerializer(rows, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(self._licensing(self.get_object()))

    def _licensing(self, company: Company) -> dict:
        viewer = self.caller_company
        summary = licensing_summary(company=company)
        lic, pool = summary["license"], summary["pool"]
        pool_visible = in_subtree(viewer, pool.owner)
        end_owner = summary["end_date_owner"]
        trials_ending = (SeatAssignment.objects.filter(company=company, state=SeatState.TRIAL)
                         .values("trial_ends_on").annotate(endpoints=Count("id")).order_by("trial_ends_on"))
        data = {
            "company": _ref(company),
            "license_type": lic.license_type,
            "license_key": company.license_key,
            "reserved_seats": lic.reserved_seats,
            # what the parent's pool has free: the parent is in view only for a company below the caller
            "available_to_reserve": summary["available_to_reserve"] if company.pk != viewer.pk else None,
            "minimum_usage": lic.minimum_usage,
            "pool": {
                "shared": lic.reserved_seats is None,
                "in_view": pool_visible,
                "owner": _ref(pool.owner) if pool_visible else None,
                "capacity": pool.capacity if pool_visible else None,
                "used": pool.used if pool_visible else None,
                "reserved_below": pool.carved if pool_visible else None,
                "free": pool.free if pool_visible else None,
            },
            "seats": summary["seat_counts"],
            "trials_ending": list(trials_ending),
            "subscription": {
                "end_date": lic.end_date,
                "effective_end_date": summary["effective_end_date"],
                "inherited": end_owner is not None and end_owner.pk != company.pk,
                "inherited_from": _ref(end_owner) if (end_owner is not None and end_owner.pk != company.pk
                                                      and in_subtree(viewer, end_owner)) else None,
                "auto_renew": lic.auto_renew,
                "renew_months": lic.renew_months,
            },
        }
        return CompanyLicensingSerializer(data).data

    @extend_schema(summary="Trial endpoints of a company, with the last day of each trial (L4)",
                   description="Oldest first: the order in which they take seats that free up. An endpoint "
                               "list, so only where the caller sees the company's network (C1-C3).",
                   responses={200: TrialSerializer(many=True), 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["get"])
    def trials(self, request, pk=None):
        company = self.get_object()
        trials = SeatAssignment.objects.filter(company=company, state=SeatState.TRIAL).order_by("first_seen_at", "id")
        page = self.paginate_queryset(trials)
        return self.get_paginated_response(TrialSerializer(page, many=True).data)

    # -- changing -----------------------------------------------------------------------------------

    def partial_update(self, request, pk=None):
        company = self.get_object()
        data = self.parse_input(LicenseUpdateSerializer, partial=True)
        if not data:
            raise ValidationError({"non_field_errors": ["Send at least one field to change."]})
        own_use = set(data.pop("own_use")) if "own_use" in data else None
        resell = set(data.pop("resell")) if "resell" in data else None
        if resell is not None and company.type != CompanyType.PARTNER:
            validate_resell(company=company, keys=resell)  # E4: refuses, naming the field
        with errors_on(dict.fromkeys(OWN_USE_ERROR_KEYS, "own_use")):
            license_update(actor=self.audit_actor, company=company, own_use=own_use, resell=resell, **data)
        company.refresh_from_db()
        return Response(self._licensing(company))

    # -- selections (E1-E7) -------------------------------------------------------------------------

    def _selection(self, company: Company, purpose: str) -> dict:
        if purpose == Purpose.RESELL and company.type != CompanyType.PARTNER:
            with errors_on({"resell": "purpose"}):
                validate_resell(company=company, keys=set())  # E4
        selection = selection_of(company=company, purpose=purpose)
        # what the parent makes available, when the parent is in the caller's view (C6)
        available = (parent_resell_keys(company.parent)
                     if company.parent_id is not None and company.pk != self.caller_company.pk else None)
        return SelectionSerializer({
            "company": _ref(company), "purpose": purpose, "items": sorted(selection.keys),
            "included": sorted(selection.included), "excluded": sorted(selection.excluded),
            "effective": sorted(selection.effective),
            "available": sorted(available) if available is not None else None,
        }).data

    def _set_selection(self, company: Company, purpose: str) -> dict:
        items = set(self.parse_input(SelectionInputSerializer)["items"])
        with errors_on(dict.fromkeys(OWN_USE_ERROR_KEYS | RESELL_ERROR_KEYS, "items")):
            entitlements_set(actor=self.audit_actor, company=company, purpose=purpose, keys=items)
        return self._selection(company, purpose)

    @extend_schema(summary="Products, add-ons and services a company uses itself (E1, E2, E6, E7)",
                   responses={200: SelectionSerializer, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["get"], url_path="own-use")
    def own_use(self, request, pk=None):
        return Response(self._selection(self.get_object(), Purpose.OWN_USE))

    @extend_schema(summary="Replace a company's own-use selection",
                   description="One product type; for Endpoint Security one protection model, whose included "
                               "items come with it and whose excluded items are refused (E1, E2); only what "
                               "the parent resells (E3); Secure Plus and Secure Extra only from a partner with "
                               "complete MDR contact details (E5); MDR Foundations only when every E6 "
                               "requirement holds, each missing one named. Audited (X1).",
                   request=SelectionInputSerializer,
                   responses={200: SelectionSerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @own_use.mapping.put
    def set_own_use(self, request, pk=None):
        return Response(self._set_selection(self.get_object(), Purpose.OWN_USE))

    @extend_schema(summary="Products, add-ons and services a partner resells (E3, E4)",
                   responses={200: SelectionSerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["get"])
    def reselling(self, request, pk=None):
        return Response(self._selection(self.get_object(), Purpose.RESELL))

    @extend_schema(summary="Replace a partner's reselling selection",
                   description="Partners only (E4); a subset of its own partner's reselling selection (E3); "
                               "Secure Plus and Secure Extra need the partner's complete MDR contact details "
                               "(E5). Dropping an item a company below still uses is refused, naming that "
                               "company (E3). Audited (X1).",
                   request=SelectionInputSerializer,
                   responses={200: SelectionSerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @reselling.mapping.put
    def set_reselling(self, request, pk=None):
        return Response(self._set_selection(self.get_object(), Purpose.RESELL))

    # -- MDR contact details (E5, E6) ---------------------------------------------------------------

    @staticmethod
    def _contact(company: Company) -> MdrContact:
        if company.type != CompanyType.PARTNER:
            raise ValidationError({"mdr_contact": "MDR contact details belong to partners."})
        return MdrContact.objects.filter(company=company).first() or MdrContact(company=company)

    @extend_schema(summary="A partner's MDR contact details and whether they are complete (E5, E6)",
                   responses={200: MdrContactSerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @action(detail=True, methods=["get"], url_path="mdr-contact")
    def mdr_contact(self, request, pk=None):
        return Response(MdrContactSerializer(self._contact(self.get_object())).data)

    @extend_schema(summary="Set the caller's own MDR contact details (partners; My Company)",
                   description="Only the fields sent change. Audited (X1).",
                   request=MdrContactInputSerializer,
                   responses={200: MdrContactSerializer, 400: BAD_INPUT, 403: FORBIDDEN, 404: NOT_FOUND})
    @mdr_contact.mapping.patch
    def set_mdr_contact(self, request, pk=None):
        company = self.get_object()
        self._contact(company)
        changes = self.parse_input(MdrContactInputSerializer, partial=True)
        contact = mdr_contact_set(actor=self.audit_actor, company=company, **changes)
        return Response(MdrContactSerializer(contact).data)
