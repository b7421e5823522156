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

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

ENV_PREFIX = "RADPAIR_"


class SettingsError(ValueError):
    """A settings value is missing, unknown or of the wrong type; the message names the key."""


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
    model_repository: str = ""
    model_name: str = "radpair_classifier"
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
    """Which stable studies a model runs on, on which series, and where the results go.

    Every non-empty criterion must hold for a series; text criteria are regular expressions
    (case-insensitive, searched) except ``modality``, which is an exact DICOM Modality.
    """

    name: str
    modality: str = "MR"
    body_part: str = ""
    series_description: str = ""
    study_description: str = ""
    sop_class_uid: str = ""
    calling_ae: str = ""
    # Orientation of the selected series: "axial", "sagittal", "coronal" or "any".
    orientation: Literal["axial", "sagittal", "coronal", "any"] = "any"
    min_instances: int = 8
    # Empty: triton.model_name.
    model: str = ""
    # Names of [[pipeline.destinations]] entries; empty keeps results in the archive only.
    destinations: list[str] = field(default_factory=list)


def _default_rules() -> list[RoutingRuleSettings]:
    return [RoutingRuleSettings(name="mr")]


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
    # Attention (scaled to its maximum) at or above this is the SEG's region.
    attention_threshold: float = 0.5
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
    config: str = ""
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
class Settings:
    data_dir: Path = Path("data")
    log_level: str = "INFO"
    listener: ListenerSettings = field(default_factory=ListenerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    triton: TritonSettings = field(default_factory=TritonSettings)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    retrain: RetrainSettings = field(default_factory=RetrainSettings)

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
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SettingsError(f"settings file {path} does not exist")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from exc
    _apply_environment(raw, os.environ if environ is None else environ)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *tables, key = dotted.split(".")
        target = raw
        for table in tables:
            target = target.setdefault(table, {})
        target[key] = value
    settings = _build(Settings, raw, "")
    _check(settings)
    return settings


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    tables = {name for name, tp in typing.get_type_hints(Settings).items() if dataclasses.is_dataclass(tp)}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        table, _, key = rest.partition("_")
        if table in tables and key:
            raw.setdefault(table, {})[key] = _parse_env_value(value)
        else:
            raw[rest] = _parse_env_value(value)


def _parse_env_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        key = prefix + sorted(unknown)[0]
        raise SettingsError(f"unknown settings key '{key}'")
    values = {}
    for name in names:
        if name in raw:
            values[name] = _coerce(hints[name], raw[name], prefix + name)
    try:
        return cls(**values)
    except TypeError as exc:
        raise SettingsError(f"settings table '{prefix.rstrip('.') or '(top)'}': {exc}") from exc


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise SettingsError(f"settings key '{key}' must be a table")
        return _build(tp, value, key + ".")
    if origin is Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise SettingsError(f"settings key '{key}' is {value!r}; expected one of {allowed}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SettingsError(f"settings key '{key}' must be a list")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise SettingsError(f"settings key '{key}' must be a path string")
        return Path(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and not isinstance(value, str):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise SettingsError(f"settings key '{key}' is {value!r}; expected {tp.__name__}")
    return value


def _check(s: Settings) -> None:
    lst = s.listener
    if not 0 <= lst.port < 65536:
        raise SettingsError(f"settings key 'listener.port' is {lst.port}; expected 0-65535 (0: any free port)")
    if not 0 < len(lst.ae_title.strip()) <= 16:
        raise SettingsError("settings key 'listener.ae_title' must be 1-16 characters")
    if lst.stable_age <= 0:
        raise SettingsError("settings key 'listener.stable_age' must be > 0 seconds")
    if lst.max_associations < 1:
        raise SettingsError("settings key 'listener.max_associations' must be >= 1")
    if bool(lst.tls_cert) != bool(lst.tls_key):
        raise SettingsError("settings keys 'listener.tls_cert' and 'listener.tls_key' go together")
    if lst.tls_require_client_cert and not lst.tls_ca:
        raise SettingsError("settings key 'listener.tls_require_client_cert' needs 'listener.tls_ca'")
    if s.triton.retries < 0 or s.triton.retry_backoff < 0:
        raise SettingsError("settings keys 'triton.retries' and 'triton.retry_backoff' must be >= 0")
    if s.triton.mode == "remote" and not s.triton.url:
        raise SettingsError("settings key 'triton.url' is required when 'triton.mode' is 'remote'")
    _check_pipeline(s.pipeline)
    _check_retrain(s.retrain)


def _check_pipeline(p: PipelineSettings) -> None:
    if p.workers < 1:
        raise SettingsError("settings key 'pipeline.workers' must be >= 1")
    if p.max_attempts < 1:
        raise SettingsError("settings key 'pipeline.max_attempts' must be >= 1")
    if p.heartbeat_interval >= p.lease_seconds:
        raise SettingsError("settings key 'pipeline.heartbeat_interval' must be < 'pipeline.lease_seconds'")
    if not 0 < p.attention_threshold <= 1:
        raise SettingsError("settings key 'pipeline.attention_threshold' must be in (0, 1]")
    names = [d.name for d in p.destinations]
    for i, dest in enumerate(p.destinations):
        if names.count(dest.name) > 1:
            raise SettingsError(f"settings key 'pipeline.destinations[{i}].name' {dest.name!r} is not unique")
        if not 0 < dest.port < 65536:
            raise SettingsError(f"settings key 'pipeline.destinations[{i}].port' is {dest.port}; expected 1-65535")
    for i, rule in enumerate(p.rules):
        for key in ("body_part", "series_description", "study_description", "calling_ae"):
            try:
                re.compile(getattr(rule, key))
            except re.error as exc:
                raise SettingsError(f"settings key 'pipeline.rules[{i}].{key}' is not a regular expression: {exc}") from exc
        for name in rule.destinations:
            if name not in names:
                raise SettingsError(f"settings key 'pipeline.rules[{i}].destinations' names unknown destination {name!r}")


def _check_retrain(r: RetrainSettings) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(r.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(f"settings key 'retrain.timezone' is {r.timezone!r}: not an IANA time zone") from exc
    try:
        r.cron_trigger()
    except ValueError as exc:
        raise SettingsError(f"settings key 'retrain.cron' is {r.cron!r}: {exc}") from exc
    if r.min_new_pairs < 0:
        raise SettingsError("settings key 'retrain.min_new_pairs' must be >= 0")
    if not 0 < r.held_out_fraction < 1:
        raise SettingsError("settings key 'retrain.held_out_fraction' must be in (0, 1)")
    if r.tolerance < 0:
        raise SettingsError("settings key 'retrain.tolerance' must be >= 0")
    if r.misfire_grace_time < 1:
        raise SettingsError("settings key 'retrain.misfire_grace_time' must be >= 1 second")
    if r.lock_lease <= 0:
        raise SettingsError("settings key 'retrain.lock_lease' must be > 0 seconds")
