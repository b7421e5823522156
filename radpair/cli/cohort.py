"""``radpair cohort``: write a synthetic cohort folder (and optionally a preview picture)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from radpair.cli.options import add_settings_options, add_task_option, task_from_args
from radpair.training.cohort import DEFAULT_SIZE
from radpair.training.cohort.shifts import SHIFT_NAMES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cohort", help="write a synthetic paired MR + report cohort",
        description="Write N synthetic studies (MR series, SR report, lesion mask) to a new folder, "
                    "deterministically for the seed.")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="new (or empty) output folder")
    parser.add_argument("--n", type=int, default=100, help="number of studies (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--shift", default="none", metavar="NAME[,NAME]",
                        help=f"acquisition/report shift(s), comma-separated: {', '.join(SHIFT_NAMES)}")
    parser.add_argument("--size", type=int, nargs=3, default=DEFAULT_SIZE, metavar=("D", "H", "W"),
                        help="slices, rows, columns (default 64 64 64)")
    parser.add_argument("--lesion-free-fraction", type=float, default=0.1, metavar="F",
                        help="fraction of studies without a lesion (default 0.1)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default 2)")
    parser.add_argument("--preview", type=Path, metavar="PNG", help="also write a picture of a few studies' slices and masks")
    add_task_option(parser)
    add_settings_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radpair.training.cohort.generate import CohortSpec, generate_cohort
    from radpair.training.cohort.shifts import resolve_shift

    if args.n < 1 or min(args.size) < 8 or not 0.0 <= args.lesion_free_fraction < 1.0:
        raise SystemExit("radpair cohort: need --n >= 1, every --size >= 8 and 0 <= --lesion-free-fraction < 1")
    try:
        shift = resolve_shift(args.shift)
    except ValueError as exc:
        raise SystemExit(f"radpair cohort: {exc}") from exc
    spec = CohortSpec(out=args.out, n=args.n, seed=args.seed, shift=shift, task=task_from_args(args),
                      size=tuple(args.size), lesion_free_fraction=args.lesion_free_fraction)
    try:
        manifest = generate_cohort(spec, workers=args.workers)
    except FileExistsError as exc:
        raise SystemExit(f"radpair cohort: {exc}") from exc
    print(f"{args.out}: {manifest['counts']['studies']} studies, labels {manifest['counts']['label']}, "
          f"locations {manifest['counts']['location']}")
    if args.preview:
        from radpair.training.cohort.preview import write_preview

        print(f"preview: {write_preview(args.out, args.preview)}")
    return 0
