"""Ingest throughput (issue #2): the same files, the same run, storescu (TCP_NODELAY=1) as the
sender, into radpair (SQLite and PostgreSQL), DCMTK storescp, Orthanc and a bare pynetdicom SCP;
64×64 MR and 512×512 CT-like instances; 1, 2 and 4 concurrent associations. radpair runs as
`radpair serve` does (one listener worker process per core) and with one worker, to show what
the workers add.

Every receiver starts empty for every run (radpair would otherwise answer re-sends as cheap
duplicates); the bare pynetdicom SCP polls with radpair's ``listener.poll_delay``. What each receiver promises differs and is printed with the table: radpair fsyncs
every file and commits every row before it answers; storescp, Orthanc and the bare pynetdicom
SCP do not fsync. Run: ``pytest tests/bench/bench_ingest.py -s``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from tests.support.bench import RESULTS_DIR
from tests.support.dicom import make_series
from tests.support.serve import ServeProcess
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
SIZES = {"MR 64x64": (500, 64, 64, "MR"), "CT 512x512": (100, 512, 512, "CT")}
CONCURRENCY = (1, 2, 4)
BARE_PYNETDICOM = """
import sys, pathlib
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
from radpair.core.settings import ListenerSettings
from radpair.listener.ae import poll_delay, set_nodelay
out = pathlib.Path(sys.argv[2])
def store(event):
    (out / (event.request.AffectedSOPInstanceUID + ".dcm")).write_bytes(event.encoded_dataset())
    return 0
ae = AE("BARE")
ae.supported_contexts = AllStoragePresentationContexts
ae.add_supported_context(Verification)
ae.maximum_pdu_size = 262144
ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[(evt.EVT_C_STORE, store), (evt.EVT_CONN_OPEN, set_nodelay),
                                                           (evt.EVT_CONN_OPEN, poll_delay(ListenerSettings().poll_delay))])
"""

Receiver = Callable[[Path], AbstractContextManager[int]]


def _wait_for_echo(port: int, aet: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["echoscu", "-aec", aet, "127.0.0.1", str(port)], env=DCMTK_ENV,
                          capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{aet} on port {port} never answered C-ECHO")


@contextmanager
def _process(cmd: list[str], port: int, aet: str, env: dict[str, str] | None = None) -> Iterator[int]:
    proc = subprocess.Popen(cmd, env=env or DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_echo(port, aet)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def radpair(work: Path, database_url: str = "", workers: int = 0) -> Iterator[int]:
    """`radpair serve` with ``listener.workers`` worker processes (0: one per core, the default)."""
    served = ServeProcess(work / "radpair", env={"RADPAIR_DATABASE_URL": database_url,
                                                 "RADPAIR_LISTENER_WORKERS": str(workers)})
    try:
        yield served.port
    finally:
        served.stop()


@contextmanager
def storescp(work: Path) -> Iterator[int]:
    (out := work / "storescp").mkdir()
    port = free_port()
    with _process(["storescp", "--fork", "-od", str(out), "-aet", "STORESCP", str(port)], port, "STORESCP") as p:
        yield p


@contextmanager
def orthanc(work: Path) -> Iterator[int]:
    port, http = free_port(), free_port()
    config = work / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "bench", "StorageDirectory": str(work / "orthanc"), "IndexDirectory": str(work / "orthanc"),
        "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "Plugins": [], "ConcurrentJobs": 2,
    }))
    with _process(["Orthanc", str(config)], port, "ORTHANC") as p:
        yield p


@contextmanager
def bare_pynetdicom(work: Path) -> Iterator[int]:
    (out := work / "bare").mkdir()
    port = free_port()
    with _process([sys.executable, "-c", BARE_PYNETDICOM, str(port), str(out)], port, "BARE") as p:
        yield p


def _send(port: int, aet: str, files: list[Path], associations: int) -> float:
    """Seconds for ``associations`` concurrent storescu processes to send ``files`` (split evenly)."""
    chunks = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", aet, "127.0.0.1", str(port), *map(str, chunk)], env=DCMTK_ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for chunk in chunks]
    errors = [p.communicate()[1] for p in procs]
    seconds = time.perf_counter() - start
    assert all(p.returncode == 0 for p in procs), errors
    return seconds


@pytest.fixture(scope="module")
def data_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("bench-data")
    return {name: make_series(root / name.split()[0], n, rows, cols, modality)
            for name, (n, rows, cols, modality) in SIZES.items()}


def test_ingest_throughput(data_sets: dict[str, list[Path]], postgres_server: PostgresServer,
                           tmp_path: Path) -> None:
    receivers: dict[str, tuple[Receiver, str]] = {
        "radpair-sqlite": (radpair, "RADPAIR"),
        "radpair-sqlite-1-worker": (lambda w: radpair(w, workers=1), "RADPAIR"),
        "radpair-postgresql": (lambda w: radpair(w, postgres_server.create_database(f"bench_{w.name}")), "RADPAIR"),
        "storescp": (storescp, "STORESCP"),
        "orthanc": (orthanc, "ORTHANC"),
        "pynetdicom-bare": (bare_pynetdicom, "BARE"),
    }
    results = []
    run = 0
    for size, files in data_sets.items():
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        for associations in CONCURRENCY:
            for name, (receiver, aet) in receivers.items():
                run += 1
                work = tmp_path / f"run{run}"
                work.mkdir()
                with receiver(work) as port:
                    seconds = _send(port, aet, files, associations)
                results.append({"receiver": name, "size": size, "associations": associations,
                                "instances": len(files), "seconds": round(seconds, 3),
                                "instances_per_s": round(len(files) / seconds, 1),
                                "mb_per_s": round(megabytes / seconds, 1)})
                shutil.rmtree(work, ignore_errors=True)
    _report(results)


def _report(results: list[dict]) -> None:
    by_key = {(r["receiver"], r["size"], r["associations"]): r for r in results}
    print(f"\ningest throughput ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end)")
    print(f"{'receiver':<20} {'size':<11} {'assoc':>5} {'inst/s':>8} {'MB/s':>7} {'radpair-sqlite / this':>22}")
    for r in results:
        ours = by_key[("radpair-sqlite", r["size"], r["associations"])]
        r["ratio_radpair_sqlite_to_this"] = round(ours["instances_per_s"] / r["instances_per_s"], 2)
        print(f"{r['receiver']:<20} {r['size']:<11} {r['associations']:>5} {r['instances_per_s']:>8.1f} "
              f"{r['mb_per_s']:>7.1f} {r['ratio_radpair_sqlite_to_this']:>22.2f}")
    print("radpair fsyncs each file and commits each row before answering; storescp, Orthanc and the bare "
          "pynetdicom SCP do not fsync; the test PostgreSQL runs with fsync=off; the bare pynetdicom SCP "
          "polls with radpair's listener.poll_delay.")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / "ingest.json"
    out.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(),
                               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "results": results}, indent=2))
    print(f"written to {out}")
