"""Hot swap of the served model version: promote, roll back, with a deployment history.

A swap rewrites the version policy in ``config.pbtxt`` and asks Triton for an explicit load of the
model. Triton loads the new version beside the old one, which keeps answering requests until the
new one is ready, then unloads the old: no in-flight request is lost. If the new version fails to
load, Triton keeps the old one serving; the config is put back so a restart serves it too.

Every swap is appended to ``<model>/deployments.jsonl``; a rollback returns to the version that was
current before the current one was promoted; repeated rollbacks walk further back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

from radpair.serving.client import TritonClient, TritonInferenceError, TritonUnavailable
from radpair.serving.repository import ModelRepository

log = logging.getLogger(__name__)


class DeployError(RuntimeError):
    """The version could not be served; the previous one still is."""


def history_path(repository: ModelRepository, name: str) -> Path:
    return repository.root / name / "deployments.jsonl"


def history(repository: ModelRepository, name: str) -> list[dict]:
    path = history_path(repository, name)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def deploy(client: TritonClient, repository: ModelRepository, version: int, reason: str = "load") -> int:
    """Serve ``version`` of the client's model; return the version it replaced."""
    name = client.model_name
    repository.version(name, version)
    previous = repository.current(name)
    repository.set_current(name, version)
    try:
        client.load()
    except TritonInferenceError as exc:
        repository.set_current(name, previous)
        raise DeployError(f"{name} version {version} failed to load; version {previous} keeps serving: {exc}") from exc
    except TritonUnavailable:
        # Nothing changed on the server; a later start must not pick up the unconfirmed version.
        repository.set_current(name, previous)
        raise
    entry = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "version": version,
             "previous": previous, "reason": reason}
    with history_path(repository, name).open("a") as f:
        f.write(json.dumps(entry) + "\n")
    log.info("%s: version %d serving (was %d; %s)", name, version, previous, reason)
    return previous


def rollback_target(repository: ModelRepository, name: str) -> int:
    """The version to return to: the one the current version replaced when it was promoted (rollbacks
    themselves are skipped, so repeated rollbacks walk back through the promotions), else the next
    lower version."""
    current = repository.current(name)
    for entry in reversed(history(repository, name)):
        if entry["reason"] != "rollback" and entry["version"] == current and entry["previous"] != current:
            return int(entry["previous"])
    lower = [v.version for v in repository.versions(name) if v.version < current]
    if not lower:
        raise DeployError(f"{name}: no version to roll back to from version {current}")
    return max(lower)


def rollback(client: TritonClient, repository: ModelRepository) -> int:
    """Serve the previous version (see :func:`rollback_target`); return it."""
    target = rollback_target(repository, client.model_name)
    deploy(client, repository, target, reason="rollback")
    return target
