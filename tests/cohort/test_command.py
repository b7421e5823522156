"""The ``radpair cohort`` command line, in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radpair.cli import main
from radpair.training.cohort import read_cohort


def test_radpair_cohort_writes_a_folder_and_a_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "c", tmp_path / "preview.png"
    args = ["cohort", "--out", str(out), "--n", "3", "--seed", "4", "--size", "16", "24", "24", "--workers", "1",
            "--lesion-free-fraction", "0", "--shift", "report-style", "--preview", str(png)]
    assert main(args) == 0
    assert "3 studies" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["n"], manifest["size"], manifest["shift"]["report_style"]) == (3, [16, 24, 24], "narrative")
    assert all(s.has_lesion for s in read_cohort(out))
    with pytest.raises(SystemExit, match="not empty"):
        main(args)
    with pytest.raises(SystemExit, match="unknown shift 'scanner-b'"):
        main(["cohort", "--out", str(tmp_path / "d"), "--shift", "scanner-b"])
