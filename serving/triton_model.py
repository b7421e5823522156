"""Triton Python-backend model (copied as ``<version>/model.py`` by the exporter).

It serves the version's TorchScript ``model.pt`` with the torch of the interpreter that runs the
stub (radpair's venv). Triton's dynamic batcher hands ``execute`` several requests at once; they
are concatenated into one batch so a single forward pass serves them all, then split back.
On a ``KIND_GPU`` instance the model runs on that instance's GPU.
"""

import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

OUTPUTS = ("probabilities", "lesion", "attention", "embedding")


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        threads = int(config.get("parameters", {}).get("torch_threads", {}).get("string_value", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        gpu = args["model_instance_kind"] == "GPU"
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")
        path = Path(args["model_repository"]) / args["model_version"] / "model.pt"
        self.model = torch.jit.load(str(path), map_location=self.device).eval()
        pb_utils.Logger.log_info(f"{args['model_name']} version {args['model_version']}: {path} on {self.device}, "
                                 f"{torch.get_num_threads()} torch threads")

    def execute(self, requests: list) -> list:
        volumes = [pb_utils.get_input_tensor_by_name(r, "volume").as_numpy() for r in requests]
        sizes = [v.shape[0] for v in volumes]
        batch = torch.from_numpy(np.concatenate(volumes)).to(self.device)
        with torch.inference_mode():
            outputs = [t.float().cpu().numpy() for t in self.model(batch)]
        responses = []
        start = 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, out[start:start + size]) for name, out in zip(OUTPUTS, outputs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
