"""Benchmark: which part of the ``external`` shift a model does not survive, and what a
no-learning overlay scores (issue #14, item 1).

The ``external`` cohort changes geometry, intensity curve, noise and scanner tags at once; this
writes one cohort per component (``external-geometry``, ``external-intensity``,
``external-noise``, ``external-tags`` — the last changes no pixel, so it is the in-distribution
control) plus the full shift, all from one seed, and scores every model on each with
:func:`~radpair.training.evaluate.evaluate_run`, the code behind ``radpair evaluate``. The peer
in the same run is a model-free overlay: the preprocessed image itself inside the brain mask,
through the pipeline's :func:`~radpair.core.preprocess.overlay_map`, its threshold chosen on the
first cohort (the control) and applied to the others, on the first model's grid.

Environment: RADPAIR_BENCH_RUNS (comma-separated fine-tuning run folders or exported versions;
default the shipped model), _WORKDIR (cohorts are kept and reused), _N [60], _SEED [9100],
_TASK (the task the cohorts are written for; default the shipped task). A re-run in the same
workdir reuses its cohorts and finished evaluations. Prints a table and
writes tests/bench/results/shift_components.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.support.bench import RESULTS_DIR
from tests.support.cohorts import make_cohort

COHORTS = ("external-tags", "external-geometry", "external-intensity", "external-noise", "external")
KEYS = ("auc", "lesion_auc", "sensitivity", "specificity", "dice_2d")


def brightness_overlay_dice(studies, params, threshold: float | None = None) -> tuple[float, float, float]:
    """(threshold, 2D Dice, 3D Dice) of the model-free overlay over the lesion studies; the
    threshold is the best one on these studies when none is given."""
    from radpair.core.preprocess import brain_mask, overlay_map
    from radpair.training.data import volume_dataset
    from radpair.training.explain import THRESHOLDS, dice_curve

    lesions = [s for s in studies if s.lesion == 1 and s.mask_path is not None]
    pairs = []
    for item in volume_dataset(lesions, params, with_masks=True, cache=False):
        image = item["image"][0].numpy()
        pairs.append((overlay_map(image, brain_mask(image, params.spacing)), item["mask"][0].numpy()))
    curve = dice_curve(pairs)
    k = int(np.nanargmax(curve[:, 0])) if threshold is None else list(THRESHOLDS).index(threshold)
    return float(THRESHOLDS[k]), float(curve[k, 0]), float(curve[k, 1])


@pytest.mark.timeout(4 * 3600)  # five cohorts x every model: longer than the suite's 900 s per test
def test_shift_components(tmp_path):
    from radpair.core.task import load_task
    from radpair.training.data import studies_from_cohort
    from radpair.training.evaluate import evaluate_run, load_for_evaluation

    work = Path(os.environ.get("RADPAIR_BENCH_WORKDIR", tmp_path))
    n, seed = int(os.environ.get("RADPAIR_BENCH_N", 60)), int(os.environ.get("RADPAIR_BENCH_SEED", 9100))
    task = load_task(os.environ.get("RADPAIR_BENCH_TASK") or None)
    runs = [Path(r) for r in os.environ.get("RADPAIR_BENCH_RUNS", "triton_models/radpair_classifier/1").split(",")]
    params = load_for_evaluation(runs[0])[1]  # the model-free overlay on the first model's grid
    results: dict = {"n": n, "seed": seed, "cohorts": {}}
    threshold = None
    for name in COHORTS:
        folder = work / name
        if not (folder / "labels.csv").exists():
            make_cohort(folder, n, seed, name, (64, 64, 64), workers=max(1, (os.cpu_count() or 2) - 1), task=task)
        studies = studies_from_cohort(folder, task)
        threshold, dice_2d, dice_3d = brightness_overlay_dice(studies, params, threshold)
        row = {"lesion_free": sum(s.lesion == 0 for s in studies), "labelled": sum(s.label_index >= 0 for s in studies),
               "brightness_overlay": {"threshold": threshold, "dice_2d": dice_2d, "dice_3d": dice_3d}, "runs": {}}
        for run in runs:
            out = work / "evaluations" / f"{run.name}_{name}"
            done = out / "evaluation.json"  # a re-run in the same workdir reuses finished evaluations
            scored = json.loads(done.read_text()) if done.is_file() else evaluate_run(run, studies, out)
            row["runs"][str(run)] = {k: scored.get(k) for k in KEYS}
        results["cohorts"][name] = row

    lines = [f"{n} studies per cohort, seed {seed}; model-free overlay threshold {threshold} (chosen on external-tags)"]
    lines += ["| cohort | labelled / lesion-free | model | " + " | ".join(KEYS) + " | model-free overlay 2D Dice |",
              "|---" * (len(KEYS) + 4) + "|"]
    for name, row in results["cohorts"].items():
        for run, s in row["runs"].items():
            lines.append(f"| {name} | {row['labelled']} / {row['lesion_free']} | {run} | "
                         + " | ".join(f"{s[k]:.3f}" if s[k] is not None else "n/a" for k in KEYS)
                         + f" | {row['brightness_overlay']['dice_2d']:.3f} |")
    results["table"] = "\n".join(lines)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "shift_components.json").write_text(json.dumps(results, indent=2, default=str))
    print("\n" + results["table"])
    assert all(row["runs"] for row in results["cohorts"].values())
