"""Serve a model with torch, fp32 or int8 (dynamic quantization), loaded through ``from_pretrained``."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from inferq.model.loaded import BUILD_COMMAND, LoadedModel, ModelUnavailable, describe


def torch_forward(model: Any) -> Callable[[Any, Any], Any]:
    """Wrap a torch classifier as numpy in, numpy logits out."""
    import torch

    def forward(input_ids, attention_mask):
        with torch.inference_mode():
            logits = model(input_ids=torch.from_numpy(input_ids),
                           attention_mask=torch.from_numpy(attention_mask)).logits
        return logits.float().numpy()

    return forward


def load_torch(reference: str, source: str, precision: str, threads: int) -> LoadedModel:
    """Load tokenizer and model from source in this process; precision is ``fp32`` or ``int8``."""
    import torch

    # One thread per worker process: N workers each using every core run
    # several times slower than N single-threaded ones.
    torch.set_num_threads(threads)
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer, config = _from_pretrained(source, AutoTokenizer, AutoConfig)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    max_length = min(tokenizer.model_max_length, config.max_position_embeddings)
    [model] = _from_pretrained(source, AutoModelForSequenceClassification)
    model.eval()
    if precision == "int8":
        # Dynamic quantization of the Linear layers: int8 weights, activations
        # quantized on the fly; the largest speed-up torch offers on CPU here.
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)

    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]

    return LoadedModel(model, tokenizer, labels, max_length, describe(reference, config, precision),
                       torch_forward(model), encode, tokenizer.pad_token_id or 0)


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
