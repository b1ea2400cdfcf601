"""Raw offline base DistilBERT on a CUDA GPU (fp32, fp16; batch 1 and 64): a reference beside the CPU paths.

Not part of inferq-bench (inferq's workers run on CPU); run ``python -m inferq.bench.gpu_raw``
on a machine with a GPU. Tokenization is inside the timed loop, as a worker would pay it.
"""
from __future__ import annotations

import time


def measure(model, tokenizer, texts: list[str], batch: int) -> float:
    """Texts per second for this batch size, after a short warm-up."""
    import torch

    with torch.inference_mode():
        for i in range(0, 64, batch):
            model(**tokenizer(texts[i:i + batch], padding=True, truncation=True, return_tensors="pt").to("cuda"))
        torch.cuda.synchronize()
        started = time.perf_counter()
        n = 256 if batch == 1 else len(texts)
        for i in range(0, n, batch):
            encoded = tokenizer(texts[i:i + batch], padding=True, truncation=True, return_tensors="pt").to("cuda")
            model(**encoded).logits.float().softmax(-1).cpu()
        torch.cuda.synchronize()
    return n / (time.perf_counter() - started)


def main() -> None:
    """Print texts/s of the base model on the GPU at two precisions and two batch sizes."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from inferq.bench.workload import texts as workload_texts
    from inferq.model.builder import build

    path = build("base", ".cache/models/offline-base")
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = workload_texts("short", 2048)  # the benchmark's own `short` workload
    print("device", torch.cuda.get_device_name(0))
    for dtype in (torch.float32, torch.float16):
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).cuda().eval()
        for batch in (1, 64):
            rate = measure(model, tokenizer, texts, batch)
            print(f"gpu {str(dtype).split('.')[-1]} batch {batch}: {rate:.1f} texts/s (tokenization included)")


if __name__ == "__main__":
    main()
