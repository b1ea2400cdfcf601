"""Classify texts with a loaded model: a plain function, testable without a broker."""
from __future__ import annotations

from typing import Sequence

from tasks.model import LoadedModel

MAX_BATCH = 16
"""Texts per forward pass: past this, padding and attention cost more than batching saves on CPU."""


def length_sorted_batches(lengths: Sequence[int], max_batch: int) -> list[list[int]]:
    """Group indices into batches of similar length, so dynamic padding pads little."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + max_batch] for i in range(0, len(order), max_batch)]


def classify(loaded: LoadedModel, texts: Sequence[str], max_batch: int = MAX_BATCH) -> list[dict]:
    """Return, in input order, each text's label and class probabilities (summing to 1)."""
    import torch

    if not texts:
        return []
    # Tokenize once without padding to learn lengths; texts past the model's
    # limit are truncated, not rejected.
    encoded = loaded.tokenizer(
        list(texts), truncation=True, max_length=loaded.max_length, padding=False
    )["input_ids"]
    results: list[dict | None] = [None] * len(texts)
    for batch in length_sorted_batches([len(ids) for ids in encoded], max_batch):
        padded = loaded.tokenizer.pad(
            {"input_ids": [encoded[i] for i in batch]}, padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            logits = loaded.model(
                input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]
            ).logits
        probabilities = torch.softmax(logits.float(), dim=-1).tolist()
        for index, probs in zip(batch, probabilities):
            best = max(range(len(probs)), key=probs.__getitem__)
            results[index] = {
                "label": loaded.labels[best],
                "probabilities": dict(zip(loaded.labels, probs)),
            }
    return results  # type: ignore[return-value]
