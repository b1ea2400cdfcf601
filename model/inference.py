"""Classify texts with a loaded model: a plain function, testable without a broker."""
from __future__ import annotations

from collections.abc import Sequence

from inferq.contract import TextResult
from inferq.model.loaded import LoadedModel

MAX_BATCH = 16
"""Texts per forward pass: past this, padding and attention cost more than batching saves on CPU."""


MAX_PADDING = 0.25
"""Padding a batch may add, as a share of its real tokens: past it, padding costs more than batching saves."""


def length_sorted_batches(lengths: Sequence[int], max_batch: int,
                          max_padding: float | None = None) -> list[list[int]]:
    """Group indices into batches of similar length, so dynamic padding pads little.

    With max_padding, a batch also closes before a text whose length would make
    the batch's padded tokens exceed its real tokens by more than that share.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    real = 0
    for i in order:
        # Sorted ascending: the new text is the longest, so it sets the padded width.
        too_padded = max_padding is not None and batch and (
            (len(batch) + 1) * lengths[i] > (1 + max_padding) * (real + lengths[i]))
        if len(batch) == max_batch or too_padded:
            batches.append(batch)
            batch, real = [], 0
        batch.append(i)
        real += lengths[i]
    if batch:
        batches.append(batch)
    return batches


def softmax(logits):
    """Row-wise softmax of a numpy array, stable for large logits."""
    import numpy as np

    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def classify(loaded: LoadedModel, texts: Sequence[str], max_batch: int = MAX_BATCH) -> list[TextResult]:
    """Return, in input order, each text's label and class probabilities (summing to 1)."""
    import numpy as np

    if not texts:
        return []
    # Tokenize once without padding to learn lengths; texts past the model's
    # limit are truncated, not rejected.
    encoded = loaded.encode(list(texts))
    results: list[TextResult | None] = [None] * len(texts)
    for batch in length_sorted_batches([len(ids) for ids in encoded], max_batch, MAX_PADDING):
        width = max(len(encoded[i]) for i in batch)
        input_ids = np.full((len(batch), width), loaded.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, i in enumerate(batch):
            input_ids[row, :len(encoded[i])] = encoded[i]
            attention_mask[row, :len(encoded[i])] = 1
        logits = loaded.forward(input_ids, attention_mask)
        probabilities = softmax(logits.astype(np.float64)).tolist()
        for index, probs in zip(batch, probabilities):
            best = max(range(len(probs)), key=probs.__getitem__)
            results[index] = {
                "label": loaded.labels[best],
                "probabilities": dict(zip(loaded.labels, probs)),
            }
    return results  # type: ignore[return-value]


def classify_jobs(loaded: LoadedModel, jobs: Sequence[Sequence[str]],
                  max_batch: int = MAX_BATCH) -> list[list[TextResult]]:
    """Classify several jobs' texts in shared forward passes; return each job's results, in order."""
    flat = [text for texts in jobs for text in texts]
    results = classify(loaded, flat, max_batch)
    out, start = [], 0
    for texts in jobs:
        out.append(results[start:start + len(texts)])
        start += len(texts)
    return out
