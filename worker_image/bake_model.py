"""Put the worker's model into the image at build time: ``bake_model.py SOURCE DIR``.

SOURCE is a Hugging Face hub id (downloaded once, while the image builds) or
``offline:base`` / ``offline:tiny`` (the offline DistilBERT with random
weights, for a build machine without a network). Either way DIR ends up a
directory that ``from_pretrained`` loads, so the running container never
needs the network.
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Save SOURCE's tokenizer and model into DIR."""
    source, out_dir = argv
    if source.startswith("offline:"):
        from inferq.tasks.model_builder import build

        build(source.partition(":")[2], out_dir)
        return 0
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    AutoTokenizer.from_pretrained(source).save_pretrained(out_dir)
    AutoModelForSequenceClassification.from_pretrained(source).save_pretrained(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
