"""Triton serving overhead (issue #5): the same TorchScript classifier, the same inputs, the same run,
called (a) in-process with torch and (b) through radpair's client and the tritonserver from the
nvidia-pytriton wheel (Python backend, dynamic batching), by 1, 4 and 8 concurrent clients each
sending one preprocessed volume [1, 1, 64, 64, 64] per request.

Throughput (requests/s) and p50/p95 latency per request; the overhead ratio is in-process
throughput / Triton throughput at the same concurrency (1.00 = no overhead). The mean batch Triton
executed comes from its statistics (inference_count / execution_count). The model is the shipped
triton_models/ version when there is one, else the default classifier architecture (timing does not
depend on the weights). ``RADPAIR_BENCH_KIND=gpu`` exports with KIND_GPU and runs the in-process
peer on CUDA. Run: ``pytest tests/bench/bench_triton.py -s``.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from radpair.core.preprocess import PreprocessParams
from radpair.core.task import load_task
from radpair.serving.client import TritonClient
from radpair.serving.repository import ModelRepository, shipped_repository
from radpair.serving.server import ManagedTritonServer
from tests.support.bench import RESULTS_DIR
from tests.support.ports import free_port
from radpair.training.export import export_model
from radpair.training.models import build_classifier

CONCURRENCY = (1, 4, 8)
SECONDS = float(os.environ.get("RADPAIR_BENCH_SECONDS", "10"))
KIND = os.environ.get("RADPAIR_BENCH_KIND", "cpu")
MODEL = "radpair_classifier"


def _source_model() -> tuple[torch.nn.Module, PreprocessParams, list[str], str]:
    """The shipped model's architecture and weights when present, else the default architecture."""
    shipped = ModelRepository(shipped_repository())
    if MODEL in shipped.models():
        files = shipped.version(MODEL, shipped.current(MODEL))
        card = files.card()
        model = build_classifier(card["model_config"])
        scripted = torch.jit.load(str(files.path / "model.pt"))
        model.load_state_dict({k.removeprefix("net."): v for k, v in scripted.state_dict().items()})
        return model, PreprocessParams.from_dict(files.preprocess()), card["class_names"], f"shipped version {files.version}"
    task = load_task()
    return (build_classifier({"num_classes": len(task.classes)}), task.input.preprocess, list(task.class_names),
            "default architecture")


def _drive(concurrency: int, call: Callable[[int], object]) -> dict:
    """``concurrency`` threads calling ``call(thread_index)`` back to back for SECONDS after one warm-up
    call each; throughput counts the requests that completed inside the window."""
    stop = threading.Event()
    ready = threading.Barrier(concurrency + 1)
    done: list[list[tuple[float, float]]] = [[] for _ in range(concurrency)]

    def worker(i: int) -> None:
        call(i)
        ready.wait()
        while not stop.is_set():
            start = time.perf_counter()
            call(i)
            end = time.perf_counter()
            done[i].append((end, (end - start) * 1000))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()
    window_end = time.perf_counter() + SECONDS
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join()
    latencies = np.array([ms for d in done for _, ms in d])
    in_window = sum(1 for d in done for end, _ in d if end <= window_end)
    return {"requests": int(latencies.size), "throughput_rps": in_window / SECONDS,
            "p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95))}


def test_triton_vs_in_process(tmp_path: Path) -> None:
    model, params, class_names, source = _source_model()
    device = torch.device("cuda" if KIND == "gpu" else "cpu")
    export_model(model, params, class_names, {"run": f"bench ({source})"}, tmp_path / "repo", MODEL, KIND, max_batch_size=8)
    scripted = torch.jit.load(str(tmp_path / "repo" / MODEL / "1" / "model.pt"), map_location=device).eval()
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 1, *params.spatial_size)).astype(np.float32) for _ in range(max(CONCURRENCY))]

    def in_process(i: int) -> None:
        with torch.inference_mode():
            out = scripted(torch.from_numpy(inputs[i]).to(device))
            [t.cpu() for t in out]

    rows = []
    server = ManagedTritonServer(tmp_path / "repo", free_port(), free_port(), free_port(), [MODEL], work_dir=tmp_path / "work")
    with server:
        clients = [TritonClient(server.http_url, tmp_path / "repo", "http", MODEL, timeout=120)
                   for _ in range(max(CONCURRENCY))]
        for concurrency in CONCURRENCY:
            local = _drive(concurrency, in_process)
            before = _stats(clients[0])
            triton = _drive(concurrency, lambda i: clients[i].infer(inputs[i]))
            inferences, executions = (a - b for a, b in zip(_stats(clients[0]), before))
            rows.append({"concurrency": concurrency, "in_process": local, "triton": triton,
                         "mean_batch": inferences / max(executions, 1),
                         "overhead_ratio": local["throughput_rps"] / triton["throughput_rps"]})
        for c in clients:
            c.close()

    print(f"\nTriton ({KIND.upper()}, Python backend, HTTP) vs in-process torch; model: {source}, input "
          f"{list(params.spatial_size)}; {SECONDS:.0f} s per cell; {os.cpu_count()} CPUs")
    print(f"{'clients':>7} | {'in-process req/s':>16} {'p50 ms':>8} {'p95 ms':>8} | {'Triton req/s':>12} "
          f"{'p50 ms':>8} {'p95 ms':>8} {'batch':>6} | {'overhead':>8}")
    for r in rows:
        lp, tr = r["in_process"], r["triton"]
        print(f"{r['concurrency']:>7} | {lp['throughput_rps']:>16.2f} {lp['p50_ms']:>8.1f} {lp['p95_ms']:>8.1f} | "
              f"{tr['throughput_rps']:>12.2f} {tr['p50_ms']:>8.1f} {tr['p95_ms']:>8.1f} {r['mean_batch']:>6.2f} | "
              f"{r['overhead_ratio']:>7.2f}x")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "triton", "kind": KIND, "model": source, "input": list(params.spatial_size),
              "seconds_per_cell": SECONDS, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                       "torch": torch.__version__,
                                                       "gpu": torch.cuda.get_device_name() if KIND == "gpu" else None},
              "rows": rows}
    suffix = "" if KIND == "cpu" else f"_{KIND}"
    (RESULTS_DIR / f"triton{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    assert all(r["triton"]["requests"] > 0 and r["in_process"]["requests"] > 0 for r in rows)


def _stats(client: TritonClient) -> tuple[int, int]:
    (entry,) = [s for s in client.statistics()["model_stats"] if s["version"] == "1"]
    return int(entry["inference_count"]), int(entry["execution_count"])
