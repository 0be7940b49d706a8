"""Provider listings for API and console requests, on a bounded pool with a per-org limit.

A listing may take as long as the provider timeout (CLOUDCRON_PROVIDER_TIMEOUT). The web server has
a fixed number of request threads, so listings must never be able to take them all: at most
`slots` listings run at once for all orgs together (fewer than the request threads, which serve
checks at start-up), and at most `per_org` for one org. A request over either limit is answered at
once with 429 and a Retry-After of one provider timeout, by when a slot has freed; it never waits
behind another listing. A request within the limits waits for its own listing, at most the provider
timeout (and a second); the listing's slot stays taken until the provider call has really ended.

Listings a worker does for its runs (fetch_for_run) run on the worker's threads, at most `run_per_org`
per org at once in one process (CLOUDCRON_RUN_LISTINGS_PER_ORG): a run of an org that already has that
many in progress does not ask the provider again, it uses the machines as last listed. A batch lists its
clouds side by side (web.worker.Listings.fetch_all), and there a listing whose org's slots its own batch
holds waits for one, but only until the batch's deadline, one provider timeout after its listings began
(slots held by other batches are not waited for). So one org's cloud that never answers holds at most
that many slots, each for at most the provider timeout, and one org's many slow clouds delay a batch
holding other orgs' runs by one to two provider timeouts, not one per cloud.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, TypeVar

from .errors import TooManyRequests
from .machines import CloudSpec, Listing, ProviderError, ProviderLimits, fetch_nodes

T = TypeVar("T")
log = logging.getLogger(__name__)


class TooManyListings(TooManyRequests):
    """Listing slots are taken: answered 429 at once, with Retry-After."""


class ListingPool:
    """Runs provider listings for web requests: `slots` threads in all, `per_org` listings per org at once.

    run(org_id, fn) returns fn()'s result, raises what fn raised, TooManyListings (429) when a limit is
    reached, or ProviderError (502) when fn has not finished after `wait` seconds.
    """

    def __init__(self, slots: int, per_org: int, wait: float, run_per_org: int = 1):
        self.slots = slots
        self.per_org = per_org
        self.wait = wait
        self.run_per_org = run_per_org
        self._runs_by_org: Counter[str] = Counter()  # listings for runs in progress, by org
        self._run_owners: dict[str, Counter] = {}  # org -> who holds its run listing slots (a batch), how many
        self._executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="listing")
        self._lock = threading.Lock()
        self._run_slot_freed = threading.Condition(self._lock)  # wakes listings waiting for a run slot
        self._total = 0
        self._by_org: Counter[str] = Counter()

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.wait))

    def in_flight(self, org_id: str | None = None) -> int:
        with self._lock:
            return self._total if org_id is None else self._by_org[org_id]

    def run(self, org_id: str, fn: Callable[[], T], what: str = "machines") -> T:
        with self._lock:
            if self._by_org[org_id] >= self.per_org:
                raise TooManyListings(
                    f"{what}: this org already has {self._by_org[org_id]} provider listing(s) in progress, the most "
                    f"it may have at once (CLOUDCRON_LISTINGS_PER_ORG); try again in {self.retry_after} s",
                    self.retry_after)
            if self._total >= self.slots:
                raise TooManyListings(
                    f"{what}: all {self.slots} provider listing slots are in use (CLOUDCRON_LISTING_SLOTS); "
                    f"try again in {self.retry_after} s", self.retry_after)
            self._total += 1
            self._by_org[org_id] += 1
        try:
            future = self._executor.submit(self._counted, org_id, fn)
        except BaseException:
            self._release(org_id)
            raise
        try:
            return future.result(timeout=self.wait + 1.0)
        except FutureTimeout:
            raise ProviderError(f"{what}: the provider did not answer within {self.wait:g} s "
                                "(CLOUDCRON_PROVIDER_TIMEOUT)") from None

    def _counted(self, org_id: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        finally:
            self._release(org_id)

    def _release(self, org_id: str) -> None:
        with self._lock:
            self._total -= 1
            self._by_org[org_id] -= 1
            if self._by_org[org_id] <= 0:
                del self._by_org[org_id]

    def try_run_slot(self, org_id: str, owner: object = None) -> bool:
        """Take one of the org's run listing slots (see fetch_for_run); False, at once, when they are all taken."""
        with self._lock:
            return self._take_run_slot(org_id, owner)

    def take_run_slot(self, org_id: str, owner: object, deadline: float, cancel: threading.Event | None = None) -> bool:
        """Take one of the org's run listing slots for `owner` (a batch), waiting until `deadline` (a time.monotonic()
        instant) while `owner` itself holds one of them: its own listings end within the provider timeout.

        False at once when the slots are all held by others (a listing elsewhere may never answer), and False when
        none has freed by `deadline` or once `cancel` is set (checked at least every 0.2 s)."""
        with self._run_slot_freed:
            while not self._take_run_slot(org_id, owner):
                left = deadline - time.monotonic()
                mine = self._run_owners.get(org_id, Counter())[owner]
                if left <= 0 or not mine or (cancel is not None and cancel.is_set()):
                    return False
                self._run_slot_freed.wait(min(left, 0.2))
            return True

    def _take_run_slot(self, org_id: str, owner: object) -> bool:
        if self._runs_by_org[org_id] >= self.run_per_org:
            return False
        self._runs_by_org[org_id] += 1
        self._run_owners.setdefault(org_id, Counter())[owner] += 1
        return True

    def release_run_slot(self, org_id: str, owner: object = None) -> None:
        """Give back a slot try_run_slot or take_run_slot took (for the same owner)."""
        with self._run_slot_freed:
            self._runs_by_org[org_id] -= 1
            if self._runs_by_org[org_id] <= 0:
                del self._runs_by_org[org_id]
            owners = self._run_owners[org_id]
            owners[owner] -= 1
            if owners[owner] <= 0:
                del owners[owner]
            if not owners:
                del self._run_owners[org_id]
            self._run_slot_freed.notify_all()

    def runs_in_flight(self, org_id: str) -> int:
        """The org's listings for runs in progress in this process."""
        with self._lock:
            return self._runs_by_org[org_id]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def fetch_for_run(state, spec: CloudSpec, limits: ProviderLimits, owner: object = None, deadline: float | None = None,
                  cancel: threading.Event | None = None) -> Listing:
    """A cloud's machines for a run: listed from the provider (fetch_nodes), within the org's run listing slots.

    Call it with no transaction open. When the org already has CLOUDCRON_RUN_LISTINGS_PER_ORG listings in
    progress in this process, the provider is not asked: the machines stored by the last listing are
    returned (as a Listing that changes nothing when stored), as they would be used when the provider
    cannot be reached. Given a `deadline` (a time.monotonic() instant), a listing whose `owner` (its batch)
    holds one of those slots itself first waits for one to free, until then or until `cancel` is set.
    Raises ProviderError as fetch_nodes does.
    """
    pool = state.listings
    got = (pool.try_run_slot(spec.org_id, owner) if deadline is None
           else pool.take_run_slot(spec.org_id, owner, deadline, cancel))
    if got:
        try:
            return fetch_nodes(spec, limits)
        finally:
            pool.release_run_slot(spec.org_id, owner)
    log.info("cloud %s: not listed again for a run, its org already has %d listing(s) in progress for runs "
             "(CLOUDCRON_RUN_LISTINGS_PER_ORG); the machines as last listed are used", spec.id, pool.run_per_org)
    return stored_listing(state, spec)


def stored_listing(state, spec: CloudSpec) -> Listing:
    """The machines stored for a cloud, as a Listing (machines marked missing stay so). Database only."""
    from sqlalchemy import select

    from .models import Machine

    with state.db.session() as session:
        rows = session.scalars(select(Machine).where(Machine.cloud_id == spec.id).order_by(Machine.machine_id)).all()
        nodes = [{"machine_id": m.machine_id, "name": m.name, "state": m.state, "public_ips": list(m.public_ips or []),
                  "private_ips": list(m.private_ips or []), "tags": dict(m.tags or {})}
                 for m in rows if m.state != "missing"]
        ids = {m.machine_id for m in rows}
    return Listing(spec.id, nodes, len(nodes), ids)
