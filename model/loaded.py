"""A model ready for inference, whatever runs it (torch or ONNX Runtime), and what its results say about it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BUILD_COMMAND = "inferq-build-model base ./models/base"
"""What a user without a network runs instead of downloading the hub model."""


class ModelUnavailable(RuntimeError):
    """The configured model cannot be loaded (no network, bad path, not a model)."""


@dataclass
class LoadedModel:
    """A model ready for inference, with what every result must say about it."""

    model: Any
    tokenizer: Any
    labels: list[str]
    max_length: int
    info: dict
    forward: Callable[[Any, Any], Any]
    """(input_ids, attention_mask) as int64 numpy arrays -> logits as a numpy array."""
    encode: Callable[[list[str]], list[list[int]]]
    """Texts -> token ids with special tokens, truncated to max_length, unpadded."""
    pad_id: int


def describe(reference: str, config: Any, precision: str) -> dict:
    """Say which model this is, and loudly when its weights are random."""
    offline = getattr(config, "inferq_offline_build", None)
    info = {"name": reference, "precision": precision}
    if offline:
        info["weights"] = "random"
        info["warning"] = (
            f"offline {offline.get('size')} DistilBERT with random weights: "
            "labels are meaningless, for tests and benchmarks only"
        )
    else:
        info["weights"] = "pretrained"
    return info
