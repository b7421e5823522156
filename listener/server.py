"""Start and stop the listener: the association server, its handlers, and the stability job."""

from __future__ import annotations

import logging
import ssl
import threading

from apscheduler.schedulers.base import BaseScheduler
from pynetdicom import evt
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.db import session_factory
from radpair.core.settings import ListenerSettings, Settings
from radpair.core.store import InstanceStore
from radpair.listener.access import AccessPolicy
from radpair.listener.ae import build_ae, poll_delay, set_nodelay, tls_context
from radpair.listener.archive import Archive
from radpair.listener.audit import AuditTrail
from radpair.listener.backpressure import IngestGate
from radpair.listener.connections import GuardedAssociationServer
from radpair.listener.header import ListenerLimits, configure_limits
from radpair.listener.ingest import Ingestor
from radpair.listener.quarantine import Quarantine
from radpair.listener.stability import mark_stable_studies

log = logging.getLogger(__name__)

STABILITY_JOB = "listener.stability"


def schedule_stability(scheduler: BaseScheduler, sessions: sessionmaker[Session], settings: ListenerSettings) -> None:
    """The periodic scan that marks quiet studies stable (in the process that runs the scheduler)."""
    scheduler.add_job(mark_stable_studies, "interval", args=(sessions, settings.stable_age),
                      seconds=settings.stability_check_interval, id=STABILITY_JOB, max_instances=1,
                      coalesce=True, replace_existing=True)


class ListenerService:
    """The DICOM listener as a service component: ``start(scheduler)`` / ``stop()``.

    The schema must already be up to date (``core.db.upgrade``); the engine is shared with the
    rest of the process.
    """

    name = "listener"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        lst = settings.listener
        self.sessions = session_factory(engine)
        self.audit = AuditTrail(self.sessions, lst.ae_title)
        self.access = AccessPolicy(lst, self.audit)  # refuses an unsafe configuration before anything starts
        configure_limits(ListenerLimits.from_settings(lst))  # what read_header and the report extractor enforce
        store = InstanceStore(settings.store_dir)
        # last_received_at is rewritten at most every stable_age / 10 (≤ 1 s), not at every instance.
        archive = Archive(self.sessions, store, replace_changed=lst.on_changed_duplicate == "replace",
                          touch_interval=min(1.0, lst.stable_age / 10))
        gate = IngestGate(store.root, lst.disk_reserve, lst.database_retry_interval)
        self.ingestor = Ingestor(store, archive, Quarantine(settings.quarantine_dir, self.sessions), self.audit,
                                 gate, lst.commit_batch, lst.commit_window)
        self.ae = build_ae(lst)
        self._server: GuardedAssociationServer | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0: an ephemeral port)."""
        assert self._server is not None, "listener not started"
        return self._server.server_address[1]

    def start(self, scheduler: BaseScheduler | None = None) -> None:
        lst = self.settings.listener
        handlers = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_CONN_OPEN, poll_delay(lst.poll_delay)),
            (evt.EVT_REQUESTED, self.access.on_requested),
            (evt.EVT_ESTABLISHED, self.audit.on_established),
            (evt.EVT_REJECTED, self.audit.on_rejected),
            (evt.EVT_ACSE_RECV, self.audit.on_acse_received),
            (evt.EVT_CONN_CLOSE, self.audit.on_closed),
            (evt.EVT_C_STORE, self.ingestor.on_store),
        ]
        ssl_context = tls_context(lst)
        self.ingestor.start()
        self._server = self.make_server(handlers, ssl_context)
        threading.Thread(target=self._server.serve_forever, name="listener-accept", daemon=True).start()
        if scheduler is not None:
            schedule_stability(scheduler, self.sessions, lst)
        self.announce(ssl_context is not None)

    def make_server(self, handlers: list, ssl_context: ssl.SSLContext | None) -> GuardedAssociationServer:
        """The association server, bound to ``listener.host:port``."""
        lst = self.settings.listener
        return self.ae.make_server((lst.host, lst.port), evt_handlers=handlers, ssl_context=ssl_context,
                                   server_class=GuardedAssociationServer,
                                   per_address=lst.max_associations_per_address,
                                   handshake_timeout=lst.request_timeout)

    def announce(self, tls: bool) -> None:
        lst = self.settings.listener
        log.info("listener: AE %s on %s:%d%s, accepting %s, data in %s", lst.ae_title, lst.host, self.port,
                 " (TLS)" if tls else "", self.access.describe(), self.settings.data_dir.resolve())

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let stores in flight finish (new ones get 0xA700), then close."""
        if self._server is None:
            return
        self._server.shutdown()  # no new connections
        if not self.ingestor.drain(grace):
            log.warning("listener: stores still in flight after %.0f s; closing anyway", grace)
        self.ingestor.close()
        for assoc in list(self.ae.active_associations):
            assoc.abort()
        self._server = None
        log.info("listener: stopped")
