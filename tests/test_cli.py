"""The command line as a user meets it: help on every option, global options on either side of the
command, a quick `status` without side effects, `init`, one clear line for a port in use, and the
log setup (no patient identifiers unless asked, JSON lines, library warnings filtered)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from radpair.cli import build_parser
from radpair.cli.options import command_parsers
from radpair.core.config import ConfigError
from radpair.core.settings import load_settings
from radpair.core.uids import InvalidUID, validate_root, validate_uid

RADPAIR = [sys.executable, "-m", "radpair"]
HEAVY = ("torch", "monai", "transformers", "highdicom", "tritonclient", "pynetdicom")


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RADPAIR, *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_every_option_of_every_command_has_help() -> None:
    parser = build_parser()
    missing = []
    for p in [parser, *command_parsers(parser)]:
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{p.prog} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


@pytest.mark.parametrize("argv", [
    ["-v", "--data-dir", "D", "--config", "C", "status"],
    ["status", "-v", "--data-dir", "D", "--config", "C"],
    ["--data-dir", "D", "status", "--config", "C", "-v"],
])
def test_global_options_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.data_dir, args.config) == (True, "D", "C")


def test_one_spelling_for_ae_titles() -> None:
    spellings = {flag for p in command_parsers(build_parser()) for a in p._actions for flag in a.option_strings
                 if "aet" in flag.lower() or "ae-title" in flag.lower()}
    assert spellings <= {"--ae-title", "--calling-ae-title"}, spellings


def _imported_after(args: list[str]) -> tuple[int, list[str]]:
    code = (f"import sys; from radpair.cli import main; rc = main({args!r}); "
            f"print(repr((rc, sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return eval(out.stdout.strip().splitlines()[-1])


def test_status_on_a_missing_archive_says_so_and_creates_nothing(tmp_path: Path) -> None:
    where = tmp_path / "nothing-here"
    rc, heavy = _imported_after(["status", "--data-dir", str(where)])
    assert rc == 1 and heavy == []
    assert not where.exists()


def test_status_reads_an_archive_without_the_heavy_libraries(tmp_path: Path) -> None:
    assert run("db", "upgrade", "--data-dir", str(tmp_path)).returncode == 0
    rc, heavy = _imported_after(["status", "--data-dir", str(tmp_path)])
    assert rc == 0 and heavy == []
    out = run("status", "--data-dir", str(tmp_path))
    assert "pipeline jobs" in out.stdout and "latest result per study" in out.stdout and "retrain next run" in out.stdout
    assert "alembic" not in out.stderr and "Context impl" not in out.stderr


def test_init_writes_settings_that_load_and_keeps_an_existing_file(tmp_path: Path) -> None:
    site = tmp_path / "site"
    out = run("init", str(site))
    assert out.returncode == 0, out.stderr
    settings_file = site / "radpair.toml"
    assert tomllib.loads(settings_file.read_text())["data_dir"] == str(site / "data")
    assert load_settings(settings_file).data_dir == site / "data" and (site / "data").is_dir()
    settings_file.write_text(settings_file.read_text() + "\n# edited\n")
    again = run("init", str(site))
    assert again.returncode == 1 and "exists" in again.stderr and "# edited" in settings_file.read_text()


def test_listener_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run("serve", "--data-dir", str(tmp_path), "--port", str(port),
                  env={**os.environ, "RADPAIR_TRITON_MODE": "off"})
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    (line,) = [line for line in out.stderr.splitlines() if str(port) in line]
    assert "in use" in line


def _log_lines(tmp_path: Path, settings_toml: str) -> list[str]:
    """Log one line with a patient identifier and raise a library-style warning in a fresh radpair
    process set up as the command line does."""
    config = tmp_path / "radpair.toml"
    config.write_text(settings_toml)
    code = f"""
import logging, warnings
from radpair.cli.logs import configure_logging
from radpair.core.settings import load_settings
s = load_settings({str(config)!r})
configure_logging(False, s.logging, s.log_level)
logging.getLogger("radpair.listener.archive").info("study %s: receiving (new)", "1.2.3",
    extra={{"patient_id": "PAT-0042", "accession_number": "ACC-77"}})
warnings.warn("some internal detail", FutureWarning)
"""
    # Without PYTHONWARNINGS: an in-process command earlier in this test session may have set it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         env=env)
    return out.stderr.splitlines()


def test_logs_hold_no_patient_identifiers_by_default(tmp_path: Path) -> None:
    lines = _log_lines(tmp_path, "")
    assert any("study 1.2.3: receiving (new)" in line for line in lines), lines
    assert not any("PAT-0042" in line or "ACC-77" in line for line in lines), lines
    assert not any("internal detail" in line for line in lines), "library warnings are filtered by default"


def test_logs_as_json_lines_with_identifiers_when_asked(tmp_path: Path) -> None:
    lines = _log_lines(tmp_path, '[logging]\nformat = "json"\npatient_identifiers = true\nlibrary_warnings = true\n')
    entries = [json.loads(line) for line in lines]
    (entry,) = [e for e in entries if e["logger"] == "radpair.listener.archive"]
    assert entry["message"] == "study 1.2.3: receiving (new)" and entry["args"] == ["1.2.3"]
    assert (entry["patient_id"], entry["accession_number"]) == ("PAT-0042", "ACC-77")
    assert any("internal detail" in e["message"] for e in entries), "library_warnings = true shows them"


@pytest.mark.parametrize("uid", ["1.02.3", "1..2", ".1.2", "1.2.", "", "1.2.a", "1" * 65, "01"])
def test_uid_validator_rejects_what_the_standard_rejects(uid: str) -> None:
    with pytest.raises(InvalidUID):
        validate_uid(uid)


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.1", "0.1", "2.25.0", "1." + "2" * 62])
def test_uid_validator_accepts_valid_uids(uid: str) -> None:
    assert validate_uid(uid) == uid


def test_uid_root_is_validated_as_a_setting() -> None:
    assert validate_root("1.2.826.0.1.3680043.10.1234") == "1.2.826.0.1.3680043.10.1234"
    for bad in ("1.2.03", "1." + "2" * 50):
        with pytest.raises(ConfigError, match="dicom.uid_root"):
            load_settings(None, overrides={"dicom.uid_root": bad})
