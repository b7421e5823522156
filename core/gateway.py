"""The seam between the pipeline and a model server: what the pipeline asks, what it gets back.

The pipeline holds a :class:`ModelGateway` and never knows it is Triton
(:class:`radpair.serving.gateway.TritonGateway` implements it; the composition root in
``radpair serve`` hands it over), so pipeline and serving both depend on this, not on each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from radpair.core.model_card import OperatingPoints
from radpair.core.preprocess import PreprocessParams


@dataclass(frozen=True)
class ServingModel:
    """The version the model server serves now, with what it needs: its preprocessing, classes,
    operating points and validation figures (from its model card).

    ``infer`` takes a float32 ``[B, 1, D, H, W]`` batch and returns an object with
    ``probabilities`` ``[B, C]``, ``lesion`` ``[B, 1]``, ``attention`` ``[B, D, H, W]`` and
    ``model_version``.
    """

    name: str
    version: str
    params: PreprocessParams
    class_names: tuple[str, ...]
    infer: Callable[[Any], Any]
    operating: OperatingPoints = OperatingPoints()
    # One line per validation set, stated in every SR (:func:`radpair.core.model_card.validation_figures`).
    validation: tuple[str, ...] = ()


class ModelGateway(Protocol):
    def serving(self, model_name: str) -> ServingModel:
        """Raise a ConnectionError when the model server is unreachable or the model not ready."""
        ...
