"""Export a transformers classifier to ONNX (fp32 or int8), with its tokenizer and config, cached on disk.

ONNX Runtime is one of the inference paths a worker can pick
(``INFERQ_PRECISION=onnx-fp32`` or ``onnx-int8``). The export loads the model
through ``from_pretrained`` (no optimum, no network beyond what loading needs)
and writes ``model.onnx``, ``config.json`` and the tokenizer into one
directory, once per model and precision. It runs in a child process
(``python -m inferq.model.onnx_export``), so the worker that asked for it never
imports torch or transformers: that keeps its memory small.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

OPSET = 17
"""ONNX opset of the export: supported by every ONNX Runtime since 1.13."""

FORMAT_VERSION = 2
"""Bump when the export changes, so old cached exports are not reused."""

EXPORT_TIMEOUT = 1800
"""Seconds an export may take (a base model takes about ten here)."""


def cache_key(source: str, quantized: bool) -> str:
    """Name a cached export after what it was built from (model files, precision, format)."""
    digest = hashlib.sha256()
    local = os.path.isdir(source)
    digest.update(json.dumps([os.path.abspath(source) if local else source,
                              quantized, FORMAT_VERSION, OPSET]).encode())
    if local:
        for path in sorted(Path(source).glob("*.json")) + sorted(Path(source).glob("*.safetensors")):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _roots(cache_dir: str) -> list[Path]:
    # The model cache first; a temporary directory when that cannot be written
    # (a container whose install directory belongs to root, say).
    return [Path(cache_dir or tempfile.gettempdir()) / "onnx", Path(tempfile.gettempdir()) / "inferq-onnx"]


def _writable(root: Path) -> bool:
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    return existing is not None and os.access(existing, os.W_OK)


def location(source: str, cache_dir: str, quantized: bool) -> Path:
    """Where a new export of this model and precision goes: the first writable cache root."""
    root = next((r for r in _roots(cache_dir) if _writable(r)), _roots(cache_dir)[-1])
    return root / cache_key(source, quantized)


def cached(source: str, cache_dir: str, quantized: bool) -> Path | None:
    """The cached model.onnx of this model and precision, or None if there is none yet."""
    for root in _roots(cache_dir):
        target = root / cache_key(source, quantized) / "model.onnx"
        if target.exists():
            return target
    return None


def export_in_child(source: str, cache_dir: str, quantized: bool) -> Path:
    """Export in a child process (torch and transformers stay out of this one); return model.onnx."""
    command = [sys.executable, "-m", "inferq.model.onnx_export", source, cache_dir or "",
               *(["--int8"] if quantized else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=EXPORT_TIMEOUT)
    path = cached(source, cache_dir, quantized)
    if done.returncode != 0 or path is None:
        raise RuntimeError(f"ONNX export of {source} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return path


def _export_graph(model, tokenizer, path: Path) -> None:
    import torch

    sample = tokenizer(["a sample text to trace the graph"], return_tensors="pt")
    model.config.return_dict = False  # a plain tuple output traces into one named output
    with torch.inference_mode():
        # The TorchScript exporter (dynamo=False) needs neither onnxscript nor a network.
        torch.onnx.export(
            model, (sample["input_ids"], sample["attention_mask"]), str(path),
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                          "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )
    model.config.return_dict = True


def export(source: str, cache_dir: str, quantized: bool) -> Path:
    """Export (atomically: beside the target, then renamed) unless cached; return model.onnx."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    done = cached(source, cache_dir, quantized)
    if done is not None:
        return done
    out = location(source, cache_dir, quantized)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=out.parent))
    try:
        _export_graph(model, tokenizer, tmp / "fp32.onnx")
        if quantized:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Dynamic quantization: int8 weights, activations quantized per call,
            # the same scheme as torch's quantize_dynamic.
            quantize_dynamic(str(tmp / "fp32.onnx"), str(tmp / "model.onnx"), weight_type=QuantType.QInt8)
            (tmp / "fp32.onnx").unlink()
        else:
            (tmp / "fp32.onnx").rename(tmp / "model.onnx")
        tokenizer.save_pretrained(tmp)
        model.config.save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; containers may run as another user
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "model.onnx").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s to ONNX (%s) at %s", source, "int8" if quantized else "fp32", out)
    return out / "model.onnx"


def main(argv: list[str] | None = None) -> int:
    """python -m inferq.model.onnx_export SOURCE CACHE_DIR [--int8]"""
    parser = argparse.ArgumentParser(prog="python -m inferq.model.onnx_export")
    parser.add_argument("source")
    parser.add_argument("cache_dir")
    parser.add_argument("--int8", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(export(args.source, args.cache_dir, args.int8))
    return 0


if __name__ == "__main__":
    sys.exit(main())
