"""The pipeline's view of a model: the version Triton serves now, its preprocessing and classes.

Inference must preprocess exactly as the serving version was trained, so the gateway reads that
version's ``preprocess.json`` and ``model_card.json`` (class names, operating points, validation
figures) before every job (they are
small; a hot-deployed version is picked up at once). An unreachable server or a model that is not
ready is a ``ConnectionError`` (:class:`TritonUnavailable`): the job waits, it does not fail.
"""

from __future__ import annotations

import threading

from radpair.core.gateway import ServingModel
from radpair.core.model_card import OperatingPoints, validation_figures
from radpair.core.preprocess import PreprocessParams
from radpair.core.settings import Settings
from radpair.serving.client import TritonClient, TritonUnavailable, client_from_settings, serving_version_files


class TritonGateway:
    """:class:`radpair.core.gateway.ModelGateway` on Triton, one client per model name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[str, TritonClient] = {}
        self._lock = threading.Lock()

    def _client(self, model_name: str) -> TritonClient:
        with self._lock:
            if model_name not in self._clients:
                self._clients[model_name] = client_from_settings(self.settings, model_name)
            return self._clients[model_name]

    def serving(self, model_name: str) -> ServingModel:
        client = self._client(model_name)
        if not client.ready():
            raise TritonUnavailable(f"Triton model {model_name!r} is not ready at {client.url}")
        version, preprocess, card = serving_version_files(client)
        return ServingModel(
            name=model_name,
            version=version,
            params=PreprocessParams.from_dict(preprocess),
            class_names=tuple(card["class_names"]),
            infer=client.infer,
            operating=OperatingPoints.from_card(card),
            validation=tuple(validation_figures(card)),
        )
