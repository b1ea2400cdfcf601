"""Serve a model through ONNX Runtime, without importing torch or transformers.

The export (tasks.onnx_export) leaves model.onnx, config.json and the
tokenizer in one directory; this reads them with ``onnxruntime``,
``tokenizers`` and ``json`` alone, which keeps a worker's memory near the
model's own size.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from inferq.model.loaded import LoadedModel, ModelUnavailable, describe
from inferq.model.onnx_export import cached, export_in_child


def session_forward(path: str, threads: int) -> tuple[Any, Callable[[Any, Any], Any]]:
    """Open an ONNX Runtime session with `threads` threads; return it and its forward function."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Same rule as torch: a worker process uses its own threads, no more.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def forward(input_ids, attention_mask):
        return session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    return session, forward


def tokenizer_encode(directory: Path, max_length: int) -> tuple[Any, Callable[[list[str]], list[list[int]]], int]:
    """The saved fast tokenizer, as the transformers tokenizer would run it: truncated, unpadded."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    settings = json.loads((directory / "tokenizer_config.json").read_text())
    pad_id = tokenizer.token_to_id(settings.get("pad_token") or "[PAD]") or 0

    def encode(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tokenizer.encode_batch(texts)]

    return tokenizer, encode, pad_id


def exported(source: str) -> Path | None:
    """source's model.onnx when source is itself an export directory (the worker image ships only that)."""
    candidate = Path(source) / "model.onnx"
    return candidate if candidate.is_file() else None


def load_onnx(reference: str, source: str, cache_dir: str, quantized: bool, threads: int) -> LoadedModel:
    """Load the ONNX model of source: an export directory as it is, else its cached export (made first if needed)."""
    path = exported(source) or cached(source, cache_dir, quantized)
    if path is None:
        try:
            path = export_in_child(source, cache_dir, quantized)
        except RuntimeError as exc:
            raise ModelUnavailable(str(exc)) from exc
    directory = path.parent
    config = json.loads((directory / "config.json").read_text())
    settings = json.loads((directory / "tokenizer_config.json").read_text())
    max_length = min(int(settings.get("model_max_length", 512)), config["max_position_embeddings"])
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    tokenizer, encode, pad_id = tokenizer_encode(directory, max_length)
    session, forward = session_forward(str(path), threads)
    info = describe(reference, SimpleNamespace(**config), "onnx-int8" if quantized else "onnx-fp32")
    return LoadedModel(session, tokenizer, labels, max_length, info, forward, encode, pad_id)
