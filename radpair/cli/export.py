"""``radpair export RUN_DIR``: a fine-tuning run into the Triton model repository (see training.export)."""

from __future__ import annotations

import argparse

from radpair.cli.options import add_settings_options, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a fine-tuning run as the next Triton model version")
    p.add_argument("run_dir", metavar="RUN_DIR", help="fine-tuning run directory (classifier.pt, model_config.json, ...)")
    p.add_argument("--name", help="Triton model name (default: the task's model)")
    p.add_argument("--repo", metavar="DIR", help="model repository (default: the served one, triton.model_repository "
                                                 "or <data_dir>/models)")
    p.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance group: KIND_CPU or KIND_GPU")
    p.add_argument("--max-batch-size", type=int, default=8, help="Triton max_batch_size (dynamic batching)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare TorchScript with eager on a random batch (max abs diff < 1e-4)")
    add_settings_options(p)
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from radpair.core.task import load_task
    from radpair.serving.repository import served_repository
    from radpair.training.export import export_run

    settings = settings_from_args(args)
    repo = args.repo or served_repository(settings).root
    exported = export_run(args.run_dir, repo, args.name or load_task(settings.task).model, args.kind,
                          args.max_batch_size, args.check)
    parity = "not checked" if exported.parity_max_abs_diff is None else f"parity max abs diff {exported.parity_max_abs_diff:.2e}"
    print(f"{exported.name} version {exported.version} written to {exported.path} ({parity})")
    return 0
