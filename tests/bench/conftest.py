"""Benchmarks: ``bench_*.py`` files, collected only when tests/bench (or a file in it) is named on
the command line (``make bench`` runs ``pytest tests/bench -s``), never by the default
``pytest tests`` run. They print their figures and write JSON to tests/bench/results/."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).parent



def _bench_requested(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == BENCH_DIR or BENCH_DIR in path.parents:
            return True
    return False


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Module | None:
    # A bench file named on the command line is collected by pytest itself already.
    if parent.session.isinitpath(file_path):
        return None
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and _bench_requested(parent.config):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
