"""Export a loaded transformers classifier to ONNX (and int8), cached on disk.

ONNX Runtime is one of the inference paths a worker can pick
(``INFERQ_PRECISION=onnx-fp32`` or ``onnx-int8``). The export needs only the
model already loaded through ``from_pretrained``: no hub, no optimum. It is
done once per model and precision and reused by every worker after.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OPSET = 17
"""ONNX opset of the export: supported by every ONNX Runtime since 1.13."""

FORMAT_VERSION = 1
"""Bump when the export changes, so old cached exports are not reused."""


def cache_key(source: str, quantized: bool) -> str:
    """Name a cached export after what it was built from (model files, precision, format)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([os.path.abspath(source) if os.path.isdir(source) else source,
                              quantized, FORMAT_VERSION, OPSET]).encode())
    config = Path(source) / "config.json"
    weights = [p for p in Path(source).glob("*.safetensors")] if os.path.isdir(source) else []
    for path in [config, *sorted(weights)]:
        if path.exists():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _export(model: Any, tokenizer: Any, path: Path) -> None:
    import torch

    sample = tokenizer(["a sample text to trace the graph"], return_tensors="pt")
    model.config.return_dict = False  # a plain tuple output traces into one named output
    try:
        with torch.inference_mode():
            # The TorchScript exporter (dynamo=False) needs neither onnxscript nor a network.
            torch.onnx.export(
                model, (sample["input_ids"], sample["attention_mask"]), str(path),
                input_names=["input_ids", "attention_mask"], output_names=["logits"],
                dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                              "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
                opset_version=OPSET, dynamo=False,
            )
    finally:
        model.config.return_dict = True


def _location(source: str, cache_dir: str, quantized: bool) -> Path:
    return Path(cache_dir or tempfile.gettempdir()) / "onnx" / cache_key(source, quantized)


def cached(source: str, cache_dir: str, quantized: bool) -> Path | None:
    """The cached export of this model and precision, or None if there is none yet."""
    target = _location(source, cache_dir, quantized) / "model.onnx"
    return target if target.exists() else None


def export(model: Any, tokenizer: Any, source: str, cache_dir: str, quantized: bool) -> Path:
    """Return the path of the ONNX file for this model, exporting (atomically) if not cached."""
    out = _location(source, cache_dir, quantized)
    root = out.parent
    target = out / "model.onnx"
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    # Export beside the target and rename: workers starting together never read half a file.
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=root))
    try:
        _export(model, tokenizer, tmp / "fp32.onnx")
        if quantized:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Dynamic quantization: int8 weights, activations quantized per call,
            # the same scheme as torch's quantize_dynamic.
            quantize_dynamic(str(tmp / "fp32.onnx"), str(tmp / "model.onnx"), weight_type=QuantType.QInt8)
            (tmp / "fp32.onnx").unlink()
        else:
            (tmp / "fp32.onnx").rename(tmp / "model.onnx")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, out)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s to ONNX (%s) at %s", source, "int8" if quantized else "fp32", target)
    return target
