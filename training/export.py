"""Export a fine-tuned classifier into the Triton model repository as its next numbered version.

One TorchScript artifact (``model.pt``, traced) is served two ways:

* ``<name>/`` — Triton's **Python backend** (``model.py`` loads the TorchScript with torch). This is
  what the ``tritonserver`` in the ``nvidia-pytriton`` wheel can run (it has no other backend):
  radpair's embedded server, CPU or GPU.
* ``<name>_libtorch/`` — Triton's native **PyTorch (libtorch) backend**, for the official Triton
  GPU container. Its version folders link to the same files. libtorch names tuple outputs by
  position (``probabilities__0``, ``lesion__1``, ``attention__2``, ``embedding__3``); the client maps them back.

Each version folder also holds ``preprocess.json`` (what the network expects) and
``model_card.json`` (training run, data snapshot, metrics, class names, creation time, checksum).
A version is written to a hidden folder and renamed into place, so Triton never sees half of one.
The first export of a model makes its version the served one; later exports only add a version,
and ``radpair model load NAME --version N`` (or the retraining job) promotes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from radpair.core.preprocess import PreprocessParams
from radpair.serving.repository import (
    OUTPUT_NAMES,
    Kind,
    ModelRepository,
    RepositoryError,
)

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The run cannot be exported (missing files, incompatible shapes, failed parity check)."""


@dataclass(frozen=True)
class ExportedVersion:
    name: str
    version: int
    path: Path
    # Max abs difference TorchScript vs eager on a random batch, when checked.
    parity_max_abs_diff: float | None


class _Served(nn.Module):
    """Fixes the traced input's name to ``volume`` (libtorch binds inputs by argument name)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, volume: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        probabilities, lesion, attention, embedding = self.net(volume)
        return probabilities, lesion, attention, embedding


def load_run(run_dir: Path) -> tuple[nn.Module, PreprocessParams, list[str], dict[str, Any]]:
    """The classifier, preprocessing, class names and model-card facts of a fine-tuning run (contract 4)."""
    from radpair.training.models import LEGACY_CONFIG, build_classifier

    run_dir = Path(run_dir)
    missing = [f for f in ("classifier.pt", "model_config.json", "preprocess.json", "class_names.json")
               if not (run_dir / f).is_file()]
    if missing:
        raise ExportError(f"{run_dir} is not a fine-tuning run directory: missing {', '.join(missing)}")
    config = json.loads((run_dir / "model_config.json").read_text())
    model = build_classifier({**LEGACY_CONFIG, **config})
    model.load_state_dict(torch.load(run_dir / "classifier.pt", map_location="cpu", weights_only=True))
    params = PreprocessParams.from_json((run_dir / "preprocess.json").read_text())
    class_names = json.loads((run_dir / "class_names.json").read_text())
    facts: dict[str, Any] = {"run": str(run_dir.resolve()), "model_config": config}
    for key, filename in (("metrics", "metrics.json"), ("training_config", "config.json"),
                          ("data_snapshot", "data_snapshot.json")):
        if (run_dir / filename).is_file():
            facts[key] = json.loads((run_dir / filename).read_text())
    if "data_snapshot" not in facts and isinstance(facts.get("metrics"), dict) and "data" in facts["metrics"]:
        facts["data_snapshot"] = facts["metrics"]["data"]
    return model, params, class_names, facts


def export_run(run_dir: Path | str, repo: Path | str, name: str = "radpair_classifier", kind: Kind = "cpu",
               max_batch_size: int = 8, check: bool = True) -> ExportedVersion:
    """``radpair export``: load a run directory and export it (see :func:`export_model`)."""
    model, params, class_names, facts = load_run(Path(run_dir))
    return export_model(model, params, class_names, facts, Path(repo), name, kind, max_batch_size, check)


def export_model(model: nn.Module, params: PreprocessParams, class_names: Sequence[str], facts: dict[str, Any],
                 repo: Path, name: str = "radpair_classifier", kind: Kind = "cpu", max_batch_size: int = 8,
                 check: bool = True) -> ExportedVersion:
    """Trace ``model`` and write it as the next version of ``name`` (and ``name_libtorch``) in ``repo``."""
    if max_batch_size < 1:
        raise ExportError("max_batch_size must be >= 1 (dynamic batching needs a batch dimension)")
    model = model.eval()
    shape = (1, *params.spatial_size)
    example = torch.randn(2, *shape)
    with torch.no_grad():
        traced = torch.jit.trace(_Served(model), example)
        eager_out = model(example)
    if len(eager_out) != len(OUTPUT_NAMES):
        raise ExportError(f"the classifier must return {OUTPUT_NAMES}, got {len(eager_out)} outputs")
    probabilities, lesion, attention, embedding = eager_out
    if probabilities.shape[1] != len(class_names):
        raise ExportError(f"{probabilities.shape[1]} class probabilities but {len(class_names)} class names")
    if tuple(attention.shape[1:]) != tuple(params.spatial_size):
        raise ExportError(f"attention {tuple(attention.shape[1:])} is not at the input resolution {params.spatial_size}")
    if tuple(lesion.shape[1:]) != (1,):
        raise ExportError(f"the lesion probability must be [B, 1], got {tuple(lesion.shape)}")
    dims = {"volume": list(shape), "probabilities": [len(class_names)], "lesion": [1],
            "attention": list(params.spatial_size), "embedding": [int(embedding.shape[1])]}
    parity = parity_check(model, traced, shape) if check else None

    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    artifact = buffer.getvalue()
    repository = ModelRepository(repo)
    card = {
        "name": name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "class_names": list(class_names),
        "io": dims,
        "sha256": hashlib.sha256(artifact).hexdigest(),
        "torch": torch.__version__,
        "parity_max_abs_diff": parity,
        **facts,
    }
    files = {"model.pt": artifact, "preprocess.json": (params.to_json() + "\n").encode()}
    try:
        written = repository.add_version(name, files, card, dims, class_names, kind, max_batch_size)
    except RepositoryError as exc:
        raise ExportError(str(exc)) from exc
    log.info("exported %s version %d to %s (%s; parity %s; current version %d)", name, written.version, written.path,
             kind.upper(), "not checked" if parity is None else f"max abs diff {parity:.2e}", repository.current(name))
    return ExportedVersion(name, written.version, written.path, parity)


def parity_check(model: nn.Module, traced: torch.jit.ScriptModule, shape: Sequence[int], batch: int = 3,
                 tolerance: float = 1e-4) -> float:
    """Max abs difference between TorchScript and eager outputs on a random batch; raise above ``tolerance``.

    A batch size other than the one traced with catches shapes frozen into the trace.
    """
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diffs = [float((a - b).abs().max()) for a, b in zip(model(x), traced(x))]
    worst = max(diffs)
    if worst > tolerance:
        raise ExportError(f"TorchScript differs from eager by {worst:.2e} (> {tolerance:g}) per output {diffs}")
    return worst
