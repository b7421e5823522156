"""``radpair send PATH... --to HOST:PORT --ae-title AET``: C-STORE files and folders to a peer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from radpair.core.scu import Peer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "send", help="C-STORE DICOM files/folders to a peer",
        description="Send DICOM files (folders are searched recursively; non-DICOM files found there "
                    "are skipped) to a DICOM peer, one association per study. Exit status 1 if any "
                    "instance failed, 2 if the peer could not be reached.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="DICOM files, or folders of them")
    parser.add_argument("--to", required=True, metavar="HOST:PORT", help="the peer's address")
    parser.add_argument("--ae-title", required=True, metavar="AET", help="the peer's (called) AE title")
    parser.add_argument("--calling-ae-title", default="RADPAIR", metavar="AET", help="our AE title (default RADPAIR)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per network step (default 30)")
    parser.set_defaults(func=run)


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def collect(paths: list[Path]) -> tuple[list[Path], int]:
    """Files named on the command line, and DICOM files under named folders, sorted; also the
    number of non-DICOM files skipped in those folders (manifests, masks, ...)."""
    files, skipped = [], 0
    for path in paths:
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                if _is_dicom(found):
                    files.append(found)
                else:
                    skipped += 1
        else:
            files.append(path)
    return files, skipped


def _peer(args: argparse.Namespace) -> Peer:
    from radpair.core.scu import Peer

    host, _, port = args.to.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"radpair send: --to must be HOST:PORT, not {args.to!r}")
    return Peer(host=host, port=int(port), called_aet=args.ae_title, calling_aet=args.calling_ae_title, timeout=args.timeout)


def run(args: argparse.Namespace) -> int:
    from radpair.core.scu import PeerUnavailable, store_files

    peer = _peer(args)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise SystemExit(f"radpair send: no such file or folder: {', '.join(missing)}")
    files, skipped = collect(args.paths)
    try:
        outcomes = store_files(files, peer)
    except PeerUnavailable as exc:
        print(f"radpair send: {exc}", file=sys.stderr)
        return 2
    failed = [o for o in outcomes if not o.ok]
    for outcome in failed:
        print(f"FAILED {outcome.path or outcome.sop_instance_uid}: {outcome.error}", file=sys.stderr)
    print(f"sent {len(outcomes) - len(failed)}/{len(outcomes)} instances to {peer}"
          + (f" ({len(failed)} failed)" if failed else "") + (f"; skipped {skipped} non-DICOM files" if skipped else ""))
    return 1 if failed else 0
