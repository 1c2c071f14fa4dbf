"""Seats: pools, reservations, assignment with trial overflow, promotion and expiry (L1-L6, T5, T7).

Invariants, per SeatPool row:
  used   = licensed endpoints of the pool's members
  carved = sum of the reservations carved out of this pool by companies below
  used + carved <= capacity (a CHECK constraint; capacity None means unlimited)
Every change takes the pool rows it touches with SELECT ... FOR UPDATE in id order (no deadlocks)
or changes them with one conditional UPDATE, so concurrent installs cannot oversell (L5).
Which pool a company draws from is decided under a lock on its company row and its ancestors'
(_company_locked): a reservation and a move lock their company FOR UPDATE before any pool, so the
pool cannot change between a registration choosing it and taking a seat there (L1, L2). A reservation
first locks the ancestors FOR KEY SHARE (id order, like registrations), so the parent's pool it carves
from cannot change under it either (L3, _reserving_company_locked).
"""

import calendar
import copy
import datetime as dt
import uuid
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Case, F, Q, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from companies.audit import audit_record
from companies.models import Company, CompanyStatus, User
from companies.selectors import company_subtree

from .models import MAX_SEATS, License, SeatAssignment, SeatPool, SeatState


@dataclass(frozen=True)
class SeatInfo:
    state: str
    trial_ends_on: dt.date | None

    def as_json(self) -> dict:
        return {"state": self.state,
                "trial_ends_at": self.trial_ends_on.isoformat() if self.trial_ends_on else None}


def trial_end_for(day: dt.date) -> dt.date:
    """L4: a trial lasts until the end of the next month."""
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return dt.date(year, month, calendar.monthrange(year, month)[1])


def license_of(company: Company) -> License:
    lic, _ = License.objects.get_or_create(company=company)
    return lic


def pool_owner(company: Company) -> Company:
    """L2: the company itself when it has a reservation, else the nearest ancestor with one, else
    the platform (the root). One query over the company's lineage."""
    ids = [int(p) for p in company.lineage.strip("/").split("/")]
    owner = (Company.objects.filter(pk__in=ids[1:], license__reserved_seats__isnull=False)
             .order_by("-depth").first())
    if owner is not None:
        return owner
    return Company.objects.get(pk=ids[0])


def pool_of(company: Company) -> SeatPool:
    owner = pool_owner(company)
    pool = SeatPool.objects.filter(owner=owner).first()
    if pool is None:  # only the platform's pool is created lazily
        capacity = license_of(owner).platform_seats if owner.parent_id is None else None
        pool, _ = SeatPool.objects.get_or_create(owner=owner, defaults={"capacity": capacity})
    return pool


def pool_members(pool: SeatPool):
    """The companies drawing from the pool: the owner's subtree down to (not into) companies with
    a reservation of their own."""
    owner = pool.owner
    reserved_below = (company_subtree(company=owner, include_self=False)
                      .filter(license__reserved_seats__isnull=False).values_list("lineage", flat=True))
    members = company_subtree(company=owner)
    condition = Q()
    for lineage in reserved_below:
        condition |= Q(lineage__startswith=lineage)
    return members.exclude(condition) if condition else members


def _lock_pools(*pool_ids: int) -> dict[int, SeatPool]:
    ids = sorted({i for i in pool_ids if i is not None})
    return {p.pk: p for p in SeatPool.objects.select_for_update().filter(pk__in=ids).order_by("pk")}


def licensed_in_period_sql(*, seat: str, start: str, end: str) -> str:
    """SQL: the seat row `seat` held a licensed seat at some time in [start, end) (U1): its current
    spell, or one it held before a suspension. `start`/`end` are the query's placeholders."""
    return (f"(({seat}.licensed_at IS NOT NULL AND {_spell_start(seat, 'licensed_at')} < {end} "
            f"AND ({seat}.expired_at IS NULL OR {seat}.expired_at >= {start})) "
            f"OR COALESCE({seat}.licensed_spells && tstzrange({start}, {end}), false))")


def _spell_start(seat: str, column: str) -> str:
    """When a seat spell began, for counting: a seat taken when the endpoint registered covers what it
    reported before (no agent reports before it registers; imports and simulations date data back),
    a seat taken later (a trial promoted, a retake, a revival) begins when it was taken."""
    return f"(CASE WHEN {seat}.{column} <= {seat}.first_seen_at THEN '-infinity'::timestamptz ELSE {seat}.{column} END)"


def licensed_whole_period_sql(*, seat: str, start: str, end: str) -> str:
    """SQL: the seat row `seat` held its licensed seat for the whole of [start, end) (one spell, the
    current or the one before a suspension); never NULL."""
    return (f"COALESCE(({seat}.licensed_at IS NOT NULL AND {_spell_start(seat, 'licensed_at')} <= {start} "
            f"AND ({seat}.expired_at IS NULL OR {seat}.expired_at >= {end})) "
            f"OR {seat}.licensed_spells @> tstzrange({start}, {end}), false)")


def licensed_during_sql(*, seat: str, first: str, last: str) -> str:
    """SQL: the seat row `seat` held its licensed seat at some time between `first` and `last` (an
    endpoint-day's first and last heartbeat): T5 and L4 count what an endpoint did while it held a
    seat, not while it was in trial or expired."""
    return (f"(({seat}.licensed_at IS NOT NULL AND {_spell_start(seat, 'licensed_at')} <= {last} "
            f"AND ({seat}.expired_at IS NULL OR {seat}.expired_at > {first})) "
            f"OR COALESCE({seat}.licensed_spells && tstzrange({first}, {last}, '[]'), false))")


# the seat an endpoint is losing, [from, until], with _spell_start's reading of when it began
HELD_SPELL = ("tstzmultirange(tstzrange(CASE WHEN licensed_at <= first_seen_at THEN '-infinity'::timestamptz "
              "ELSE LEAST(licensed_at, expired_at) END, expired_at, '[]'))")  # two clocks may disagree by a second


# --- assignment --------------------------------------------------------------------------------------

@transaction.atomic
def seat_assign(*, company: Company, endpoint_id: uuid.UUID, now: dt.datetime | None = None) -> SeatInfo:
    """T1/L4/T7: the endpoint's seat. A known endpoint keeps what it has; a new one takes a free
    seat from its pool with one conditional UPDATE, or enters trial until the end of next month.
    An endpoint whose trial ran out registering again (a reinstall after seats were bought) takes
    a free seat if there is one; it gets no second trial."""
    now = now or timezone.now()
    existing = SeatAssignment.objects.filter(company=company, endpoint_id=endpoint_id).first()
    if existing is not None and existing.state != SeatState.EXPIRED:
        return SeatInfo(existing.state, existing.trial_ends_on)
    company = _company_locked(company)
    if existing is not None:
        if company.status == CompanyStatus.ACTIVE:
            return _seat_retake(company=company, assignment=existing, now=now)
        return SeatInfo(existing.state, existing.trial_ends_on)
    if company.status != CompanyStatus.ACTIVE:
        SeatAssignment.objects.create(company=company, endpoint_id=endpoint_id, pool=pool_of(company),
                                      state=SeatState.EXPIRED, first_seen_at=now, expired_at=now,
                                      expired_by_suspension=True)
        return SeatInfo(SeatState.EXPIRED, None)
    pool = pool_of(company)
    if _seat_take(pool):
        SeatAssignment.objects.create(company=company, endpoint_id=endpoint_id, pool=pool,
                                      state=SeatState.LICENSED, first_seen_at=now, licensed_at=now)
        return SeatInfo(SeatState.LICENSED, None)
    ends = trial_end_for(now.date())
    SeatAssignment.objects.create(company=company, endpoint_id=endpoint_id, pool=pool, state=SeatState.TRIAL,
                                  trial_ends_on=ends, first_seen_at=now)
    return SeatInfo(SeatState.TRIAL, ends)


# FOR KEY SHARE (Django has no such lock): it conflicts only with FOR UPDATE, not with the plain
# updates of a company's details nor with other registrations
COMPANY_ROWS_KEY_SHARE = ("SELECT id, lineage, status FROM companies_company WHERE id = ANY(%s) "
                          "ORDER BY id = %s, id FOR KEY SHARE")


def _company_locked(company: Company) -> Company:
    """L1/L2/L5: the company as committed now (lineage, status), with the rows that decide its pool
    locked FOR KEY SHARE until the transaction ends: the company and its ancestors below the platform
    (which has no reservation and never moves). reservation_set and company_move lock their company
    FOR UPDATE before they touch a pool, so they wait for this registration or it waits for them and
    then reads what they committed; registrations share the lock and do not wait for each other.
    One indexed query; again only when a move committed since `company` was read."""
    if company.parent_id is None:
        return company
    locked: set[int] = set()
    ids = [int(p) for p in company.lineage.strip("/").split("/")][1:]
    while True:
        with connection.cursor() as cursor:
            # the company's own row last, so its lineage is read once the ancestors are locked
            cursor.execute(COMPANY_ROWS_KEY_SHARE, [ids, company.pk])
            rows = cursor.fetchall()
        locked.update(row_id for row_id, _lineage, _status in rows)
        own = next(((lineage, status) for row_id, lineage, status in rows if row_id == company.pk), None)
        if own is None:  # deleted meanwhile: nothing to decide, the insert will fail on its own
            return company
        ids = [int(p) for p in own[0].strip("/").split("/")][1:]
        if locked.issuperset(ids):
            fresh = copy.copy(company)
            fresh.lineage, fresh.status = own
            return fresh


ANCESTOR_ROWS_KEY_SHARE = "SELECT id FROM companies_company WHERE id = ANY(%s) ORDER BY id FOR KEY SHARE"


def _reserving_company_locked(company: Company) -> Company:
    """L3/L5 for reservation_set: the company's ancestors below the platform locked FOR KEY SHARE in id
    order, as _company_locked takes them, then the company itself FOR UPDATE, read again. A reservation
    or a move of an ancestor (FOR UPDATE on its row) commits before this one reads the parent's pool, or
    waits until this one ends; registrations below the company wait for it (their KEY SHARE on it) and
    it never waits holding its own row for an ancestor. Again only when a move committed meanwhile."""
    locked: set[int] = set()
    ids = company.ancestor_ids[1:]  # below the platform
    while True:
        todo = [i for i in ids if i not in locked]
        if todo:
            with connection.cursor() as cursor:
                cursor.execute(ANCESTOR_ROWS_KEY_SHARE, [todo])
            locked.update(todo)
        fresh = Company.objects.select_for_update().get(pk=company.pk)
        ids = fresh.ancestor_ids[1:]
        if locked.issuperset(ids):
            return fresh


KEEP_SPELL_SQL = (f"CASE WHEN licensed_at IS NOT NULL AND expired_at IS NOT NULL THEN "
                  f"COALESCE(licensed_spells, '{{}}'::tstzmultirange) + {HELD_SPELL} ELSE licensed_spells END")


def _keep_previous_spell() -> dict:
    """UPDATE values that move a seat the endpoint held (licensed_at..expired_at) into its previous
    spell before it is given a new one (U1: the months of the old seat still count it)."""
    held_a_seat = Q(licensed_at__isnull=False)
    return {
        # each spell apart: a suspension between two seats is not a seat (T5)
        "licensed_spells": RawSQL(KEEP_SPELL_SQL, []),  # noqa: S611 - constants only
        "previously_licensed_from": Case(When(held_a_seat, then=Coalesce("previously_licensed_from", "licensed_at")),
                                         default=F("previously_licensed_from")),
        "previously_licensed_until": Case(When(held_a_seat, then=F("expired_at")),
                                          default=F("previously_licensed_until")),
    }


def _seat_take(pool: SeatPool) -> bool:
    """L5: one seat of `pool` taken if one is free, in one conditional UPDATE (concurrent
    registrations cannot oversell it)."""
    return bool(SeatPool.objects.filter(pk=pool.pk).filter(
        Q(capacity__isnull=True) | Q(capacity__gt=F("used") + F("carved"))).update(used=F("used") + 1))


def _seat_retake(*, company: Company, assignment: SeatAssignment, now: dt.datetime) -> SeatInfo:
    pool = pool_of(company)
    if not _seat_take(pool):
        return SeatInfo(SeatState.EXPIRED, None)
    moved = SeatAssignment.objects.filter(pk=assignment.pk, state=SeatState.EXPIRED).update(
        **_keep_previous_spell(),
        state=SeatState.LICENSED, licensed_at=now, expired_at=None, trial_ends_on=None, pool=pool,
        expired_by_suspension=False)
    if not moved:  # a concurrent registration of the same machine took the seat first
        SeatPool.objects.filter(pk=pool.pk).update(used=F("used") - 1)
        assignment.refresh_from_db()
        return SeatInfo(assignment.state, assignment.trial_ends_on)
    audit_record(actor=None, company=company, action="license.seat_retake", obj=assignment,
                 before={"state": SeatState.EXPIRED}, after={"state": SeatState.LICENSED,
                                                            "endpoint_id": str(assignment.endpoint_id)})
    return SeatInfo(SeatState.LICENSED, None)


def seat_state(*, company: Company, endpoint_id: uuid.UUID) -> SeatInfo | None:
    row = SeatAssignment.objects.filter(company=company, endpoint_id=endpoint_id).first()
    return SeatInfo(row.state, row.trial_ends_on) if row else None


@transaction.atomic
def seat_release(*, company: Company, endpoint_id: uuid.UUID) -> None:
    """An endpoint removed from the inventory gives its seat back; trials may take it. The pool row is
    locked before the endpoint's, as promotions and reservations take them (pool, then seat rows)."""
    while True:
        pool_id = (SeatAssignment.objects.filter(company=company, endpoint_id=endpoint_id)
                   .values_list("pool_id", flat=True).first())
        if pool_id is None:
            return
        pools = _lock_pools(pool_id)
        row = SeatAssignment.objects.select_for_update().filter(company=company, endpoint_id=endpoint_id).first()
        if row is None:
            return
        if row.pool_id == pool_id:  # else a reservation moved it meanwhile: lock its new pool
            break
    if row.state == SeatState.LICENSED:
        SeatPool.objects.filter(pk=row.pool_id).update(used=F("used") - 1)
    row.delete()
    seat_pool_promote(pool=pools[row.pool_id])


@transaction.atomic
def seat_pool_promote(*, pool: SeatPool, now: dt.datetime | None = None) -> int:
    """L4: trial endpoints take free seats, oldest first. Returns how many were promoted.

    The pool row is locked first, then the chosen trial rows in id order (as seats_expire_trials locks
    them); the UPDATE promotes only rows still in trial in an active company, and the pool counts what
    it changed: a trial expired, released or suspended meanwhile keeps its state and takes no seat (L5)."""
    now = now or timezone.now()
    pool = SeatPool.objects.select_for_update().filter(pk=pool.pk).first()
    if pool is None:  # dissolved meanwhile (the reservation removed): its rows went to the parent's pool
        return 0
    trials = (SeatAssignment.objects.filter(pool=pool, state=SeatState.TRIAL, company__status=CompanyStatus.ACTIVE)
              .order_by("first_seen_at", "id"))
    if pool.capacity is not None:
        free = pool.capacity - pool.used - pool.carved
        if free <= 0:
            return 0
        trials = trials[:free]
    chosen = list(trials.values_list("id", flat=True))
    if not chosen:
        return 0
    rows = list(SeatAssignment.objects.select_for_update().filter(pk__in=chosen, state=SeatState.TRIAL)
                .order_by("id").values_list("id", "company_id", "endpoint_id"))
    ids = [row_id for row_id, _company, _endpoint in rows]
    promoted = SeatAssignment.objects.filter(pk__in=ids, state=SeatState.TRIAL,
                                             company__status=CompanyStatus.ACTIVE).update(
        state=SeatState.LICENSED, trial_ends_on=None, licensed_at=now)
    if not promoted:
        return 0
    SeatPool.objects.filter(pk=pool.pk).update(used=F("used") + promoted)
    if promoted != len(rows):  # a company suspended meanwhile: audit what was promoted
        rows = list(SeatAssignment.objects.filter(pk__in=ids, state=SeatState.LICENSED, licensed_at=now)
                    .values_list("id", "company_id", "endpoint_id"))
    _audit_trials(rows, action="license.trials_promote", state=SeatState.LICENSED)
    return promoted


AUDITED_ENDPOINT_IDS = 500  # per event; the count is always whole


def _audit_trials(rows, *, action: str, state: str) -> None:
    """X1 for seat changes made in bulk (promotions, expiries): one event per company, as the
    system, with the count and the endpoints."""
    by_company: dict[int, list[str]] = {}
    for _row_id, company_id, endpoint_id in rows:
        by_company.setdefault(company_id, []).append(str(endpoint_id))
    companies = Company.objects.in_bulk(list(by_company))
    for company_id, endpoints in sorted(by_company.items()):
        company = companies[company_id]
        audit_record(actor=None, company=company, action=action, obj=company, before={"state": SeatState.TRIAL},
                     after={"state": state, "count": len(endpoints),
                            "endpoint_ids": sorted(endpoints)[:AUDITED_ENDPOINT_IDS]})


@transaction.atomic
def seats_expire_trials(*, today: dt.date) -> int:
    """L4/T5: trials whose last day has passed expire. Safe to run twice or late: the rows are
    locked, so a run meeting another one expires (and audits) each trial once."""
    rows = list(SeatAssignment.objects.select_for_update().filter(state=SeatState.TRIAL, trial_ends_on__lt=today)
                .order_by("id").values_list("id", "company_id", "endpoint_id"))
    if not rows:
        return 0
    count = SeatAssignment.objects.filter(pk__in=[row_id for row_id, _c, _e in rows]).update(
        state=SeatState.EXPIRED, expired_at=timezone.now(), trial_ends_on=None)
    _audit_trials(rows, action="license.trials_expire", state=SeatState.EXPIRED)
    return count


def seats_promote_all() -> int:
    """Daily: every pool with trials takes what it can (catches up after missed events)."""
    pool_ids = (SeatAssignment.objects.filter(state=SeatState.TRIAL).values_list("pool_id", flat=True)
                .distinct())
    return sum(seat_pool_promote(pool=pool) for pool in SeatPool.objects.filter(pk__in=list(pool_ids)))


@transaction.atomic
def seats_expire_company(*, company: Company) -> int:
    """H4/T5: a suspended company's endpoints expire and give their seats back to the pool; the rows
    are marked as expired by the suspension, so reactivation revives these and no earlier expiry.
    Runs under the company row company_set_status locked, and locks no licence row (a reservation
    holds its licence while it waits for the company row). L5: the pools of the licensed rows are
    locked first (id order), then the rows, as seat_release and promotions take them; when a row's
    pool changed meanwhile (a reservation or a promotion committed), its new pool is locked too."""
    now = timezone.now()
    rows = SeatAssignment.objects.filter(company=company).exclude(state=SeatState.EXPIRED)
    locked: set[int] = set()
    while True:
        pool_ids = set(rows.filter(state=SeatState.LICENSED).values_list("pool_id", flat=True).distinct())
        _lock_pools(*(pool_ids - locked))
        locked |= pool_ids
        held = list(rows.select_for_update().order_by("id").values_list("id", "state", "pool_id"))
        if locked.issuperset(pool_id for _id, state, pool_id in held if state == SeatState.LICENSED):
            break
    licensed_by_pool: dict[int, int] = {}
    for _id, state, pool_id in held:
        if state == SeatState.LICENSED:
            licensed_by_pool[pool_id] = licensed_by_pool.get(pool_id, 0) + 1
    count = SeatAssignment.objects.filter(pk__in=[row_id for row_id, _s, _p in held]).update(
        state=SeatState.EXPIRED, expired_at=now, trial_ends_on=None, expired_by_suspension=True)
    for pool_id, n in sorted(licensed_by_pool.items()):
        SeatPool.objects.filter(pk=pool_id).update(used=F("used") - n)
        seat_pool_promote(pool=SeatPool.objects.get(pk=pool_id))
    return count


@transaction.atomic
def seats_revive_company(*, company: Company) -> int:
    """H4: a reactivated company's endpoints expired by its suspension (registrations during it
    included: expired_by_suspension) come back: those that held a seat when it began take free seats
    first, the others return as trials (seats permitting, licensed, oldest first). A trial that had
    run out before the suspension stays expired (L4): reactivation gives no second trial.
    The seat an endpoint held before the suspension is kept as its previous spell, so the months it
    covered still count it as licensed and the months of its trial do not (U1).
    Locks the pool, then the rows (L5), and no licence row (see seats_expire_company)."""
    now = timezone.now()
    rows = SeatAssignment.objects.filter(company=company, state=SeatState.EXPIRED, expired_by_suspension=True)
    pool = pool_of(company)
    pool = _lock_pools(pool.pk)[pool.pk]
    held = list(rows.select_for_update().filter(licensed_at__isnull=False).order_by("first_seen_at", "id")
                .values_list("id", flat=True))
    seated = held if pool.capacity is None else held[:max(pool.free, 0)]
    licensed = rows.filter(pk__in=seated).update(
        **_keep_previous_spell(), state=SeatState.LICENSED, licensed_at=now, expired_at=None, trial_ends_on=None,
        pool=pool, expired_by_suspension=False)
    SeatPool.objects.filter(pk=pool.pk).update(used=F("used") + licensed)
    trials = rows.update(
        **_keep_previous_spell(),
        licensed_at=None, state=SeatState.TRIAL, trial_ends_on=trial_end_for(now.date()), expired_at=None, pool=pool,
        expired_by_suspension=False)
    if licensed:
        audit_record(actor=None, company=company, action="license.seats_revive", obj=company,
                     before={"state": SeatState.EXPIRED}, after={"state": SeatState.LICENSED, "count": licensed})
    seat_pool_promote(pool=pool)
    return licensed + trials


# --- reservations --------------------------------------------------------------------------------------

def available_to_reserve(*, company: Company) -> int | None:
    """L3: seats the company could reserve now: what its parent's pool has free, plus what the
    company already holds from it (its current reservation, or its members' licensed seats and the
    reservations of companies below it carved from that pool)."""
    if company.parent_id is None:
        return None
    parent_pool = pool_of(company.parent)
    if parent_pool.capacity is None:
        return None
    lic = license_of(company)
    if lic.reserved_seats is not None:
        held = lic.reserved_seats
    else:  # its members' seats and the reservations below it that it would carve from instead
        held = _licensed_moving(company, parent_pool) + _carved_from_above(company)
    return parent_pool.capacity - parent_pool.used - parent_pool.carved + held


def _licensed_moving(company: Company, pool: SeatPool) -> int:
    """Licensed seats in `pool` held by the company's subtree members that would leave with it."""
    subtree = company_subtree(company=company).values("id")
    return SeatAssignment.objects.filter(pool=pool, state=SeatState.LICENSED, company__in=subtree).count()


@transaction.atomic
def reservation_set(*, actor: User | None, company: Company, seats: int | None) -> License:
    """L1/L3: reserve `seats` for the company (None: back to the shared pool)."""
    if company.parent_id is None:
        raise ValidationError({"reserved_seats": "The platform's seats are set as platform seats."})
    if seats is not None and (not isinstance(seats, int) or seats < 0):
        raise ValidationError({"reserved_seats": "Enter a whole number of seats, 0 or more."})
    if seats is not None and seats > MAX_SEATS:
        raise ValidationError({"reserved_seats": f"Reserved seats: at most {MAX_SEATS}."})
    lic = License.objects.select_for_update().get_or_create(company=company)[0]
    # after the licence (as license_update and subscription_set take them) and before any pool:
    # registrations below the company decide their pool under this lock (_company_locked), and the
    # parent's pool is read once no reservation or move above can change it
    company = _reserving_company_locked(company)
    before = {"reserved_seats": lic.reserved_seats}
    if seats == lic.reserved_seats:
        return lic
    parent_pool = pool_of(company.parent)
    own_pool = SeatPool.objects.filter(owner=company).first()
    pools = _lock_pools(parent_pool.pk, own_pool.pk if own_pool else None)
    parent_pool = pools[parent_pool.pk]
    parent_free = None if parent_pool.capacity is None else (
        parent_pool.capacity - parent_pool.used - parent_pool.carved)

    if lic.reserved_seats is None:
        # shared -> reserved: the subtree's members leave the parent's pool with their seats, and the
        # reservations below that were carved from the parent's pool are carved from the new one
        moving = _licensed_moving(company, parent_pool)
        sub_carved = _carved_from_above(company)
        if seats < moving + sub_carved:
            held = [f"{moving} endpoints already hold seats"] if moving else []
            held += [f"{sub_carved} seats are reserved by companies below"] if sub_carved else []
            raise ValidationError({"reserved_seats": f"{' and '.join(held)}; reserve at least "
                                                     f"{moving + sub_carved}."})
        if parent_free is not None and seats > parent_free + moving + sub_carved:
            raise ValidationError({"reserved_seats": f"Only {parent_free + moving + sub_carved} seats are "
                                                     f"available to reserve."})
        own_pool = SeatPool.objects.create(owner=company, capacity=seats, used=0, carved=0)
        _move_members(company=company, from_pool=parent_pool, to_pool=own_pool)
        SeatPool.objects.filter(pk=own_pool.pk).update(carved=sub_carved)
        SeatPool.objects.filter(pk=parent_pool.pk).update(carved=F("carved") + seats - sub_carved)
    elif seats is None:
        # reserved -> shared: members and the reservations carved from this pool go to the parent's
        own_pool = pools[own_pool.pk]
        needed = own_pool.used
        if parent_free is not None and needed > parent_free + lic.reserved_seats - own_pool.carved:
            raise ValidationError({"reserved_seats": f"The shared pool has room for "
                                                     f"{parent_free + lic.reserved_seats - own_pool.carved} seats; "
                                                     f"{needed} endpoints hold seats here."})
        SeatPool.objects.filter(pk=parent_pool.pk).update(carved=F("carved") - lic.reserved_seats + own_pool.carved)
        _move_members(company=company, from_pool=own_pool, to_pool=parent_pool, whole_pool=True)
        own_pool.delete()
    else:
        own_pool = pools[own_pool.pk]
        delta = seats - lic.reserved_seats
        if seats < own_pool.used + own_pool.carved:
            raise ValidationError({"reserved_seats": f"{own_pool.used + own_pool.carved} seats are in use or "
                                                     f"reserved below; reserve at least that many."})
        if parent_free is not None and delta > parent_free:
            raise ValidationError({"reserved_seats": f"Only {parent_free + lic.reserved_seats} seats are "
                                                     f"available to reserve."})
        SeatPool.objects.filter(pk=parent_pool.pk).update(carved=F("carved") + delta)
        SeatPool.objects.filter(pk=own_pool.pk).update(capacity=seats)
    if seats is not None and lic.minimum_usage is not None and lic.minimum_usage > seats:
        raise ValidationError({"reserved_seats": f"The minimum usage is {lic.minimum_usage}; reserve at least "
                                                 f"that many or lower the minimum first."})
    if seats is None and lic.minimum_usage is not None:
        raise ValidationError({"reserved_seats": "Remove the minimum usage before the reservation: it "
                                                 "cannot exceed the reserved seats."})
    lic.reserved_seats = seats
    lic.save(update_fields=["reserved_seats"])
    from usage.rollups import usage_terms_refresh

    usage_terms_refresh(company=company)  # L6: the open month's row shows the reservation now
    audit_record(actor=actor, company=company, action="license.reservation", obj=lic, before=before,
                 after={"reserved_seats": seats})
    for pool in SeatPool.objects.filter(pk__in=[parent_pool.pk] + ([own_pool.pk] if own_pool.pk else [])):
        seat_pool_promote(pool=pool)
    return lic


def _carved_from_above(company: Company) -> int:
    """Reservations inside the company's subtree carved from the pool above it: those with no
    other reservation between them and the company (which itself draws from the shared pool)."""
    reserved = list(company_subtree(company=company, include_self=False)
                    .filter(license__reserved_seats__isnull=False)
                    .values_list("lineage", "license__reserved_seats"))
    lineages = [lineage for lineage, _ in reserved]
    return sum(seats for lineage, seats in reserved
               if not any(other != lineage and lineage.startswith(other) for other in lineages))


def _move_members(*, company: Company, from_pool: SeatPool, to_pool: SeatPool, whole_pool: bool = False) -> None:
    """Re-home the seat rows of the pool members inside `company`'s subtree (all of from_pool's
    rows when the pool is dissolved), moving the licensed count with them."""
    rows = SeatAssignment.objects.filter(pool=from_pool)
    if not whole_pool:
        rows = rows.filter(company__in=company_subtree(company=company).values("id"))
    licensed = rows.filter(state=SeatState.LICENSED).count()
    rows.update(pool=to_pool)
    SeatPool.objects.filter(pk=from_pool.pk).update(used=F("used") - licensed)
    SeatPool.objects.filter(pk=to_pool.pk).update(used=F("used") + licensed)


@transaction.atomic
def platform_seats_set(*, actor: User | None, seats: int | None) -> SeatPool:
    platform = Company.objects.get(parent__isnull=True)
    pool = _lock_pools(pool_of(platform).pk)[pool_of(platform).pk]
    if seats is not None and seats > MAX_SEATS:
        raise ValidationError({"platform_seats": f"Platform seats: at most {MAX_SEATS}."})
    if seats is not None and seats < pool.used + pool.carved:
        raise ValidationError({"platform_seats": f"{pool.used + pool.carved} seats are in use or reserved."})
    License.objects.filter(company=platform).update(platform_seats=seats)
    SeatPool.objects.filter(pk=pool.pk).update(capacity=seats)
    audit_record(actor=actor, company=platform, action="license.platform_seats", obj=pool,
                 before={"capacity": pool.capacity}, after={"capacity": seats})
    seat_pool_promote(pool=pool)
    return SeatPool.objects.get(pk=pool.pk)


def seat_move_check(company: Company, new_parent: Company) -> str | None:
    """H5: the new partner must be able to cover the company's seats. Between two partners drawing
    on the same pool nothing moves (seat_after_move), so there is nothing to cover."""
    new_pool = pool_of(new_parent)
    if new_pool.capacity is None or (company.parent_id is not None and new_pool.pk == pool_of(company.parent).pk):
        return None
    free = new_pool.capacity - new_pool.used - new_pool.carved
    lic = license_of(company)
    if lic.reserved_seats is not None:
        if lic.reserved_seats > free:
            return (f"{new_parent.name} cannot cover the reservation of {lic.reserved_seats} seats "
                    f"({free} available).")
        return None
    needed = _licensed_moving(company, pool_of(company)) + _carved_from_above(company)
    if needed > free:
        return f"{new_parent.name} cannot cover the {needed} seats in use or reserved ({free} available)."
    return None


def seat_after_move(company: Company, old_parent: Company) -> None:
    """H5: after a move, the company's seats (and its trials) leave the old pool and enter the new one."""
    lic = license_of(company)
    new_pool = pool_of(company.parent)
    old_pool = pool_of(old_parent)
    if old_pool.pk == new_pool.pk:
        return
    pools = _lock_pools(old_pool.pk, new_pool.pk)
    if lic.reserved_seats is not None:
        SeatPool.objects.filter(pk=old_pool.pk).update(carved=F("carved") - lic.reserved_seats)
        SeatPool.objects.filter(pk=new_pool.pk).update(carved=F("carved") + lic.reserved_seats)
    else:
        _move_members(company=company, from_pool=pools[old_pool.pk], to_pool=pools[new_pool.pk])
        carved = _carved_from_above(company)
        SeatPool.objects.filter(pk=old_pool.pk).update(carved=F("carved") - carved)
        SeatPool.objects.filter(pk=new_pool.pk).update(carved=F("carved") + carved)
    # L4: seats freed in the old pool go to its trials; the trials that came along take the new pool's
    for pool_id in sorted(pools):
        seat_pool_promote(pool=pools[pool_id])
