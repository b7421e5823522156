"""What a hostile instance costs, before and after the listener's bounds, in the same run:
peak RSS of reading the header of a 1.5 MB deflate bomb (1.5 GiB inflated) the old way (pydicom
``dcmread(stop_before_pixels=True, specific_tags=...)``, which inflates the whole stream) and with
``listener.header.read_header``; and the time to extract the report of an SR with 100 000 TEXT
items the old way (``dcmread`` + flatten) and with ``listener.reports.parse_report`` (refused at
the item limit). Each measurement runs in a fresh interpreter. Writes results/hostile.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.bench import RESULTS_DIR
from tests.support.hostile import deflate_bomb, sr_with_items

ROOT = Path(__file__).resolve().parents[2]
PRELUDE = "import sys, time\nfrom io import BytesIO\ndata = open(sys.argv[1], 'rb').read()\nt = time.perf_counter()\n"
OLD_HEADER = PRELUDE + """
from pydicom import dcmread
from radpair.listener.header import HEADER_KEYWORDS
dcmread(BytesIO(data), stop_before_pixels=True, specific_tags=list(HEADER_KEYWORDS))
"""
NEW_HEADER = PRELUDE + """
from radpair.listener.header import HeaderError, read_header
try:
    read_header(data, "1.2.840.10008.1.2.1.99")
except HeaderError as exc:
    print("refused:", exc, file=sys.stderr)
"""
OLD_REPORT = PRELUDE + """
from pydicom import dcmread
ds = dcmread(BytesIO(data))
texts = []
def walk(items):
    for item in items:
        if item.get("ValueType") == "TEXT":
            texts.append(str(item.TextValue))
        walk(item.get("ContentSequence", []))
walk(ds.ContentSequence)
"""
NEW_REPORT = PRELUDE + """
from radpair.listener.reports import ReportRefused, parse_report
try:
    parse_report(data)
except ReportRefused as exc:
    print("refused:", exc, file=sys.stderr)
"""
# VmHWM, not ru_maxrss: the latter carries the parent's peak across fork + exec.
SUFFIX = ("\nhwm = [line for line in open('/proc/self/status') if line.startswith('VmHWM')][0].split()[1]"
          "\nprint(int(hwm) / 1024, time.perf_counter() - t)\n")


def _measure(script: str, path: Path) -> tuple[float, float, str]:
    done = subprocess.run([sys.executable, "-c", script + SUFFIX, str(path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=900, check=True)
    rss, seconds = (float(v) for v in done.stdout.split())
    return rss, seconds, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def test_hostile_instances_before_and_after(tmp_path: Path) -> None:
    bomb = deflate_bomb(tmp_path / "bomb.dcm")
    sr = sr_with_items(tmp_path / "sr.dcm", 100_000)
    figures = {"bomb_bytes": bomb.stat().st_size, "sr_bytes": sr.stat().st_size}
    for name, script, path in (("header_old", OLD_HEADER, bomb), ("header_new", NEW_HEADER, bomb),
                               ("report_old", OLD_REPORT, sr), ("report_new", NEW_REPORT, sr)):
        rss, seconds, note = _measure(script, path)
        figures[name] = {"peak_rss_mb": round(rss), "seconds": round(seconds, 2), "note": note}
    figures["bomb_rss_ratio_old_to_new"] = round(figures["header_old"]["peak_rss_mb"] / figures["header_new"]["peak_rss_mb"], 1)
    figures["sr_time_ratio_old_to_new"] = round(figures["report_old"]["seconds"] / max(figures["report_new"]["seconds"], 1e-3), 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "hostile.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    assert figures["header_new"]["note"].startswith("refused:")
