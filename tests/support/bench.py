"""Where benchmarks write their figures (``tests/bench/results/``, not committed)."""

from __future__ import annotations

from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "results"
