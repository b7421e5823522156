"""A small typed client for one Triton model, over HTTP or gRPC (``tritonclient``).

The model's inputs, outputs, batch limit and served versions are read from the server, not
assumed: the same client works with the Python-backend variant (outputs ``probabilities``,
``lesion``, ``attention``, ``embedding``) and the libtorch variant (``probabilities__0``, ...). Transient
failures — connection refused, 503 / UNAVAILABLE, a model between versions — are retried with
exponential backoff; when retries run out :class:`TritonUnavailable` (a ``ConnectionError``) tells
the caller to wait, not to fail the work. ``tritonclient``'s HTTP client is not thread-safe, so
each thread gets its own connection.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from radpair.core.settings import Settings
from radpair.core.task import load_task
from radpair.serving.repository import OUTPUT_NAMES, ModelRepository, served_repository

log = logging.getLogger(__name__)

Protocol = Literal["http", "grpc"]
T = TypeVar("T")

_TRANSIENT_STATUS = {"502", "503", "504", "StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"}
_TRANSIENT_TEXT = re.compile(r"unavailable|has no available versions|is not (found|ready)|unknown model|connection", re.I)


class TritonUnavailable(ConnectionError):
    """Triton (or the model) could not be reached or was not ready, after retries."""


class TritonInferenceError(RuntimeError):
    """Triton answered with a non-transient error (bad input, model failure)."""


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    max_batch_size: int
    input_name: str
    input_shape: tuple[int, ...]
    # Canonical output name -> the name the server uses for it.
    outputs: dict[str, str]


@dataclass(frozen=True)
class InferenceResult:
    probabilities: np.ndarray  # [B, C]
    lesion: np.ndarray  # [B, 1]
    attention: np.ndarray  # [B, D, H, W]
    embedding: np.ndarray  # [B, E]
    model_version: str


def _is_transient(exc: BaseException, by_message: bool) -> bool:
    """Connection failures and 503/UNAVAILABLE always; with ``by_message``, a model between versions too."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    if isinstance(exc, InferenceServerException):
        if str(exc.status()) in _TRANSIENT_STATUS:
            return True
        return by_message and bool(_TRANSIENT_TEXT.search(exc.message() or ""))
    return False


class TritonClient:
    """One model on one Triton server (contract 5)."""

    def __init__(self, url: str, repository: Path | str, protocol: Protocol = "http",
                 model_name: str = "radpair_classifier", timeout: float = 30.0, retries: int = 3,
                 retry_backoff: float = 0.5) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        self.url = url.removeprefix("http://").removeprefix("grpc://")
        self.protocol = protocol
        self.model_name = model_name
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        # The model repository the server reads, when this machine can read it too (embedded
        # server, or a shared volume): where the versions' preprocess.json and model cards are.
        self.repository = ModelRepository(Path(repository))
        self._local = threading.local()
        # Inputs/outputs/batch limit for infer: read once (one Triton model has one signature;
        # versions change, the signature does not). metadata() always asks the server.
        self._signature: ModelMetadata | None = None

    @property
    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "http":
                client = httpclient.InferenceServerClient(self.url, connection_timeout=self.timeout,
                                                          network_timeout=self.timeout)
            else:
                client = grpcclient.InferenceServerClient(self.url)
            self._local.client = client
        return client

    def _call(self, what: str, fn: Callable[[Any], T], by_message: bool = True) -> T:
        """``fn(client)`` with retries on transient errors (exponential backoff).

        ``by_message=False`` for load/unload: their errors name unavailable versions for good.
        """
        for attempt in range(self.retries + 1):
            try:
                return fn(self._client)
            except Exception as exc:  # noqa: BLE001 - classified right below
                if not _is_transient(exc, by_message):
                    if isinstance(exc, InferenceServerException):
                        raise TritonInferenceError(f"{what} on {self.model_name!r}: {exc}") from exc
                    raise
                if attempt == self.retries:
                    raise TritonUnavailable(f"{what} on {self.model_name!r} at {self.url} failed "
                                            f"after {self.retries + 1} attempts: {exc}") from exc
                delay = self.retry_backoff * 2**attempt
                log.debug("%s: transient error (%s); retrying in %.2f s", what, exc, delay)
                self._local.client = None
                time.sleep(delay)
        raise AssertionError("unreachable")

    def ready(self) -> bool:
        """Server live and this model ready to serve (False rather than raising when unreachable)."""
        try:
            client = self._client
            return bool(client.is_server_ready() and client.is_model_ready(self.model_name))
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.debug("Triton at %s not ready: %s", self.url, exc)
            self._local.client = None
            return False

    def metadata(self) -> ModelMetadata:
        """Inputs, outputs, batch limit and ready versions, as the server reports them now."""
        def read(client: Any) -> tuple[dict, dict]:
            if self.protocol == "http":
                return client.get_model_metadata(self.model_name), client.get_model_config(self.model_name)
            meta = client.get_model_metadata(self.model_name, as_json=True)
            return meta, client.get_model_config(self.model_name, as_json=True)["config"]

        meta, config = self._call("metadata", read)
        (inp,) = meta["inputs"]
        outputs = {re.sub(r"__\d+$", "", o["name"]): o["name"] for o in meta["outputs"]}
        missing = set(OUTPUT_NAMES) - set(outputs)
        if missing:
            raise TritonInferenceError(f"model {self.model_name!r} lacks output(s) {sorted(missing)}")
        return ModelMetadata(
            name=meta["name"],
            versions=tuple(meta.get("versions", ())),
            platform=meta.get("platform", ""),
            max_batch_size=int(config.get("max_batch_size", 0)),
            input_name=inp["name"],
            input_shape=tuple(int(d) for d in inp["shape"]),
            outputs=outputs,
        )

    def serving_version(self) -> str:
        """The version that answers unversioned requests: the highest ready one."""
        versions = self.metadata().versions
        if not versions:
            raise TritonUnavailable(f"model {self.model_name!r} has no ready version")
        return max(versions, key=int)

    def infer(self, volume: np.ndarray) -> InferenceResult:
        """Run a float32 batch ``[B, 1, D, H, W]``; batches above the model's limit are split."""
        volume = np.ascontiguousarray(volume, dtype=np.float32)
        if self._signature is None:
            self._signature = self.metadata()
        meta = self._signature
        if volume.ndim != len(meta.input_shape) or volume.shape[1:] != meta.input_shape[1:]:
            raise ValueError(f"volume shape {volume.shape} does not fit the model input {meta.input_shape}")
        step = meta.max_batch_size or volume.shape[0]
        parts = [self._infer_chunk(meta, volume[i:i + step]) for i in range(0, volume.shape[0], step)]
        versions = sorted({p[1] for p in parts}, key=int)
        return InferenceResult(
            *(np.concatenate([p[0][name] for p in parts]) for name in OUTPUT_NAMES),
            # A hot swap between chunks of one call shows as e.g. "1+2".
            model_version="+".join(versions),
        )

    def _infer_chunk(self, meta: ModelMetadata, chunk: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
        lib = httpclient if self.protocol == "http" else grpcclient
        inp = lib.InferInput(meta.input_name, list(chunk.shape), "FP32")
        if self.protocol == "http":
            inp.set_data_from_numpy(chunk, binary_data=True)
            requested = [lib.InferRequestedOutput(n, binary_data=True) for n in meta.outputs.values()]
            kwargs: dict[str, Any] = {}
        else:
            inp.set_data_from_numpy(chunk)
            requested = [lib.InferRequestedOutput(n) for n in meta.outputs.values()]
            kwargs = {"client_timeout": self.timeout}

        def run(client: Any) -> tuple[dict[str, np.ndarray], str]:
            result = client.infer(self.model_name, [inp], outputs=requested, **kwargs)
            response = result.get_response()
            version = response["model_version"] if isinstance(response, dict) else response.model_version
            return {name: result.as_numpy(served) for name, served in meta.outputs.items()}, str(version)

        return self._call("infer", run)

    def statistics(self) -> dict[str, Any]:
        """Triton's inference statistics for this model (per version: inference vs execution counts)."""
        def read(client: Any) -> dict[str, Any]:
            if self.protocol == "http":
                return client.get_inference_statistics(self.model_name)
            return client.get_inference_statistics(self.model_name, as_json=True)

        return self._call("statistics", read)

    def load(self) -> None:
        """Explicit (re)load: Triton reads config.pbtxt again and serves the old version until the new is ready."""
        self._call("load", lambda client: client.load_model(self.model_name), by_message=False)

    def unload(self) -> None:
        self._call("unload", lambda client: client.unload_model(self.model_name), by_message=False)

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None


def serving_version_files(client: TritonClient) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The served version with its ``preprocess.json`` and ``model_card.json`` (read from the repository)."""
    version = client.serving_version()
    files = client.repository.version(client.model_name, int(version))
    return version, files.preprocess(), files.card()


def client_from_settings(settings: Settings, model_name: str | None = None) -> TritonClient:
    """A client for ``settings.triton``: the remote URL or the embedded server; the model is the
    task's (``settings.task``) unless named."""
    t = settings.triton
    url = t.url or f"127.0.0.1:{t.grpc_port if t.protocol == 'grpc' else t.http_port}"
    return TritonClient(url, served_repository(settings).root, t.protocol, model_name or load_task(settings.task).model,
                        t.timeout, t.retries, t.retry_backoff)
