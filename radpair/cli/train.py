"""``radpair train pretrain|finetune`` and ``radpair evaluate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from radpair.cli.options import add_settings_options, add_task_option, settings_from_args

if TYPE_CHECKING:
    from radpair.core.task import TaskDefinition
    from radpair.training.data import PairedStudy


def _source_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cohort", type=Path, metavar="DIR", help="a cohort folder written by `radpair cohort`")
    source.add_argument("--archive", action="store_true", help="radpair's archive (image + report pairs, SQL)")
    add_settings_options(parser)
    add_task_option(parser)
    parser.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")


def _training_options(parser: argparse.ArgumentParser) -> None:
    _source_options(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="RUN", help="run directory")
    parser.add_argument("--train-config", metavar="FILE", help="training configuration (TOML or JSON); defaults otherwise")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training config key, e.g. --set pretrain.epochs=10 (repeatable)")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="contrastive pre-training and classifier fine-tuning")
    steps = train.add_subparsers(dest="step", required=True, metavar="STEP")
    pre = steps.add_parser("pretrain", help="image–report contrastive pre-training (torchrun for several GPUs)")
    _training_options(pre)
    pre.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    pre.set_defaults(func=_pretrain)
    fine = steps.add_parser("finetune", help="k-fold fine-tuning of the classifier + evaluation")
    _training_options(fine)
    fine.add_argument("--init", default="random", metavar="random|RUN|FILE",
                      help="random, a pre-training run directory, or an image-encoder checkpoint file")
    fine.add_argument("--external", type=Path, metavar="DIR", help="external cohort folder to evaluate every fold on")
    fine.set_defaults(func=_finetune)

    ev = subparsers.add_parser("evaluate", help="score a fine-tuning run or an exported model version on a labelled cohort")
    _source_options(ev)
    ev.add_argument("--run", type=Path, required=True, metavar="RUN|VERSION",
                    help="fine-tuning run directory, or an exported version folder (e.g. triton_models/radpair_classifier/1)")
    ev.add_argument("--out", type=Path, metavar="DIR",
                    help="where evaluation.json and plots go (default RUN/evaluation, or ./evaluation for a version)")
    ev.set_defaults(func=_evaluate)


def _task_and_studies(args: argparse.Namespace, link_dir: Path) -> tuple[TaskDefinition, list[PairedStudy]]:
    from radpair.core.task import load_task
    from radpair.training.data import studies_from_archive, studies_from_cohort

    settings = settings_from_args(args)
    task = load_task(settings.task)
    if args.cohort:
        return task, studies_from_cohort(args.cohort, task)
    return task, studies_from_archive(settings.database_url, settings.store_dir, link_dir, task)


def _pretrain(args: argparse.Namespace) -> int:
    from radpair.training.config import load_config
    from radpair.training.pretrain import pretrain

    config = load_config(args.train_config, args.set)
    task, studies = _task_and_studies(args, args.out / "series")
    metrics = pretrain(config, task, studies, args.out, resume=args.resume, device=args.device)
    last = metrics["epochs"][-1] if metrics["epochs"] else {}
    print(json.dumps({"run": str(args.out), "epochs": len(metrics["epochs"]), "loss": last.get("loss_total")}))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from radpair.training.config import load_config
    from radpair.training.data import studies_from_cohort
    from radpair.training.finetune import finetune

    config = load_config(args.train_config, args.set)
    task, studies = _task_and_studies(args, args.out / "series")
    external = studies_from_cohort(args.external, task) if args.external else []
    metrics = finetune(config, task, studies, args.out, init=args.init, external=external, device=args.device)
    print(json.dumps({"run": str(args.out), "internal": {k: v["mean"] for k, v in metrics["internal"].items()},
                      "external": {k: v["mean"] for k, v in (metrics["external"] or {}).items()}}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from radpair.training.evaluate import evaluate_run

    version = (args.run / "model_card.json").is_file()
    out = args.out or (Path("evaluation") if version else args.run / "evaluation")
    _, studies = _task_and_studies(args, out / "series")
    result = evaluate_run(args.run, studies, out, args.device)
    print(json.dumps(result))
    return 0
