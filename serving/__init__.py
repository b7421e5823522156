"""NVIDIA Triton: the managed server, the client, the model-repository format, the Python model.

Implements the pipeline's model gateway (:class:`radpair.core.gateway.ModelGateway`); imports
only :mod:`radpair.core`.
"""
