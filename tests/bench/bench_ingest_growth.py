"""Ingest as the archive grows (issue 15, item 4): the same 500 × 64×64 MR instances sent by
storescu (TCP_NODELAY=1) over 1 and 4 associations into `radpair serve` on an empty archive and
on one pre-filled with 1 000 000 instance rows (bulk-inserted in SQL: 1000 studies × 1 series ×
1000 instances; no files, which ingest never reads), on SQLite and on PostgreSQL. Also times
the listener's part of `radpair status` (its SQL) and the whole command (process start
included). Prints the pre-filled ÷ empty ratios and writes tests/bench/results/ingest_growth.json.
Run: ``pytest tests/bench/bench_ingest_growth.py -s``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import DateTime, bindparam, text

from radpair.core.db import make_engine, session_factory, upgrade
from radpair.core.models import utcnow
from radpair.listener.status import status_tables
from tests.support.bench import RESULTS_DIR
from tests.support.dicom import make_series
from tests.support.postgres import PostgresServer
from tests.support.serve import RADPAIR, ServeProcess

ROWS = 1_000_000
PER_SERIES = 1000
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
ROOT = "1.2.826.0.1.3680043.10.99999"
# A recursive CTE counts 1..n on SQLite and PostgreSQL alike.
NUMBERS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) "
NOW = bindparam("now", type_=DateTime(timezone=True))


def _prefill(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    studies = ROWS // PER_SERIES
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO patients (patient_id, issuer, name, birth_date, sex) "
                          "VALUES ('FILL', '', '', '', '')"))
        conn.execute(text(NUMBERS.format(n=studies) +
                          "INSERT INTO studies (study_uid, patient_pk, accession_number, study_date, study_time, "
                          "study_id, description, referring_physician, state, first_received_at, last_received_at, "
                          "stable_at, stable_generation) SELECT :root || '.1.' || i, 1, 'F' || i, '', '', '', '', '', "
                          "'stable', :now, :now, :now, 1 FROM n").bindparams(NOW), {"root": ROOT, "now": utcnow()})
        conn.execute(text(NUMBERS.format(n=studies) +
                          "INSERT INTO series (series_uid, study_pk, modality, description, body_part, "
                          "frame_of_reference_uid) SELECT :root || '.2.' || i, i, 'MR', '', '', '' FROM n"),
                     {"root": ROOT})
        conn.execute(text(NUMBERS.format(n=ROWS) +
                          "INSERT INTO instances (sop_instance_uid, sop_class_uid, series_pk, instance_number, "
                          "transfer_syntax_uid, path, size, sha256, received_at, calling_ae) "
                          "SELECT :root || '.3.' || i, '1.2.840.10008.5.1.4.1.1.4', (i - 1) / :per + 1, i, "
                          "'1.2.840.10008.1.2.1', 'fill/' || i || '.dcm', 10000, 'x', :now, 'FILL' FROM n").bindparams(NOW),
                     {"root": ROOT, "per": PER_SERIES, "now": utcnow()})
    engine.dispose()


def _send(port: int, files: list[Path], associations: int) -> float:
    chunks = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", "RADPAIR", "127.0.0.1", str(port), *map(str, chunk)],
                              env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for chunk in chunks]
    errors = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    return time.perf_counter() - start


def _status_seconds(url: str, data_dir: Path) -> tuple[float, float]:
    engine = make_engine(url)
    with session_factory(engine)() as session:
        start = time.perf_counter()
        status_tables(session)
        sql = time.perf_counter() - start
    engine.dispose()
    start = time.perf_counter()
    done = subprocess.run([*RADPAIR, "status", "--data-dir", str(data_dir)], capture_output=True, text=True,
                          env={**os.environ, "RADPAIR_DATABASE_URL": url if url.startswith("postgresql") else ""})
    assert done.returncode == 0, done.stderr
    return sql, time.perf_counter() - start


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_series(tmp_path_factory.mktemp("growth") / "mr", 500, 64, 64, "MR")


def test_ingest_rate_as_the_archive_grows(files: list[Path], postgres_server: PostgresServer, tmp_path: Path) -> None:
    results = []
    for database in ("sqlite", "postgresql"):
        for rows in (0, ROWS):
            data_dir = tmp_path / f"{database}-{rows}"
            url = (f"sqlite:///{data_dir / 'radpair.db'}" if database == "sqlite"
                   else postgres_server.create_database(f"growth_{rows}"))
            started = time.perf_counter()
            if rows:
                _prefill(url)
            filled = time.perf_counter() - started
            for associations in (1, 4):
                served = ServeProcess(data_dir, env={"RADPAIR_DATABASE_URL": url if database == "postgresql" else ""})
                try:
                    seconds = _send(served.port, files, associations)
                finally:
                    served.stop()
                sql, command = _status_seconds(url, data_dir)
                # The next run sends the same instances again: forget their rows, so that every run
                # stores 500 new instances (their files are simply written again).
                engine = make_engine(url)
                with engine.begin() as conn:
                    conn.execute(text("DELETE FROM instances WHERE calling_ae <> 'FILL'"))
                engine.dispose()
                results.append({"database": database, "prefilled_rows": rows, "associations": associations,
                                "instances_per_s": round(len(files) / seconds, 1), "prefill_s": round(filled, 1),
                                "status_sql_s": round(sql, 3), "status_command_s": round(command, 2)})
                print(results[-1], flush=True)
    _report(results)


def _report(results: list[dict]) -> None:
    by_key = {(r["database"], r["prefilled_rows"], r["associations"]): r for r in results}
    print(f"\ningest as the archive grows ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end)")
    print(f"{'database':<11} {'rows':>8} {'assoc':>5} {'inst/s':>8} {'÷ empty':>8} {'status SQL s':>13} {'status cmd s':>13}")
    for r in results:
        empty = by_key[(r["database"], 0, r["associations"])]
        r["ratio_to_empty"] = round(r["instances_per_s"] / empty["instances_per_s"], 2)
        print(f"{r['database']:<11} {r['prefilled_rows']:>8} {r['associations']:>5} {r['instances_per_s']:>8.1f} "
              f"{r['ratio_to_empty']:>8.2f} {r['status_sql_s']:>13.3f} {r['status_command_s']:>13.2f}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / "ingest_growth.json"
    out.write_text(json.dumps({"cpus": os.cpu_count(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "results": results}, indent=2))
    print(f"written to {out}")
