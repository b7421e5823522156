"""A few hundred generated hostile datasets (tests/support/fuzz.py) in every test run: each drives
the header parser, the report extractor and the full C-STORE handler of a real listener. Every
case is answered with a status (0x0000 stored, or a refusal), nothing crashes, the listener still
answers C-ECHO, and memory stays bounded. ``tests/fuzz/fuzz_corpus.py`` runs 10 000+ on demand."""

from __future__ import annotations

import collections
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from tests.fuzz.conftest import run_case
from tests.support.fuzz import Seed, StoreClient, peak_rss_mb
from tests.support.listener import RunningListener

CASES = 300
# The listener's own limits bound a case's memory; the test process may not grow beyond this.
RSS_BOUND_MB = 1500


def test_generated_hostile_corpus(seed_pool: list[Seed], fuzz_listener: RunningListener,
                                  outcomes: collections.Counter[str]) -> None:
    client = StoreClient(fuzz_listener.port, seed_pool)
    folder = Path(tempfile.mkdtemp(prefix="radpair-fuzz-"))

    @settings(max_examples=CASES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data: st.DataObject) -> None:
        seed, status = run_case(data, seed_pool, client, folder, outcomes)
        assert status is not None, f"no C-STORE response for a mutation of {seed.name}"

    try:
        case()
    finally:
        client.close()
    print(json.dumps({"seeds": len(seed_pool), "cases": CASES, "outcomes": dict(sorted(outcomes.items())),
                      "reassociations": client.reassociations, "peak_rss_mb": round(peak_rss_mb())}))
    assert sum(n for k, n in outcomes.items() if k.startswith("store:")) == CASES, "every case answered"
    assert outcomes["store:0x0000"] > 0 and sum(n for k, n in outcomes.items() if k.startswith("store:0xC")) > 0
    assert fuzz_listener.echoscu().returncode == 0, "the listener still serves"
    assert peak_rss_mb() < RSS_BOUND_MB
