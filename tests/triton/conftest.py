"""One real tritonserver (from the nvidia-pytriton wheel) for the session, on free loopback ports.

The served model is TRAINING's real classifier (``training.models.build_classifier``) in a small
configuration, exported by radpair's exporter, so export, serving and the client are tested end
to end on the network radpair ships.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from core.preprocess import PreprocessParams
from pipeline.triton_client import TritonClient
from pipeline.triton_repository import ModelRepository
from pipeline.triton_server import ManagedTritonServer, TRITON_DIR
from tests.support.postgres import free_port
from training.export import export_model
from training.models import build_classifier

MODEL = "radpair_classifier"
SMALL = {"depth": 10, "widths": [8, 8, 16, 16], "head_hidden": 16, "dropout": 0.0}
PARAMS = PreprocessParams(spatial_size=(32, 32, 32))
CLASSES = ("BRAF-fusion", "BRAF-V600E")


def small_classifier(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_classifier(SMALL).eval()
    # The attention layer starts with gamma = 0 (no effect); give it one so outputs depend on it.
    with torch.no_grad():
        model.encoder.attention.gamma.fill_(0.5)
    return model


def export_small(repo: Path, seed: int) -> int:
    return export_model(small_classifier(seed), PARAMS, CLASSES, {"run": f"test-seed-{seed}", "metrics": {"auc": 0.5 + seed / 100}},
                        repo, MODEL, "cpu", max_batch_size=8).version


@pytest.fixture(scope="session")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    root = tmp_path_factory.mktemp("triton_models")
    assert export_small(root, seed=1) == 1
    return ModelRepository(root)


@pytest.fixture(scope="session")
def triton_server(triton_repo: ModelRepository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedTritonServer]:
    if not (TRITON_DIR / "bin" / "tritonserver").is_file():
        pytest.skip(f"tritonserver is not installed at {TRITON_DIR}: install nvidia-pytriton (pip install -e .)")
    server = ManagedTritonServer(triton_repo.root, free_port(), free_port(), free_port(), [MODEL],
                                 work_dir=tmp_path_factory.mktemp("triton_work"), restart_backoff=0.2)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, triton_server: ManagedTritonServer, triton_repo: ModelRepository) -> Iterator[TritonClient]:
    url = triton_server.http_url if request.param == "http" else triton_server.grpc_url
    c = TritonClient(url, request.param, MODEL, timeout=30, retries=6, retry_backoff=0.25, repository=triton_repo.root)
    yield c
    c.close()


@pytest.fixture
def http_client(triton_server: ManagedTritonServer, triton_repo: ModelRepository) -> Iterator[TritonClient]:
    c = TritonClient(triton_server.http_url, "http", MODEL, timeout=30, retries=6, retry_backoff=0.25,
                     repository=triton_repo.root)
    yield c
    c.close()
