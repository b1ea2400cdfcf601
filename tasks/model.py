"""Load the classification model and tokenizer a worker serves.

``transformers`` and ``torch`` are imported inside these functions, never at
module level, so that the API can import ``tasks`` without paying for them.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

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
    forward: Callable[[Any, Any], Any] = None  # type: ignore[assignment]
    """(input_ids, attention_mask) as int64 numpy arrays -> logits as a numpy array."""
    encode: Callable[[list[str]], list[list[int]]] = None  # type: ignore[assignment]
    """Texts -> token ids with special tokens, truncated to max_length, unpadded."""
    pad_id: int = 0

    def __post_init__(self):
        if self.forward is None:
            self.forward = torch_forward(self.model)
        if self.encode is None:
            tokenizer, max_length = self.tokenizer, self.max_length
            self.pad_id = tokenizer.pad_token_id or 0
            self.encode = lambda texts: tokenizer(
                texts, truncation=True, max_length=max_length, padding=False)["input_ids"]


def torch_forward(model: Any) -> Callable[[Any, Any], Any]:
    """Wrap a torch classifier as numpy in, numpy logits out."""
    import torch

    def forward(input_ids, attention_mask):
        with torch.inference_mode():
            logits = model(input_ids=torch.from_numpy(input_ids),
                           attention_mask=torch.from_numpy(attention_mask)).logits
        return logits.float().numpy()

    return forward


def resolve(reference: str, cache_dir: str) -> str:
    """Turn INFERQ_MODEL into something from_pretrained accepts, building offline models on demand."""
    if reference.startswith(OFFLINE_PREFIX):
        from inferq.tasks.model_builder import build

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
    """Load tokenizer and model through from_pretrained, in this process, at the given precision.

    precision is ``fp32`` or ``int8`` (torch), or ``onnx-fp32`` or ``onnx-int8``
    (ONNX Runtime, exported from the same weights and cached under cache_dir).
    """
    source = resolve(reference, cache_dir)
    if precision.startswith("onnx-"):
        # ONNX Runtime needs neither torch nor transformers in the worker: it stays lean.
        from inferq.tasks.onnx_model import load_onnx

        return load_onnx(reference, source, cache_dir, precision == "onnx-int8", torch_threads)
    import torch

    # One thread per worker process: N workers each using every core run
    # several times slower than N single-threaded ones.
    torch.set_num_threads(torch_threads)
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer, config = _from_pretrained(source, AutoTokenizer, AutoConfig)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    max_length = min(tokenizer.model_max_length, config.max_position_embeddings)
    info = describe(reference, config, precision)
    [model] = _from_pretrained(source, AutoModelForSequenceClassification)
    model.eval()
    if precision == "int8":
        # Dynamic quantization of the Linear layers: int8 weights, activations
        # quantized on the fly; the largest speed-up available on CPU here.
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return LoadedModel(model, tokenizer, labels, max_length, info)


def _from_pretrained(source: str, *classes: Any) -> list[Any]:
    """Call from_pretrained of each class on source; say plainly what to do when it fails."""
    try:
        return [cls.from_pretrained(source) for cls in classes]
    except (OSError, ValueError) as exc:
        if os.path.isdir(source):
            raise ModelUnavailable(f"{source} is not a loadable model directory: {exc}") from exc
        raise ModelUnavailable(
            f"cannot load model {source!r} from the Hugging Face hub or its cache "
            f"(no network?): {str(exc).splitlines()[0]}. Build the offline model with "
            f"`{BUILD_COMMAND}` and set INFERQ_MODEL=./models/base, or set INFERQ_MODEL=offline:base"
        ) from exc
