"""``radpair train pretrain|finetune`` and ``radpair evaluate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.settings import load_settings
from training.config import load_config
from training.data import PairedStudy, studies_from_archive, studies_from_cohort


def _source_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cohort", type=Path, metavar="DIR", help="a cohort folder written by `radpair cohort`")
    source.add_argument("--archive", action="store_true", help="radpair's archive (image + report pairs, SQL)")
    parser.add_argument("--settings", metavar="FILE", help="radpair settings TOML (with --archive)")
    parser.add_argument("--data-dir", metavar="DIR", help="radpair data directory (with --archive)")


def _training_options(parser: argparse.ArgumentParser) -> None:
    _source_options(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="RUN", help="run directory")
    parser.add_argument("--config", metavar="FILE", help="training config (TOML or JSON); defaults otherwise")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set pretrain.epochs=10 (repeatable)")
    parser.add_argument("--device", default="", help="cpu or cuda (default: cuda when available)")


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

    ev = subparsers.add_parser("evaluate", help="evaluate a fine-tuning run's classifier on a labelled cohort")
    _source_options(ev)
    ev.add_argument("--run", type=Path, required=True, metavar="RUN", help="fine-tuning run directory")
    ev.add_argument("--out", type=Path, metavar="DIR", help="where evaluation.json and plots go (default RUN/evaluation)")
    ev.add_argument("--threshold", type=float, default=0.5, help="attention binarisation threshold for Dice")
    ev.add_argument("--device", default="")
    ev.set_defaults(func=_evaluate)


def _studies(args: argparse.Namespace, link_dir: Path) -> list[PairedStudy]:
    if args.cohort:
        return studies_from_cohort(args.cohort)
    settings = load_settings(args.settings, overrides={"data_dir": args.data_dir})
    return studies_from_archive(settings.database_url, settings.store_dir, link_dir)


def _pretrain(args: argparse.Namespace) -> int:
    from training.pretrain import pretrain

    config = load_config(args.config, args.set)
    metrics = pretrain(config, _studies(args, args.out / "series"), args.out, resume=args.resume, device=args.device)
    last = metrics["epochs"][-1] if metrics["epochs"] else {}
    print(json.dumps({"run": str(args.out), "epochs": len(metrics["epochs"]), "loss": last.get("loss_total")}))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from training.finetune import finetune

    config = load_config(args.config, args.set)
    external = studies_from_cohort(args.external) if args.external else []
    metrics = finetune(config, _studies(args, args.out / "series"), args.out, init=args.init,
                       external=external, device=args.device)
    print(json.dumps({"run": str(args.out), "internal": {k: v["mean"] for k, v in metrics["internal"].items()},
                      "external": {k: v["mean"] for k, v in (metrics["external"] or {}).items()}}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_run

    out = args.out or args.run / "evaluation"
    result = evaluate_run(args.run, _studies(args, out / "series"), out, args.threshold, args.device)
    print(json.dumps(result))
    return 0
