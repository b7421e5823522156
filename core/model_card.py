"""What a model version's card (``model_card.json``) tells its users: where its probabilities
become decisions, and how well it did when it was validated.

Written by training's exporter, read by the pipeline (the thresholds it applies, the figures it
states in every SR) and by retraining's gate; so it lives in ``core``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OperatingPoints:
    """Where a probability becomes a decision: "a lesion is found", "this voxel is in the overlay".

    Chosen on the internal out-of-fold predictions when the model is fine-tuned (never on an
    external cohort) and applied unchanged wherever the model runs."""

    lesion_threshold: float = 0.5
    attention_threshold: float = 0.5
    # How the overlay is made from the attention (core.preprocess.OVERLAY_RULES); the threshold
    # above was chosen for it. Cards written before it existed mean the attention alone.
    overlay: str = "attention"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "OperatingPoints":
        data = data or {}
        thresholds = {k: float(v) for k, v in data.items() if k in ("lesion_threshold", "attention_threshold")}
        return cls(**thresholds, overlay=str(data.get("overlay") or "attention"))

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> "OperatingPoints":
        return cls.from_dict((card.get("metrics") or {}).get("operating_points"))


# (metrics key, label) of the figures an SR states, in this order; a summary is {"mean", "std", ...}.
_FIGURES = (("auc", "class AUC"), ("lesion_auc", "lesion AUC"), ("sensitivity", "lesion sensitivity"),
            ("specificity", "lesion specificity"), ("dice_2d", "overlay 2D Dice"))


def validation_figures(card: dict[str, Any]) -> list[str]:
    """One line per validation set of the card (internal folds, external cohort, held-out set),
    e.g. ``"internal (5 folds): class AUC 0.91 ± 0.03; lesion AUC 0.98 ± 0.01; ..."``."""
    metrics = card.get("metrics") or {}
    lines = []
    for key, label in (("internal", "internal cross-validation"), ("external", "external cohort")):
        summary = metrics.get(key)
        if not isinstance(summary, dict):
            continue
        parts = []
        for name, text in _FIGURES:
            value = summary.get(name)
            if isinstance(value, dict) and value.get("mean") is not None:
                std = value.get("std")
                parts.append(f"{text} {value['mean']:.2f}" + (f" ± {std:.2f}" if std is not None else ""))
        if parts:
            lines.append(f"{label}: " + "; ".join(parts))
    held_out = metrics.get("held_out") or {}
    parts = [f"{text} {held_out[name]:.2f}" for name, text in _FIGURES if isinstance(held_out.get(name), (int, float))]
    if parts:
        lines.append(f"retraining held-out set (n={held_out.get('n', '?')}): " + "; ".join(parts))
    return lines
