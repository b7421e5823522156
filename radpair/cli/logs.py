"""How radpair's processes log: one stream, text or JSON lines, patient identifiers only when asked.

Convention for every log call in radpair: a patient identifier never goes into the message; it
goes into ``extra`` under one of :data:`PATIENT_FIELDS` (``log.info("study %s: receiving",
uid, extra={"patient_id": pid})``). The handler drops those fields unless
``logging.patient_identifiers`` is on, so a log kept by a hospital names studies by their UID only.

Libraries are turned down to what a user can act on: pynetdicom, APScheduler, Alembic and
highdicom log routine detail at INFO (every PDU, job run, migration context and copied module),
and MONAI/torch/transformers raise deprecation and usage warnings about their own internals.
``-v`` (or ``logging.library_warnings``) shows all of it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from radpair.core.settings import LoggingSettings

PATIENT_FIELDS = ("patient_id", "accession_number", "patient_name")
CHATTY_LIBRARIES = ("pynetdicom", "apscheduler", "alembic", "highdicom")
# Warning categories that report on a library's own internals; PYTHONWARNINGS passes the same to
# the processes radpair starts (cohort workers, Triton's Python models).
LIBRARY_WARNINGS: tuple[type[Warning], ...] = (FutureWarning, DeprecationWarning, UserWarning)
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The values a log call passed in ``extra`` (what is not a standard LogRecord attribute)."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class PatientIdentifiers(logging.Filter):
    """Drops the :data:`PATIENT_FIELDS` of a record unless they are wanted."""

    def __init__(self, include: bool) -> None:
        super().__init__()
        self.include = include

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.include:
            for name in PATIENT_FIELDS:
                record.__dict__.pop(name, None)
        return True


class TextFormatter(logging.Formatter):
    """The classic line, with the call's extra fields appended as ``key='value'``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        extras = extra_fields(record)
        return line + "".join(f" {k}={v!r}" for k, v in extras.items()) if extras else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, one field per value: the rendered message, its template and
    arguments (so a shipper can group lines by template), the extra fields and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "template": str(record.msg),
        }
        if isinstance(record.args, tuple) and record.args:
            entry["args"] = list(record.args)
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(verbose: bool = False, settings: LoggingSettings | None = None, level: str = "INFO") -> None:
    """Set up the root logger of a radpair process (the command line calls it once, at start)."""
    from radpair.core.settings import LoggingSettings

    settings = settings or LoggingSettings()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    handler.addFilter(PatientIdentifiers(settings.patient_identifiers))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else level.upper())
    show_library_detail = verbose or settings.library_warnings
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if show_library_detail else logging.WARNING)
    logging.captureWarnings(True)
    if not show_library_detail:
        for category in LIBRARY_WARNINGS:
            warnings.filterwarnings("ignore", category=category)
        os.environ["PYTHONWARNINGS"] = ",".join(f"ignore::{c.__name__}" for c in LIBRARY_WARNINGS)
