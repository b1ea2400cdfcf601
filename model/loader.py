"""Load the model a worker serves, on the inference path its settings name.

``transformers``, ``torch`` and ``onnxruntime`` are imported inside the loaders,
never at module level, so importing ``tasks`` stays cheap.
"""
from __future__ import annotations

from pathlib import Path

from inferq.model.loaded import LoadedModel

OFFLINE_PREFIX = "offline:"
"""INFERQ_MODEL=offline:tiny or offline:base builds (once) and serves the offline model."""


def resolve(reference: str, cache_dir: str) -> str:
    """Turn INFERQ_MODEL into something from_pretrained accepts, building offline models on demand."""
    if reference.startswith(OFFLINE_PREFIX):
        from inferq.model.builder import build

        size = reference[len(OFFLINE_PREFIX):]
        return str(build(size, Path(cache_dir) / f"offline-{size}"))
    return reference


def load(reference: str, cache_dir: str, precision: str = "int8", torch_threads: int = 1) -> LoadedModel:
    """Load the model in this process, at the given precision, with that many threads.

    precision is ``fp32`` or ``int8`` (torch), or ``onnx-fp32`` or ``onnx-int8``
    (ONNX Runtime, exported from the same weights and cached under cache_dir).
    """
    source = resolve(reference, cache_dir)
    if precision.startswith("onnx-"):
        # ONNX Runtime needs neither torch nor transformers in the worker: it stays lean.
        from inferq.model.onnx_model import load_onnx

        return load_onnx(reference, source, cache_dir, precision == "onnx-int8", torch_threads)
    from inferq.model.torch_model import load_torch

    return load_torch(reference, source, precision, torch_threads)
