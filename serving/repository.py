"""The Triton model repository on disk (``triton_models/``): its layout, configs and versions.

Layout, per model ``NAME``::

    NAME/config.pbtxt             Python backend (the wheel's tritonserver; CPU or GPU)
    NAME/labels.txt               class names, one per line (Triton's label file)
    NAME/<N>/model.pt             TorchScript (traced)
    NAME/<N>/model.py             Python-backend model that serves model.pt with torch
    NAME/<N>/preprocess.json      core.preprocess.PreprocessParams of the version
    NAME/<N>/model_card.json      training run, data snapshot, metrics, class names, created, sha256
    NAME_libtorch/config.pbtxt    native PyTorch backend (Triton's GPU container)
    NAME_libtorch/<N>/...         relative links to NAME/<N>/ files

The **current** version is the one named by ``version_policy { specific { versions: [N] } }`` in
both configs. Changing it rewrites the configs; an explicit Triton ``load`` then brings the new
version up while the old one keeps serving, and unloads the old once the new is ready. The config
on disk is the source of truth: a restarted server serves what the last swap left there.

This module is the only writer of that layout (the exporter in ``radpair.training.export``
calls :meth:`ModelRepository.add_version`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from radpair.core.settings import Settings

# What a served model returns, in this order (the Python model's OUTPUTS and the exporter agree).
OUTPUT_NAMES = ("probabilities", "lesion", "attention", "embedding")
LIBTORCH_SUFFIX = "_libtorch"
VERSION_FILES = ("model.pt", "preprocess.json", "model_card.json")
PYTHON_MODEL = Path(__file__).with_name("triton_model.py")

Kind = Literal["cpu", "gpu"]


class RepositoryError(RuntimeError):
    """The repository does not hold what was asked, or a version does not fit the model."""


def shipped_repository() -> Path:
    """The model repository shipped with radpair (package data ``radpair.triton_models``)."""
    return Path(str(resources.files("radpair.triton_models")))


def served_repository(settings: Settings) -> ModelRepository:
    """The repository Triton serves and retraining promotes into: ``triton.model_repository``, else
    ``<data_dir>/models`` — never the shipped copy inside the installed package."""
    t = settings.triton
    return ModelRepository(Path(t.model_repository) if t.model_repository else settings.data_dir / "models")


def install_shipped_model(repository: ModelRepository, name: str) -> bool:
    """Copy the shipped model ``name`` (and its libtorch variant) into ``repository`` when it has no
    such model yet; True when copied. The served repository starts from the shipped model and then
    lives its own life (promotions, rollbacks), so upgrading radpair never rewrites it."""
    shipped = shipped_repository()
    if repository.root.resolve() == shipped.resolve() or (repository.root / name / "config.pbtxt").is_file():
        return False
    if not (shipped / name / "config.pbtxt").is_file():
        return False
    for model in (name, name + LIBTORCH_SUFFIX):
        if (shipped / model).is_dir():
            shutil.copytree(shipped / model, repository.root / model, symlinks=True, dirs_exist_ok=True)
    return True


@dataclass(frozen=True)
class VersionFiles:
    name: str
    version: int
    path: Path

    def preprocess(self) -> dict[str, Any]:
        return json.loads((self.path / "preprocess.json").read_text())

    def card(self) -> dict[str, Any]:
        return json.loads((self.path / "model_card.json").read_text())


def read_config(path: Path) -> mc.ModelConfig | None:
    if not path.is_file():
        return None
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def write_config(path: Path, config: mc.ModelConfig) -> None:
    """Write through a temporary file and a rename, so a concurrent Triton load never reads half a config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text_format.MessageToString(config))
    tmp.replace(path)


def build_config(name: str, variant: Literal["python", "libtorch"], dims: dict[str, list[int]], kind: Kind,
                 max_batch_size: int, class_names: Sequence[str], versions: Sequence[int]) -> mc.ModelConfig:
    """One variant's ``config.pbtxt`` as Triton's own ModelConfig message (contract 5)."""
    config = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    if variant == "python":
        config.backend = "python"
        out_names = list(OUTPUT_NAMES)
        # 0: torch's default thread count.
        config.parameters["torch_threads"].string_value = "0"
    else:
        config.platform = "pytorch_libtorch"
        # libtorch names tuple outputs by position.
        out_names = [f"{n}__{i}" for i, n in enumerate(OUTPUT_NAMES)]
    config.input.add(name="volume", data_type=mc.TYPE_FP32, dims=dims["volume"])
    for out_name, key in zip(out_names, OUTPUT_NAMES):
        output = config.output.add(name=out_name, data_type=mc.TYPE_FP32, dims=dims[key])
        if key == "probabilities":
            output.label_filename = "labels.txt"
    config.dynamic_batching.max_queue_delay_microseconds = 2000
    config.dynamic_batching.preferred_batch_size.append(max_batch_size)
    group = mc.ModelInstanceGroup.KIND_GPU if kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=1, kind=group)
    config.version_policy.specific.versions.extend(versions)
    config.parameters["class_names"].string_value = json.dumps(list(class_names))
    return config


def _signature(c: mc.ModelConfig) -> list:
    return [(t.data_type, list(t.dims)) for t in (*c.input, *c.output)]


class ModelRepository:
    """Read and change a Triton model repository folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def models(self) -> list[str]:
        """Models with a Python-backend config (the libtorch siblings are their variants)."""
        return sorted(p.parent.name for p in self.root.glob("*/config.pbtxt")
                      if not p.parent.name.endswith(LIBTORCH_SUFFIX))

    def config(self, name: str) -> mc.ModelConfig:
        config = read_config(self.root / name / "config.pbtxt")
        if config is None:
            raise RepositoryError(f"no model {name!r} in {self.root}")
        return config

    def versions(self, name: str) -> list[VersionFiles]:
        model_dir = self.root / name
        found = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()) if model_dir.is_dir() else []
        return [VersionFiles(name, v, model_dir / str(v)) for v in found]

    def version(self, name: str, version: int) -> VersionFiles:
        path = self.root / name / str(version)
        if not (path / "model_card.json").is_file():
            raise RepositoryError(f"model {name!r} has no version {version} in {self.root}")
        return VersionFiles(name, version, path)

    def current(self, name: str) -> int:
        """The version the config names (the one Triton serves once loaded)."""
        versions = list(self.config(name).version_policy.specific.versions)
        if len(versions) != 1:
            raise RepositoryError(f"model {name!r} must name exactly one version in its version_policy, has {versions}")
        return versions[0]

    def set_current(self, name: str, version: int) -> None:
        """Point both variants' version policy at ``version`` (Triton picks it up at the next load)."""
        self.version(name, version)
        for model in (name, name + LIBTORCH_SUFFIX):
            path = self.root / model / "config.pbtxt"
            config = read_config(path)
            if config is None:
                continue
            config.version_policy.specific.ClearField("versions")
            config.version_policy.specific.versions.append(version)
            write_config(path, config)

    def add_version(self, name: str, files: dict[str, bytes], card: dict[str, Any], dims: dict[str, list[int]], class_names: Sequence[str],
                    kind: Kind, max_batch_size: int) -> VersionFiles:
        """Write ``files`` (model.pt, preprocess.json) and ``card`` as the next version of ``name``.

        The version is staged in a hidden folder and renamed into place. The first version of a
        model becomes current; later ones wait for :meth:`set_current` (``radpair model load``).
        A version whose input/output shapes differ from the model's is refused: one Triton model
        has one signature.
        """
        model_dir = self.root / name
        version = max((v.version for v in self.versions(name)), default=0) + 1
        existing = read_config(model_dir / "config.pbtxt")
        current = [version] if existing is None else list(existing.version_policy.specific.versions)
        python_config = build_config(name, "python", dims, kind, max_batch_size, class_names, current)
        if existing is not None and _signature(existing) != _signature(python_config):
            raise RepositoryError(f"model {name!r} takes/returns {_signature(existing)}; this version "
                                  f"{_signature(python_config)}. Export it under another name.")
        staging = model_dir / f".{version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for filename, data in files.items():
            (staging / filename).write_bytes(data)
        card = {**card, "name": name, "version": version}
        (staging / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        shutil.copyfile(PYTHON_MODEL, staging / "model.py")
        staging.rename(model_dir / str(version))
        (model_dir / "labels.txt").write_text("\n".join(class_names) + "\n")
        write_config(model_dir / "config.pbtxt", python_config)

        libtorch_dir = self.root / (name + LIBTORCH_SUFFIX)
        (libtorch_dir / str(version)).mkdir(parents=True, exist_ok=True)
        for filename in VERSION_FILES:
            link = libtorch_dir / str(version) / filename
            link.unlink(missing_ok=True)
            link.symlink_to(Path("..", "..", name, str(version), filename))
        shutil.copyfile(model_dir / "labels.txt", libtorch_dir / "labels.txt")
        write_config(libtorch_dir / "config.pbtxt",
                     build_config(name + LIBTORCH_SUFFIX, "libtorch", dims, kind, max_batch_size, class_names, current))
        return VersionFiles(name, version, model_dir / str(version))
