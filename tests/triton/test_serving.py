"""Export → real tritonserver → client: parity, dynamic batching, hot swap, corrupt version, crash restart.

The tests run in file order against one session server: version 1 (export), version 2 (hot swap),
a corrupt version 3 (refused), rollback to 1, then the server is killed and must come back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from radpair.serving.client import TritonClient
from radpair.serving.deploy import DeployError, deploy, history, rollback
from radpair.serving.repository import LIBTORCH_SUFFIX, ModelRepository, read_config
from radpair.serving.server import ManagedTritonServer, TritonServerError
from radpair.cli import main
from tests.support.checks import wait_for
from tests.support.ports import free_port
from tests.support.models import MODEL, PARAMS, export_small, small_classifier
from radpair.training.export import ExportError, export_model

SHAPE = (1, *PARAMS.spatial_size)


def volumes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


def eager(seed: int, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in small_classifier(seed)(torch.from_numpy(x))]


def test_export_writes_both_variants_with_card_and_preprocess(triton_repo: ModelRepository) -> None:
    files = triton_repo.version(MODEL, 1)
    card = files.card()
    assert card["version"] == 1 and card["class_names"] == ["BRAF-fusion", "BRAF-V600E"]
    assert card["run"] == "test-seed-1" and card["metrics"]["auc"] == 0.51
    assert card["io"]["attention"] == [32, 32, 32] and card["parity_max_abs_diff"] < 1e-4
    assert files.preprocess()["spatial_size"] == [32, 32, 32]
    python = read_config(triton_repo.root / MODEL / "config.pbtxt")
    assert python.backend == "python" and python.max_batch_size == 8
    assert list(python.input[0].dims) == [1, 32, 32, 32] and python.dynamic_batching.max_queue_delay_microseconds > 0
    assert [o.name for o in python.output] == ["probabilities", "lesion", "attention", "embedding"]
    assert list(python.version_policy.specific.versions) == [1]
    native = read_config(triton_repo.root / (MODEL + LIBTORCH_SUFFIX) / "config.pbtxt")
    assert native.platform == "pytorch_libtorch"
    assert [o.name for o in native.output] == ["probabilities__0", "lesion__1", "attention__2", "embedding__3"]
    linked = triton_repo.root / (MODEL + LIBTORCH_SUFFIX) / "1" / "model.pt"
    assert linked.is_symlink() and linked.resolve() == (files.path / "model.pt").resolve()
    # The native variant's artifact is a plain TorchScript module taking `volume`.
    scripted = torch.jit.load(str(linked))
    assert scripted.forward.schema.arguments[1].name == "volume"


def test_export_refuses_a_different_signature_and_a_bad_model(tmp_path: Path) -> None:
    export_small(tmp_path, seed=1)
    with pytest.raises(ExportError, match="another name"):
        export_model(small_classifier(1), type(PARAMS)(spatial_size=(24, 24, 24)), ("a", "b"), {}, tmp_path, MODEL)
    assert [v.version for v in ModelRepository(tmp_path).versions(MODEL)] == [1]
    with pytest.raises(ExportError, match="class names"):
        export_model(small_classifier(1), PARAMS, ("only-one",), {}, tmp_path, "other")


def test_infer_matches_in_process_torch(client: TritonClient) -> None:
    assert client.ready()
    meta = client.metadata()
    assert meta.versions == ("1",) and meta.max_batch_size == 8 and meta.input_shape == (-1, *SHAPE)
    x = volumes(11)  # more than max_batch_size: split by the client
    result = client.infer(x)
    assert result.model_version == "1"
    expected = eager(1, x)
    for got, want in zip((result.probabilities, result.lesion, result.attention, result.embedding), expected):
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) < 1e-4
    assert np.allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)


def _stats(client: TritonClient, version: str) -> tuple[int, int]:
    (entry,) = [s for s in client.statistics()["model_stats"] if s["version"] == version]
    return int(entry["inference_count"]), int(entry["execution_count"])


def test_concurrent_requests_are_batched(http_client: TritonClient) -> None:
    before = _stats(http_client, "1")
    x = volumes(1)
    barrier = threading.Barrier(8)

    def send() -> None:
        c = TritonClient(http_client.url, http_client.repository.root, "http", MODEL)
        for _ in range(4):
            barrier.wait()
            c.infer(x)
        c.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Triton records a batch's statistics after its responses are sent: wait for the last one.
    counted = wait_for("32 inferences in Triton's statistics",
                       lambda: (s := _stats(http_client, "1"))[0] - before[0] >= 32 and s, timeout=30)
    inferences, executions = (a - b for a, b in zip(counted, before))
    assert inferences == 32
    # The dynamic batcher merged simultaneous requests: fewer model executions than requests.
    assert executions < inferences, (inferences, executions)


class RequestLoop:
    """Clients sending requests without pause; records every failure and the versions that answered."""

    def __init__(self, client: TritonClient, threads: int = 3) -> None:
        self.client = client
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.versions: list[str] = []
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        # No retries: a request that fails is counted. A generous timeout: on a loaded 2-core CI
        # machine the new version's stub start (importing torch) slows everything down.
        c = TritonClient(self.client.url, self.client.repository.root, self.client.protocol, MODEL, timeout=120,
                         retries=0)
        x = volumes(1, seed=3)
        while not self.stop.is_set():
            try:
                self.versions.append(c.infer(x).model_version)
            except BaseException as exc:  # noqa: BLE001 - every failure is a test failure
                self.errors.append(exc)
        c.close()

    def __enter__(self) -> "RequestLoop":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def test_hot_swap_under_load_loses_no_request(http_client: TritonClient, triton_repo: ModelRepository) -> None:
    assert export_small(triton_repo.root, seed=2) == 2
    assert triton_repo.current(MODEL) == 1  # exporting does not promote
    with RequestLoop(http_client) as loop:
        time.sleep(1.0)
        assert deploy(http_client, triton_repo, 2) == 1
        answered_during_swap = len(loop.versions)
        time.sleep(1.0)
    assert loop.errors == []
    assert "1" in loop.versions and "2" in loop.versions
    assert len(loop.versions) > answered_during_swap
    assert loop.versions[-1] == "2" and http_client.metadata().versions == ("2",)
    x = volumes(2, seed=5)
    assert float(np.abs(http_client.infer(x).probabilities - eager(2, x)[0]).max()) < 1e-4


def test_corrupt_version_fails_to_load_and_the_previous_keeps_serving(
        http_client: TritonClient, triton_repo: ModelRepository, triton_server: ManagedTritonServer) -> None:
    assert export_small(triton_repo.root, seed=3) == 3
    (triton_repo.version(MODEL, 3).path / "model.pt").write_bytes(b"not a TorchScript archive")
    with RequestLoop(http_client) as loop:
        with pytest.raises(DeployError, match="version 2 keeps serving"):
            deploy(http_client, triton_repo, 3)
        time.sleep(0.5)
    assert loop.errors == [] and set(loop.versions) == {"2"}
    assert triton_repo.current(MODEL) == 2  # the config is put back: a restart serves 2 as well
    assert http_client.infer(volumes(1)).model_version == "2"


def test_rollback_returns_to_the_version_the_current_one_replaced(
        http_client: TritonClient, triton_repo: ModelRepository) -> None:
    assert rollback(http_client, triton_repo) == 1
    assert http_client.infer(volumes(1)).model_version == "1"
    assert [(h["version"], h["previous"], h["reason"]) for h in history(triton_repo, MODEL)] == [(2, 1, "load"), (1, 2, "rollback")]


def test_model_list_command(triton_server: ManagedTritonServer, triton_repo: ModelRepository,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "list", "--url", triton_server.http_url, "--repo", str(triton_repo.root)]) == 0
    out = capsys.readouterr().out
    assert "current: 1" in out and "serving 1" in out
    marks = {line.split()[-5] if line.startswith(" *") else line[4:8].strip(): line[:3] for line in out.splitlines()[1:4]}
    assert marks == {"1": " *S", "2": "   ", "3": "   "}, out
    assert "auc=0.51" in out and "auc=0.52" in out
    assert main(["model", "load", "--version", "3", "--url", triton_server.http_url, "--repo", str(triton_repo.root)]) == 1
    assert "keeps serving" in capsys.readouterr().err


def test_killed_server_is_detected_and_restarted(http_client: TritonClient, triton_server: ManagedTritonServer,
                                                  triton_repo: ModelRepository) -> None:
    old_pid = triton_server.pid
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while not (triton_server.restarts >= 1 and http_client.ready()):
        assert time.monotonic() < deadline, "tritonserver was not restarted"
        time.sleep(0.2)
    assert triton_server.pid != old_pid
    # It serves what config.pbtxt names (the rollback's version), and requests succeed again.
    assert http_client.infer(volumes(1)).model_version == str(triton_repo.current(MODEL)) == "1"
    assert json.loads(triton_repo.version(MODEL, 1).path.joinpath("model_card.json").read_text())["version"] == 1


def test_a_model_that_fails_at_start_leaves_the_server_up(triton_repo: ModelRepository, tmp_path: Path) -> None:
    shutil.copytree(triton_repo.root / MODEL, tmp_path / "repo" / MODEL, symlinks=True)
    current = triton_repo.current(MODEL)
    (tmp_path / "repo" / MODEL / str(current) / "model.pt").write_bytes(b"truncated")
    server = ManagedTritonServer(tmp_path / "repo", free_port(), free_port(), free_port(), [MODEL], work_dir=tmp_path / "work")
    with server:
        assert server.wait_ready(timeout=30) == [MODEL]
        assert server.alive()
        assert f"failed to load '{MODEL}' version {current}" in server.log_path.read_text()


def test_a_port_in_use_is_named_from_tritons_own_log(triton_repo: ModelRepository, tmp_path: Path) -> None:
    """tritonserver only exits with status 1; the error names the reason it wrote to its log."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        server = ManagedTritonServer(triton_repo.root, taken.getsockname()[1], free_port(), free_port(), [MODEL],
                                     work_dir=tmp_path, startup_timeout=60)
        with pytest.raises(TritonServerError) as raised:
            server.start()
        server.stop()
    message = str(raised.value)
    assert "status 1: " in message and "in use" in message.lower(), message
