"""radpair settings: one TOML file, every key overridable by a ``RADPAIR_...`` variable.

The file has a few top-level keys and one table per subsystem (``[listener]``, ``[database]``,
...). The environment variable for a key is ``RADPAIR_`` + the table name + ``_`` + the key, in
upper case: ``RADPAIR_LISTENER_PORT=11113``, ``RADPAIR_DATA_DIR=/srv/radpair``. Values in the
environment are read as TOML values (numbers, booleans, arrays, inline tables) and fall back to
plain strings, so ``RADPAIR_LISTENER_AE_TITLE=RADPAIR`` needs no quotes.

Settings are validated once, at start, and a bad value stops the program with a message that
names the key, rather than failing later inside a DICOM association.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from radpair.core import config
from radpair.core.config import ConfigError
from radpair.core.uids import DEFAULT_ROOT, InvalidUID, validate_root

ENV_PREFIX = "RADPAIR_"
# Training configurations read their own variables (``radpair.training.config``).
TRAIN_ENV_PREFIX = "RADPAIR_TRAIN_"


@dataclass
class PeerSettings:
    """One calling AE allowed to associate, optionally only from one host address."""

    ae_title: str
    host: str = ""


@dataclass
class ListenerSettings:
    ae_title: str = "RADPAIR"
    # Loopback by default: exposing the SCP on a network is a decision, not an accident.
    host: str = "127.0.0.1"
    port: int = 11112
    max_pdu: int = 262144
    max_associations: int = 16
    # At most this many connections (open or still handshaking) from one IP address, so one peer
    # cannot hold the slots the others need.
    max_associations_per_address: int = 8
    # Seconds a new connection gets to finish its TLS handshake and send its A-ASSOCIATE-RQ.
    request_timeout: float = 5.0
    # Empty list + accept_any_calling_ae: any peer is accepted, allowed only on loopback.
    allowed_peers: list[PeerSettings] = field(default_factory=list)
    accept_any_calling_ae: bool = True
    # What to do when an instance arrives again with the same SOP Instance UID but other bytes.
    on_changed_duplicate: Literal["keep_first", "replace"] = "keep_first"
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_require_client_cert: bool = False
    # Seconds without a new instance after which a study counts as complete.
    stable_age: float = 60.0
    stability_check_interval: float = 1.0
    # Bounds on the work one instance may cause; beyond them it is refused (0xC000) and quarantined.
    max_instance_size: int = 2 * 1024**3
    # A Deflated Explicit VR dataset may inflate to at most this many bytes (a deflate bomb stops here).
    max_inflated_size: int = 256 * 1024**2
    max_sequence_depth: int = 32
    max_sequence_items: int = 1_000_000
    # An SR beyond these is archived but its text is not extracted as a report (logged at WARNING).
    report_max_items: int = 10_000
    report_max_depth: int = 24
    report_max_text: int = 1_000_000
    report_timeout: float = 5.0
    # Refuse (A-ASSOCIATE-RJ "called AE title not recognised") a peer calling another AE title.
    check_called_ae: bool = True
    # Seconds between re-resolutions of the host names in allowed_peers.
    peer_resolve_ttl: float = 300.0
    # Group commit: concurrent stores share one transaction and folder fsync; a batch waits at most
    # commit_window seconds for stores other associations are still handling, and holds at most
    # commit_batch instances (1: one transaction per instance).
    commit_batch: int = 64
    commit_window: float = 0.005
    # Back-pressure: stores are refused at once (0xA700) while the instance store has less than
    # disk_reserve bytes free, and while the database is down (one probe per database_retry_interval s).
    disk_reserve: int = 1024**3
    database_retry_interval: float = 1.0
    # Seconds an idle connection's pynetdicom reactor sleeps between socket polls (its default 0.001
    # is a latency every PDU pays; 0.0002 measured +35 % instances/s on one association).
    poll_delay: float = 0.0002
    # Listener worker processes (`radpair serve`): each receives, verifies, writes and indexes on
    # its own interpreter, apart from the pipeline's. 0: one per CPU core this process may use.
    workers: int = 0


@dataclass
class DatabaseSettings:
    # Empty: a SQLite file in the data directory. Production: postgresql+psycopg://user@host/db
    url: str = ""
    echo: bool = False


@dataclass
class TritonSettings:
    # "embedded": radpair starts the tritonserver shipped in nvidia-pytriton on loopback.
    # "remote": use the server at url.
    mode: Literal["embedded", "remote", "off"] = "embedded"
    url: str = ""
    protocol: Literal["http", "grpc"] = "http"
    http_port: int = 18000
    grpc_port: int = 18001
    metrics_port: int = 18002
    # Empty: the embedded server's repository under data_dir (initialised from the shipped model).
    model_repository: str = ""
    timeout: float = 30.0
    startup_timeout: float = 120.0
    # Client retries on transient errors (refused, 503/UNAVAILABLE), backoff doubling from retry_backoff s.
    retries: int = 3
    retry_backoff: float = 0.5


@dataclass
class DestinationSettings:
    """A DICOM peer (usually the PACS) that receives radpair's results by C-STORE."""

    name: str
    ae_title: str
    host: str
    port: int
    calling_ae: str = "RADPAIR"


@dataclass
class RoutingRuleSettings:
    """Which stable studies a task's model runs on, and where the results go.

    Every non-empty criterion must hold for the study; they are regular expressions (case-insensitive,
    searched). Which series of the study is analysed is the task's input rule, the same one training
    uses (``[input]`` of the task file), never the rule's.
    """

    name: str
    study_description: str = ""
    # Any instance of the study sent by a calling AE title matching this.
    calling_ae: str = ""
    # Task file (empty: the top-level ``task``): its classes, codes, input series and model.
    task: str = ""
    # Names of [[pipeline.destinations]] entries; empty keeps results in the archive only.
    destinations: list[str] = field(default_factory=list)


def _default_rules() -> list[RoutingRuleSettings]:
    return [RoutingRuleSettings(name="default")]


@dataclass
class PipelineSettings:
    enabled: bool = True
    workers: int = 2
    # Seconds between polls for newly stable studies and runnable jobs.
    poll_interval: float = 1.0
    # A job's lease; a worker that stops heartbeating loses the job after this many seconds.
    lease_seconds: float = 60.0
    heartbeat_interval: float = 10.0
    # Failed attempts before a job goes to the dead letter (unreachable peers do not count).
    max_attempts: int = 5
    backoff_base: float = 2.0
    backoff_max: float = 300.0
    # Seconds of backing off after which a job whose peer (PACS, Triton) stays unreachable or out
    # of resources (0xA7xx) is dead-lettered; `radpair jobs retry` re-queues it.
    retry_horizon: float = 86400.0
    # Also send a burned-in Secondary Capture key image (labelled NOT FOR DIAGNOSIS).
    secondary_capture: bool = False
    algorithm_name: str = "radpair"
    destinations: list[DestinationSettings] = field(default_factory=list)
    rules: list[RoutingRuleSettings] = field(default_factory=_default_rules)


@dataclass
class RetrainSettings:
    """The retraining job: when it runs, what it needs, and how a candidate is judged."""

    enabled: bool = True
    # Five crontab fields (minute hour day month day-of-week), or six with seconds first.
    cron: str = "0 2 * * *"
    # The time zone the cron expression is read in (an IANA name); never the host's implicit one.
    timezone: str = "UTC"
    # A run that could not start on time (radpair was down) still runs if it is at most this late.
    misfire_grace_time: int = 3600
    # Several missed runs are run once, not once each.
    coalesce: bool = True
    # Paired studies new since the last candidate, below which a run is skipped.
    min_new_pairs: int = 10
    # Share of labelled patients put in the held-out set at the first run (fixed thereafter).
    held_out_fraction: float = 0.25
    primary_metric: Literal["auc", "f1"] = "auc"
    # A candidate may be at most this much below the serving version on the primary metric.
    tolerance: float = 0.02
    # Training configuration file (TOML/JSON, see `radpair train`); empty: the training defaults.
    train_config: str = ""
    # Run directories; empty: <data_dir>/retrain.
    runs_dir: str = ""
    seed: int = 0
    # A run whose heartbeat is older than this many seconds is abandoned and may be taken over.
    lock_lease: float = 600.0

    def cron_trigger(self) -> Any:
        """The APScheduler CronTrigger for ``cron`` in ``timezone``."""
        from apscheduler.triggers.cron import CronTrigger

        fields = self.cron.split()
        if len(fields) == 5:
            return CronTrigger.from_crontab(self.cron, timezone=self.timezone)
        if len(fields) == 6:
            names = ("second", "minute", "hour", "day", "month", "day_of_week")
            return CronTrigger(**dict(zip(names, fields)), timezone=self.timezone)
        raise ValueError(f"{self.cron!r} has {len(fields)} fields; expected 5 (or 6 with seconds first)")


@dataclass
class DicomSettings:
    # The organisation root of every UID radpair creates (results' series, instances, tracking
    # UIDs). Register your own (ISO/ANSI, or a 2.25 UUID root); the default is pydicom's.
    uid_root: str = DEFAULT_ROOT


@dataclass
class LoggingSettings:
    # "text": one human-readable line per event; "json": one JSON object per line for log shippers.
    format: Literal["text", "json"] = "text"
    # Patient ID, accession number and name in log lines; off, a line names the study by its UID only.
    patient_identifiers: bool = False
    # Library warnings (MONAI, torch, highdicom deprecations) a user cannot act on; shown with -v.
    library_warnings: bool = False


@dataclass
class Settings:
    data_dir: Path = Path("data")
    log_level: str = "INFO"
    # The task file: classes, locations, input series, report policy, codes, model. Empty: the
    # shipped default task (radpair/core/tasks/braf_plgg.toml).
    task: str = ""
    listener: ListenerSettings = field(default_factory=ListenerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    triton: TritonSettings = field(default_factory=TritonSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    dicom: DicomSettings = field(default_factory=DicomSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_dir / 'radpair.db').resolve()}"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "instances"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the TOML file (if any), then the environment, then explicit overrides (CLI flags).

    ``overrides`` uses dotted keys: ``{"listener.port": 11113}``.
    """
    settings = config.load(Settings, path, what="settings", env_prefix=ENV_PREFIX, environ=environ,
                           foreign_prefixes=(TRAIN_ENV_PREFIX,), overrides=overrides)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    lst = s.listener
    if not 0 <= lst.port < 65536:
        raise ConfigError(f"settings key 'listener.port' is {lst.port}; expected 0-65535 (0: any free port)")
    if not 0 < len(lst.ae_title.strip()) <= 16:
        raise ConfigError("settings key 'listener.ae_title' must be 1-16 characters")
    if lst.stable_age <= 0:
        raise ConfigError("settings key 'listener.stable_age' must be > 0 seconds")
    for key in ("max_instance_size", "max_inflated_size", "max_sequence_depth", "max_sequence_items",
                "report_max_items", "report_max_depth", "report_max_text", "report_timeout", "peer_resolve_ttl"):
        if getattr(lst, key) <= 0:
            raise ConfigError(f"settings key 'listener.{key}' must be > 0")
    if lst.max_associations < 1:
        raise ConfigError("settings key 'listener.max_associations' must be >= 1")
    if bool(lst.tls_cert) != bool(lst.tls_key):
        raise ConfigError("settings keys 'listener.tls_cert' and 'listener.tls_key' go together")
    if lst.tls_require_client_cert and not lst.tls_ca:
        raise ConfigError("settings key 'listener.tls_require_client_cert' needs 'listener.tls_ca'")
    _check_ingest(lst)
    if s.triton.retries < 0 or s.triton.retry_backoff < 0:
        raise ConfigError("settings keys 'triton.retries' and 'triton.retry_backoff' must be >= 0")
    if s.triton.mode == "remote" and not s.triton.url:
        raise ConfigError("settings key 'triton.url' is required when 'triton.mode' is 'remote'")
    try:
        validate_root(s.dicom.uid_root)
    except InvalidUID as exc:
        raise ConfigError(f"settings key 'dicom.uid_root': {exc}") from exc
    _check_pipeline(s.pipeline)
    _check_retrain(s.retrain)


def _check_ingest(lst: ListenerSettings) -> None:
    if lst.commit_batch < 1:
        raise ConfigError("settings key 'listener.commit_batch' must be >= 1")
    if not 0 <= lst.commit_window <= 1:
        raise ConfigError("settings key 'listener.commit_window' must be 0-1 seconds")
    if lst.disk_reserve < 0:
        raise ConfigError("settings key 'listener.disk_reserve' must be >= 0 bytes")
    if not 0 < lst.poll_delay <= 0.1:
        raise ConfigError("settings key 'listener.poll_delay' must be in (0, 0.1] seconds")
    if lst.database_retry_interval <= 0:
        raise ConfigError("settings key 'listener.database_retry_interval' must be > 0 seconds")
    if not 0 <= lst.workers <= 256:
        raise ConfigError("settings key 'listener.workers' must be 0 (one per CPU core) to 256")


def _check_pipeline(p: PipelineSettings) -> None:
    if p.workers < 1:
        raise ConfigError("settings key 'pipeline.workers' must be >= 1")
    if p.max_attempts < 1:
        raise ConfigError("settings key 'pipeline.max_attempts' must be >= 1")
    if p.retry_horizon <= 0:
        raise ConfigError("settings key 'pipeline.retry_horizon' must be > 0 seconds")
    if p.heartbeat_interval >= p.lease_seconds:
        raise ConfigError("settings key 'pipeline.heartbeat_interval' must be < 'pipeline.lease_seconds'")
    names = [d.name for d in p.destinations]
    for i, dest in enumerate(p.destinations):
        if names.count(dest.name) > 1:
            raise ConfigError(f"settings key 'pipeline.destinations[{i}].name' {dest.name!r} is not unique")
        if not 0 < dest.port < 65536:
            raise ConfigError(f"settings key 'pipeline.destinations[{i}].port' is {dest.port}; expected 1-65535")
    for i, rule in enumerate(p.rules):
        for key in ("study_description", "calling_ae"):
            try:
                re.compile(getattr(rule, key))
            except re.error as exc:
                raise ConfigError(f"settings key 'pipeline.rules[{i}].{key}' is not a regular expression: {exc}") from exc
        for name in rule.destinations:
            if name not in names:
                raise ConfigError(f"settings key 'pipeline.rules[{i}].destinations' names unknown destination {name!r}")


def _check_retrain(r: RetrainSettings) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(r.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"settings key 'retrain.timezone' is {r.timezone!r}: not an IANA time zone") from exc
    try:
        r.cron_trigger()
    except ValueError as exc:
        raise ConfigError(f"settings key 'retrain.cron' is {r.cron!r}: {exc}") from exc
    if r.min_new_pairs < 0:
        raise ConfigError("settings key 'retrain.min_new_pairs' must be >= 0")
    if not 0 < r.held_out_fraction < 1:
        raise ConfigError("settings key 'retrain.held_out_fraction' must be in (0, 1)")
    if r.tolerance < 0:
        raise ConfigError("settings key 'retrain.tolerance' must be >= 0")
    if r.misfire_grace_time < 1:
        raise ConfigError("settings key 'retrain.misfire_grace_time' must be >= 1 second")
    if r.lock_lease <= 0:
        raise ConfigError("settings key 'retrain.lock_lease' must be > 0 seconds")
