"""One real tritonserver (from the nvidia-pytriton wheel) for the session, on free loopback ports.

The served model is TRAINING's real classifier (``radpair.training.models.build_classifier``) in a
small configuration, exported by radpair's exporter, so export, serving and the client are tested
end to end on the network radpair ships.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from radpair.serving.client import TritonClient
from radpair.serving.repository import ModelRepository
from radpair.serving.server import TRITON_DIR, ManagedTritonServer
from tests.support.models import MODEL, export_small
from tests.support.ports import free_port


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
    c = TritonClient(url, triton_repo.root, request.param, MODEL, timeout=30, retries=6, retry_backoff=0.25)
    yield c
    c.close()


@pytest.fixture
def http_client(triton_server: ManagedTritonServer, triton_repo: ModelRepository) -> Iterator[TritonClient]:
    c = TritonClient(triton_server.http_url, triton_repo.root, "http", MODEL, timeout=30, retries=6, retry_backoff=0.25)
    yield c
    c.close()
