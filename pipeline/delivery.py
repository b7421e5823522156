"""The outbox: send one result file to one destination by C-STORE, exactly once from the PACS's view.

Each (result, destination) pair is a ``deliveries`` row driven by its own ``delivery`` job, so a
destination that is down only delays its own jobs. The file sent is the one written to the store
when the result was made, so every retry carries the same SOP Instance UID: a PACS that stored an
earlier attempt whose acknowledgement was lost just stores the same instance again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import Delivery, Result, utcnow
from radpair.core.scu import Peer, PeerUnavailable, store_files
from radpair.core.settings import DestinationSettings
from radpair.core.store import InstanceStore
from radpair.pipeline.jobs import ClaimedJob

log = logging.getLogger(__name__)

# Success and the warning statuses (coercion, elements discarded, dataset mismatch): stored.
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class DeliveryRefused(RuntimeError):
    """The peer answered the C-STORE with a failure status."""


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
        if outcome.status in _STORED:
            self._note(delivery_id, "delivered", outcome.status, "")
            return f"{sop_uid} -> {dest.name} ({dest.ae_title}@{dest.host}:{dest.port}) status 0x{outcome.status:04X}"
        error = outcome.error or f"status 0x{(outcome.status or 0):04X}"
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
