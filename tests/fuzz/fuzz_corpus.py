"""The generated hostile corpus at scale, on demand: ``pytest tests/fuzz/fuzz_corpus.py -s``
(``RADPAIR_FUZZ_CASES``, default 10 000). Same cases and targets as test_hostile_corpus.py; the
outcome counts, the seed count and the peak RSS go to tests/fuzz/results/corpus.json."""

from __future__ import annotations

import collections
import json
import os
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from tests.fuzz.conftest import run_case
from tests.support.fuzz import Seed, StoreClient, peak_rss_mb
from tests.support.listener import RunningListener

RESULTS = Path(__file__).with_name("results") / "corpus.json"


def test_generated_hostile_corpus_at_scale(seed_pool: list[Seed], fuzz_listener: RunningListener,
                                           outcomes: collections.Counter[str]) -> None:
    cases = int(os.environ.get("RADPAIR_FUZZ_CASES", "10000"))
    client = StoreClient(fuzz_listener.port, seed_pool)
    folder = Path(tempfile.mkdtemp(prefix="radpair-fuzz-"))
    unanswered: list[str] = []
    started = time.monotonic()

    @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data: st.DataObject) -> None:
        seed, status = run_case(data, seed_pool, client, folder, outcomes)
        if status is None:
            unanswered.append(seed.name)

    try:
        case()
    finally:
        client.close()
    summary = {"seeds": len(seed_pool), "cases": sum(n for k, n in outcomes.items() if k.startswith("store:")),
               "outcomes": dict(sorted(outcomes.items())), "unanswered": unanswered,
               "reassociations": client.reassociations, "peak_rss_mb": round(peak_rss_mb()),
               "seconds": round(time.monotonic() - started), "echo_after": fuzz_listener.echoscu().returncode == 0}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    assert not unanswered and summary["echo_after"]
