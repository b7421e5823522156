"""The outbox: send one result file to one destination by C-STORE, exactly once from the PACS's view.

Each (result, destination) pair is a ``deliveries`` row driven by its own ``delivery`` job, so a
destination that is down only delays its own jobs. The file sent is the one written to the store
when the result was made, so every retry carries the same SOP Instance UID: a PACS that stored an
earlier attempt whose acknowledgement was lost just stores the same instance again.

The peer's answer decides what happens next (:func:`classify`): stored (success or a warning
status); transient — 0xA7xx "out of resources" (its disk is full), no response (a timeout or an
aborted association), or no association at all (refused, rejected, timed out) — so the job waits
with capped backoff, for ``pipeline.retry_horizon`` in all, without using up attempts; permanent —
0xA9xx (data set does not match the SOP class), 0xC0xx (cannot understand) and every other failure
status — so the job is dead at once, its reason on the job and in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import Delivery, Result, utcnow
from radpair.core.scu import Peer, PeerUnavailable, store_files
from radpair.core.settings import DestinationSettings
from radpair.core.store import InstanceStore
from radpair.pipeline.jobs import ClaimedJob, Permanent

log = logging.getLogger(__name__)

# Success and the warning statuses (coercion, elements discarded, dataset mismatch): stored.
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class DeliveryRefused(Permanent):
    """The peer refused the instance for good (0xA9xx, 0xC0xx, ...): re-sending cannot help."""


class DeliveryDeferred(ConnectionError):
    """The peer could not take the instance now (out of resources, no response): send it later."""


def classify(status: int | None) -> Literal["stored", "transient", "permanent"]:
    """What a C-STORE answer means for the outbox; ``None`` is no answer (timeout, abort)."""
    if status is None or 0xA700 <= status <= 0xA7FF:
        return "transient"
    return "stored" if status in _STORED else "permanent"


class Outbox:
    """The ``delivery`` job handler."""

    def __init__(self, sessions: sessionmaker[Session], store: InstanceStore,
                 destinations: list[DestinationSettings]) -> None:
        self.sessions = sessions
        self.store = store
        self.destinations = {d.name: d for d in destinations}

    def __call__(self, job: ClaimedJob, check_lease: Callable[[], None]) -> str:
        with self.sessions() as session:
            delivery = session.scalars(select(Delivery).where(Delivery.job_pk == job.id)).one()
            result = session.get(Result, delivery.result_pk)
            path = self.store.absolute(result.path)
            delivery_id, sop_uid, name = delivery.id, result.sop_instance_uid, delivery.destination
        dest = self.destinations.get(name)
        if dest is None:
            raise KeyError(f"destination {name!r} is no longer in pipeline.destinations")
        peer = Peer(dest.host, dest.port, dest.ae_title, calling_aet=dest.calling_ae)
        try:
            (outcome,) = store_files([path], peer)
        except PeerUnavailable as exc:
            self._note(delivery_id, "pending", None, str(exc))
            raise
        check_lease()
        kind = classify(outcome.status)
        if kind == "stored":
            self._note(delivery_id, "delivered", outcome.status, "")
            return f"{sop_uid} -> {dest.name} ({dest.ae_title}@{dest.host}:{dest.port}) status 0x{outcome.status:04X}"
        error = outcome.error or f"status 0x{(outcome.status or 0):04X}"
        if kind == "transient":
            self._note(delivery_id, "pending", outcome.status, error)
            raise DeliveryDeferred(f"{dest.name} could not take {sop_uid} now: {error}")
        self._note(delivery_id, "failed", outcome.status, error)
        raise DeliveryRefused(f"{dest.name} refused {sop_uid}: {error}")

    def _note(self, delivery_id: int, state: str, status: int | None, error: str) -> None:
        with self.sessions.begin() as session:
            delivery = session.get(Delivery, delivery_id)
            delivery.attempts += 1
            delivery.state = state
            delivery.status = status
            delivery.last_error = error
            if state == "delivered":
                delivery.delivered_at = utcnow()
