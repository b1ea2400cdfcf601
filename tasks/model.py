"""Load the classification model and tokenizer a worker serves.

``transformers`` and ``torch`` are imported inside these functions, never at
module level, so that the API can import ``tasks`` without paying for them.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OFFLINE_PREFIX = "offline:"
"""INFERQ_MODEL=offline:tiny or offline:base builds (once) and serves the offline model."""

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


def resolve(reference: str, cache_dir: str) -> str:
    """Turn INFERQ_MODEL into something from_pretrained accepts, building offline models on demand."""
    if reference.startswith(OFFLINE_PREFIX):
        from tasks.model_builder import build

        size = reference[len(OFFLINE_PREFIX):]
        return str(build(size, Path(cache_dir) / f"offline-{size}"))
    return reference


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


def load(reference: str, cache_dir: str, precision: str = "int8", torch_threads: int = 1) -> LoadedModel:
    """Load tokenizer and model through from_pretrained, in this process, at the given precision."""
    import torch

    # One thread per worker process: N workers each using every core run
    # several times slower than N single-threaded ones.
    torch.set_num_threads(torch_threads)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = resolve(reference, cache_dir)
    is_local = os.path.isdir(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source)
    except (OSError, ValueError) as exc:
        if is_local:
            raise ModelUnavailable(f"{source} is not a loadable model directory: {exc}") from exc
        raise ModelUnavailable(
            f"cannot load model {source!r} from the Hugging Face hub or its cache "
            f"(no network?): {str(exc).splitlines()[0]}. Build the offline model with "
            f"`{BUILD_COMMAND}` and set INFERQ_MODEL=./models/base, or set INFERQ_MODEL=offline:base"
        ) from exc
    model.eval()
    if precision == "int8":
        # Dynamic quantization of the Linear layers: int8 weights, activations
        # quantized on the fly; the largest speed-up available on CPU here.
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    return LoadedModel(model, tokenizer, labels, max_length, describe(reference, model.config, precision))
