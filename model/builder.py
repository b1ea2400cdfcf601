"""Build an offline DistilBERT (real architecture, random weights) into a directory.

No model hub is reachable on the machines inferq is developed on, so tests and
benchmarks use a model built here and loaded through the very same
``from_pretrained`` calls that load a hub model. The build is deterministic:
the same size and seed give byte-identical weights and the same vocabulary.

The weights are random: the labels it gives mean nothing. Its config says so
(``inferq_offline_build``), and every job result repeats it.
"""
from __future__ import annotations

import argparse
import gzip
import logging
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)

CORPUS = Path(__file__).with_name("data") / "corpus.txt.gz"
"""Local text the WordPiece vocabulary is trained on (Python standard-library docstrings)."""

LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
"""The same labels as the SST-2 model users get from the hub."""

SIZES = {
    # A few layers and a small hidden size: loads in well under a second, for tests.
    "tiny": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=4000),
    # DistilBERT-base exactly (66M parameters): costs what the real model costs.
    "base": dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072, vocab_size=30522),
}

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_vocabulary(lines: list[str], vocab_size: int, normalizer, pre_tokenizer) -> dict[str, int]:
    """Choose a WordPiece vocabulary by counting, with every tie broken by spelling.

    The tokenizers library's WordPiece trainer breaks ties in hash-map order,
    so two runs give different vocabularies; this count is deterministic.
    The vocabulary holds the special tokens, every character (alone and as a
    ``##`` continuation, so no word is ever unknown), then the most frequent
    whole words, word-start pieces and ``##`` word-continuation pieces.
    """
    words: Counter[str] = Counter()
    for line in lines:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = sorted({c for w in words for c in w})
    pieces: Counter[str] = Counter()
    for word, count in words.items():
        pieces[word] += count
        for i in range(1, len(word)):
            if i >= 2:
                pieces[word[:i]] += count
            pieces["##" + word[i:]] += count
    vocab = SPECIAL_TOKENS + chars + ["##" + c for c in chars]
    known = set(vocab)
    for piece, _ in sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if piece not in known:
            vocab.append(piece)
            known.add(piece)
    return {token: i for i, token in enumerate(vocab)}


def train_tokenizer(vocab_size: int):
    """Build a lower-casing BERT-style WordPiece tokenizer from the local corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    vocab = wordpiece_vocabulary(lines, vocab_size, normalizer, pre_tokenizer)
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def build(size: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build the offline model of the given size into out_dir (atomically) and return it."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
    out = Path(out_dir)
    if (out / "config.json").exists():
        log.info("offline model already built at %s", out)
        return out
    shape = SIZES[size]
    wordpiece = train_tokenizer(shape["vocab_size"])
    tokenizer = DistilBertTokenizerFast(
        tokenizer_object=wordpiece,
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
        do_lower_case=True, model_max_length=512,
    )
    config = DistilBertConfig(
        **shape,
        max_position_embeddings=512,
        id2label=dict(LABELS),
        label2id={v: k for k, v in LABELS.items()},
        pad_token_id=tokenizer.pad_token_id,
    )
    # Recorded in config.json so that every result can say this is not a trained model.
    config.inferq_offline_build = {"size": size, "seed": seed, "weights": "random"}
    torch.manual_seed(seed)
    model = DistilBertForSequenceClassification(config).eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a concurrent build or a reader never
    # sees a half-written directory.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; containers run as another user
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "config.json").exists():
                raise
            log.info("another process built %s first", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("built offline %s model (%.1fM parameters) at %s", size, n_params / 1e6, out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: inferq-build-model {tiny,base} DIR."""
    parser = argparse.ArgumentParser(
        prog="inferq-build-model",
        description="Build an offline DistilBERT with random weights (for tests and benchmarks).",
    )
    parser.add_argument("size", choices=sorted(SIZES))
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = build(args.size, args.out_dir, seed=args.seed)
    print(f"offline {args.size} model (random weights) ready at {path}")
    print(f"use it with: INFERQ_MODEL={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
